"""Benchmark: ``ainode rules replay`` over 10,000 stored studies (issue 22 section 4).

A real SQLite index (the node's schema) is filled the way ingest fills it (``Index.commit``,
group commits): each study has 3 series (a chest CT or a head CT or a chest DX, plus a
localizer and an SR), headers are real DICOM JSON headers of sample files with new UIDs, and
the received times are spread over the last 7 days.  95 % of the studies carry a routing
record written by the real ``JobStore`` (the shipped rules' decisions and explanation, as
the live router records them), the others (not routed yet) are evaluated with the active
rules too.  The candidate rules are the shipped rules plus two
head CT models and the chest radiograph rule turned into ``ignore``.

Timed: ``node.routing.replay.replay`` (read every header in one query, evaluate both rule
sets, diff) and ``Replay.to_json`` (the per-study JSON, as the API answers): wall time, and
the process's CPU time (what an idle core needs; the development box is shared).  Target:
<= 10 s.

Run:  PYTHONPATH=. python bench/replay.py [--studies 10000]
"""

from __future__ import annotations

import argparse
import copy
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import dicom_rules

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402

from node.imaging.dicom_json import header_from_file  # noqa: E402
from node.jobs.store import JobStore  # noqa: E402
from node.routing import DEFAULT_RULES  # noqa: E402
from node.routing.dispatch import routing_record, series_inputs  # noqa: E402
from node.routing.replay import PARALLEL_MIN, default_workers, replay  # noqa: E402
from node.samples import write_ct_series, write_projection  # noqa: E402
from node.store.index import Index, IngestRecord  # noqa: E402
from node.types import Instance  # noqa: E402

NEW_RULES = (
    DEFAULT_RULES.read_text(encoding="utf-8").replace(
        """    then:
      model: cxr-classify
    stop: true""",
        """    then: ignore""",
    )
    + """
  - name: head-ct-bleed
    priority: 100
    when: {Modality: CT, body_part: HEAD}
    then:
      - {model: head-ct-bleed}
      - {model: head-ct-midline}
"""
)

_UID = {"0020000D", "0020000E", "00080018"}


def _templates(tmp: Path) -> list[dict[str, Any]]:
    yy, xx = np.mgrid[-8:8, -8:8]
    disk = np.where(yy**2 + xx**2 < 36, 40.0, -1000.0)
    chest = write_ct_series(np.stack([disk] * 2), spacing=(1, 1, 1), out_dir=tmp / "c")[0]
    head = write_ct_series(
        np.stack([disk] * 2), spacing=(1, 1, 1), out_dir=tmp / "h", body_part="HEAD"
    )[0]
    dx = write_projection(np.abs(xx + yy).astype(float), out_dir=tmp / "d")
    loc = copy.deepcopy(header_from_file(chest))
    loc["0008103E"] = {"vr": "LO", "Value": ["Localizer"]}
    sr = copy.deepcopy(header_from_file(chest))
    sr["00080060"] = {"vr": "CS", "Value": ["SR"]}
    return [header_from_file(chest), header_from_file(head), header_from_file(dx), loc, sr]


def fill(db: Path, n: int, now: float) -> None:
    templates = _templates(db.parent)
    index = Index(db)
    jobs = JobStore(db)
    rules = dicom_rules.load(DEFAULT_RULES)
    batch: list[IngestRecord] = []
    routed: list[str] = []
    for i in range(n):
        study = f"2.25.{10**12 + i}"
        received = now - (i / n) * 7 * 86400
        main = templates[i % 3]
        for j, header in enumerate((main, templates[3], templates[4])):
            series = f"{study}.{j}"
            h = {k: v for k, v in header.items() if k not in _UID}
            h["0020000D"] = {"vr": "UI", "Value": [study]}
            h["0020000E"] = {"vr": "UI", "Value": [series]}
            modality = h.get("00080060", {}).get("Value", [None])[0]
            batch.append(
                IngestRecord(
                    Instance(
                        study_uid=study,
                        series_uid=series,
                        sop_uid=f"{series}.1",
                        sop_class_uid="1.2.840.10008.5.1.4.1.1.2",
                        transfer_syntax_uid="1.2.840.10008.1.2.1",
                        path=db.parent / "instances" / f"{series}.dcm",  # never opened
                        size_bytes=1000,
                        sha256="0" * 64,
                        modality=modality,
                    ),
                    "stored",
                    "0" * 64,
                    "bench",
                    received,
                    series_header=h,
                )
            )
        if i % 20 != 0:  # 95 % were routed; the others are still open (no record yet)
            routed.append(study)
        if len(batch) >= 3000:
            index.commit(batch)
            batch = []
    index.commit(batch)
    for uid in routed:
        study_obj = index.get_study(uid)
        assert study_obj is not None
        decisions = dicom_rules.route(rules, series_inputs(study_obj), destinations=["pacs"])
        jobs.record_routing(
            uid,
            1,
            rules_sha256="bench",
            # as the live router records it: the whole explanation, not-applicable list
            decisions=routing_record(decisions, [], {}),
        )
    index.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--studies", type=int, default=10_000)
    ap.add_argument("--workers", type=int, default=default_workers())
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        db = Path(tmp) / "index.sqlite"
        now = time.time()
        t0 = time.perf_counter()
        fill(db, args.studies, now)
        fill_s = time.perf_counter() - t0
        index = Index(db)
        jobs = JobStore(db)
        active = dicom_rules.load(DEFAULT_RULES)
        candidate = dicom_rules.parse(NEW_RULES)
        load_before = os.getloadavg()
        t0 = time.perf_counter()
        c0 = os.times()
        result = replay(
            index,
            candidate,
            since=now - 8 * 86400,
            until=now + 1,
            current_rules=active,
            stored_many=jobs.routing_decisions_many,
            destinations=["pacs"],
            workers=args.workers,
        )
        replay_s = time.perf_counter() - t0
        out = result.to_json(changed_only=False)
        total_s = time.perf_counter() - t0
        c1 = os.times()
        cpu_s = sum(getattr(c1, k) - getattr(c0, k) for k in ("user", "system"))
        child_s = sum(getattr(c1, k) - getattr(c0, k) for k in ("children_user", "children_system"))
        load_after = os.getloadavg()
        index.close()
    t = out["totals"]
    assert t["studies"] == args.studies, t
    used = args.workers if args.studies >= PARALLEL_MIN else 1
    print(f"filled {args.studies} studies ({3 * args.studies} series) in {fill_s:.1f} s")
    print(
        f"replay: {replay_s:.2f} s; with the JSON of every study: {total_s:.2f} s "
        f"(target <= 10 s) -> {'OK' if total_s <= 10 else 'OVER'}; "
        f"CPU {cpu_s:.2f} s here + {child_s:.2f} s in worker processes ({used} process(es) "
        f"routed; workers from {PARALLEL_MIN} studies)"
    )
    print(
        f"totals: changed {t['changed']}, runs {t['current_runs']} -> {t['new_runs']} "
        f"({t['extra_runs']:+d}, {t['extra_runs_per_day']:+} per day over {t['days']} days)"
    )
    print(
        f"load average (1 min) before {load_before[0]:.2f}, after {load_after[0]:.2f}; "
        f"{os.cpu_count()} CPUs"
    )


if __name__ == "__main__":
    main()
