"""Real PACS traffic: every file of the corpus through a real node with the shipped rules.

storescu sends each file in its own transfer syntax; the node stores, completes, routes with
``node/routing/default_rules.yaml`` (the same rules as ``deploy/rules.example.yaml``) and runs
the built-in models.  Afterwards:

* no job ends ``dead`` or ``failed`` for a reason the router could have known from the headers
  (modality, dimensions, geometry, localizer): those are "not applicable" records instead;
* every stored image series has an outcome: a result, or a "not applicable" reason (also when no
  rule sends it to a model: ``no_rule`` / ``no_model``; and when a named rule ignores it on
  purpose: ``localizer`` / ``ignored``); only non-image objects are left with just the named
  rule that ignores them (never only the fallback);
* the test prints the table of jobs per final state.
"""

from __future__ import annotations

import html
import json
import re
import sqlite3
import warnings
from collections import Counter
from pathlib import Path

import httpx
import pydicom
import pytest

from node.jobs.store import JobStore
from node.types import JobState
from tests.peers.dcmtk import storescu, storescu_config
from tests.peers.node import start_node
from tests.util import wait_until

TOKEN = "corpus-traffic-token"
_FINAL = (JobState.SUCCEEDED, JobState.FAILED, JobState.DEAD, JobState.CANCELLED)
_KNOWABLE = ("modality", "model takes", "slices", "duplicate slice", "mixed orientation",
             "non-uniform", "missing slices", "localizer", "plane positions")  # fmt: skip


def _corpus_files(corpus: Path) -> list[tuple[Path, str, str]]:
    out = []
    for p in sorted(corpus.rglob("*")):
        if not p.is_file() or p.suffix in (".md", ".csv", ".txt") or "LICENSES" in p.parts:
            continue
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                ds = pydicom.dcmread(p, stop_before_pixels=True)
                sop_class = str(ds.file_meta.MediaStorageSOPClassUID)
                ts = str(ds.file_meta.TransferSyntaxUID)
            except Exception:  # noqa: BLE001 - storescu cannot send what has no file meta
                continue
        out.append((p, sop_class, ts))
    return out


@pytest.mark.slow
def test_every_corpus_series_gets_a_result_or_a_reason(tmp_path: Path, corpus: Path) -> None:
    files = _corpus_files(corpus)
    with start_node(
        tmp_path / "node",
        auth={"token": TOKEN},
        study={"stable_seconds": 1},
        destinations={"archive": {"type": "folder", "path": str(tmp_path / "archive")}},
    ) as node:
        extra = storescu_config(tmp_path, [(c, t) for _, c, t in files])
        sent = storescu(node.dicom_port, [p for p, _, _ in files], extra=extra, timeout=600)
        assert sent.acknowledged, sent.output[-3000:]
        store = JobStore(node.data_dir / "index.sqlite")
        index = node.data_dir / "index.sqlite"

        def studies() -> list[str]:
            with sqlite3.connect(index) as conn:
                return [r[0] for r in conn.execute("SELECT study_uid FROM studies")]

        def all_routed() -> bool:
            uids = studies()
            return bool(uids) and all(store.routed_generation(u) >= 1 for u in uids)

        wait_until(all_routed, timeout=300, what="every study routed")

        def jobs_final() -> bool:
            return all(j.state in _FINAL for j in store.list_jobs())

        wait_until(jobs_final, timeout=900, what="every job finished")
        jobs = store.list_jobs()
        table = Counter(j.state.value for j in jobs)
        print("\njobs per final state:")
        for state in JobState:
            print(f"  {state.value:10s} {table.get(state.value, 0)}")
        for j in jobs:
            print(
                f"  {j.state.value:10s} {j.job.model:22s} {j.job.rule:24s} {j.reason or ''}"[:160]
            )

        # 1. nothing the router could have known ends dead or failed
        bad = [
            (j.job.model, j.reason)
            for j in jobs
            if j.state is JobState.DEAD
            or (j.state is JobState.FAILED and not (j.reason or "").startswith("input:"))
            or (j.state is JobState.FAILED and any(k in (j.reason or "") for k in _KNOWABLE))
        ]
        assert bad == [], bad

        # 2. every stored image series has an outcome
        outcomes: dict[str, str] = {}
        with sqlite3.connect(index) as conn:
            series_rows = list(conn.execute("SELECT DISTINCT study_uid, series_uid FROM instances"))
        for study_uid, series_uid in series_rows:
            routing = store.routing(study_uid)
            assert routing is not None
            record = routing["decisions"]
            na = [n for n in record.get("not_applicable", []) if n["series_uid"] == series_uid]
            decided = [d for d in record["decisions"] if series_uid in d["series_uids"]]
            done = [j for j in jobs if series_uid in j.job.series_uids and j.state in _FINAL]
            if any(j.state is JobState.SUCCEEDED for j in done):
                outcomes[series_uid] = "result"
            elif na:
                outcomes[series_uid] = "not applicable: " + na[0]["reason"]
            elif done:
                outcomes[series_uid] = f"{done[0].state.value}: {done[0].reason}"
            elif decided and all(d["ignored"] or d["model"] is None for d in decided):
                # on purpose: non-image objects, or no model for this kind of series
                outcomes[series_uid] = "ignored by rule " + decided[0]["rule"]
            else:
                outcomes[series_uid] = "NO OUTCOME"
        with sqlite3.connect(index) as conn:
            modality = dict(conn.execute("SELECT series_uid, modality FROM series"))
        print("series outcomes:")
        for k, n in sorted(Counter(outcomes.values()).items()):
            print(f"  {n:3d}  {k}")
        print("series outcomes by modality:")
        for (mod, k), n in sorted(
            Counter((modality.get(u) or "?", o) for u, o in outcomes.items()).items()
        ):
            print(f"  {mod:6s} {n:3d}  {k}")
        print(json.dumps(table, sort_keys=True))
        assert "NO OUTCOME" not in outcomes.values(), outcomes
        # an image series that no rule sends to a model carries a reason, not the fallback's
        # name: only non-image objects and localizers are ignored on purpose by a named rule
        fallback_only = {u: modality.get(u) for u, o in outcomes.items() if "no-model-applies" in o}
        assert fallback_only == {}, fallback_only
        ignored_rules = {o for o in outcomes.values() if o.startswith("ignored by rule")}
        assert ignored_rules <= {"ignored by rule ignore-non-images"}, ignored_rules
        # image objects the shipped rules ignore on purpose say so as a reason (the corpus's
        # Secondary Capture XA and NM among them)
        ignored_images = {modality.get(u) for u, o in outcomes.items() if o.endswith(": ignored")}
        assert {"XA", "NM"} <= ignored_images, outcomes
        # MR, PET, US and XA images reach no model with the shipped rules: each says why
        # (XA1_JPLY and NM1_JLSL are Secondary Capture objects: "not applicable: ignored" by
        # ignore-non-images)
        for mod in ("MR", "PT", "US", "XA"):
            mod_outcomes = {o for u, o in outcomes.items() if modality.get(u) == mod}
            assert "not applicable: no_model" in mod_outcomes, (mod, mod_outcomes)
        # MR never reaches a CT-only model; single slices never reach a 3D model
        ct_only = {"ct-denoise", "lung-nodule-seg", "lung-nodule-detect", "lung-nodule-classify"}
        wrong = [
            (j.job.model, modality.get(j.job.series_uids[0]))
            for j in jobs
            if j.job.model in ct_only and modality.get(j.job.series_uids[0]) != "CT"
        ]
        assert wrong == []
        assert table.get("succeeded", 0) >= 5  # the chest CT's four models and more

        # 3. "not applicable" is visible: metric, API, console study page
        metrics = httpx.get(f"{node.url}/metrics", timeout=30).text
        assert 'ainode_series_not_applicable_total{reason="dimensions"}' in metrics
        na_study = next(
            uid
            for uid in studies()
            if any(
                n["reason"] == "dimensions"
                for n in (store.routing(uid) or {})["decisions"].get("not_applicable", [])
            )
        )
        auth = {"Authorization": f"Bearer {TOKEN}"}
        api = httpx.get(f"{node.url}/api/studies/{na_study}", headers=auth, timeout=30).json()
        listed = api["routing"]["decisions"]["not_applicable"]
        assert {n["reason"] for n in listed} == {"dimensions"}
        with httpx.Client(base_url=node.url, timeout=30) as c:
            login = c.get("/console/login").text
            m = re.search(r'name="csrf" value="([0-9a-f]{64})"', login)
            assert m is not None
            c.post("/console/login", data={"token": TOKEN, "csrf": m.group(1)})
            page = c.get(f"/console/studies/{na_study}").text
        assert 'id="not-applicable"' in page and "volume is 2D (1 slice)" in page

        # 4. an MR study: no rule sends it to a model, and no installed model reads MR; the
        # record, the metric, the API's dry run and the console's dry run all say so
        assert 'ainode_series_not_applicable_total{reason="no_model"}' in metrics
        mr_series = next(u for u, o in outcomes.items() if modality.get(u) == "MR")
        mr_study = next(s for s, u in series_rows if u == mr_series)
        recorded = [
            n
            for n in (store.routing(mr_study) or {})["decisions"]["not_applicable"]
            if n["series_uid"] == mr_series
        ]
        assert [(n["rule"], n["model"], n["reason"]) for n in recorded] == [
            ("no-model-applies", None, "no_model")
        ]
        assert recorded[0]["detail"].startswith("no model accepts modality 'MR'")
        dry = httpx.post(
            f"{node.url}/api/rules/dry-run", headers=auth, json={"study_uid": mr_study}, timeout=60
        ).json()
        assert [
            (n["series_uid"], n["reason"], n["detail"])
            for n in dry["not_applicable"]
            if n["series_uid"] == mr_series
        ] == [(mr_series, "no_model", recorded[0]["detail"])]
        with httpx.Client(base_url=node.url, timeout=60) as c:
            m = re.search(r'name="csrf" value="([0-9a-f]{64})"', c.get("/console/login").text)
            assert m is not None
            c.post("/console/login", data={"token": TOKEN, "csrf": m.group(1)})
            rules_page = c.get("/console/rules").text
            m = re.search(r'name="csrf" value="([0-9a-f]{64})"', rules_page)
            text = re.search(r"<textarea[^>]*>(.*?)</textarea>", rules_page, re.S)
            assert m is not None and text is not None
            page = c.post(
                "/console/rules",
                data={
                    "csrf": m.group(1),
                    "text": html.unescape(text.group(1)),
                    "action": "dry-run",
                    "study_uid": mr_study,
                },
            ).text
        assert 'id="dry-run-not-applicable"' in page, page[-2000:]
        assert mr_series in page and "no model accepts modality &#39;MR&#39;" in page
