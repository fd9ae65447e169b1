"""Benchmark: fetching the prior study for a rule's ``priors``, per retrieval method.

A real Orthanc holds, per method, a patient with a prior chest CT (``--slices`` slices of
``--size`` x ``--size``), a newer abdomen CT (another body part, passed over) and an older copy
of the prior chest CT (other UIDs; never chosen).  An in-process node (``node.app.Node``)
routes the patient's current chest CT with a rule ``priors: {from: METHOD}``.  The figure is
the time from the study's completion to its job's prior being stored (``fetched``): study and
series queries, matching, retrieval of one series, indexing.  The reference, in the same run,
is the node's plain pull (``POST /api/pull``'s ``PullRunner``) of the older copy by Study
Instance UID: the ratio is what the priors path adds to a retrieval of the same size.

Prints figures; asserts nothing.  Run:  PYTHONPATH=. python bench/priors.py [--slices 100]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np
import pydicom
from pydicom.uid import generate_uid

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from node.app import Node  # noqa: E402
from node.ingest.pull import PullQuery  # noqa: E402
from node.samples.writers import write_ct_series  # noqa: E402
from node.types import PriorState  # noqa: E402
from tests.peers.orthanc import start_orthanc  # noqa: E402
from tests.pull.priors_site import priors_config  # noqa: E402
from tests.util import free_port, wait_until  # noqa: E402

METHODS = ("move", "get", "web")


def write_study(
    out: Path,
    *,
    patient_id: str,
    date: str,
    body_part: str,
    description: str,
    slices: int,
    size: int,
) -> list[Path]:
    files = write_ct_series(
        np.full((slices, size, size), -700.0),
        spacing=(2.5, 0.8, 0.8),
        out_dir=out,
        study_uid=generate_uid(),
        series_uid=generate_uid(),
        study_description=description,
        series_description=f"{body_part.title()} 2.5mm",
        body_part=body_part,
    )
    for f in files:
        ds = pydicom.dcmread(f)
        ds.PatientID = patient_id
        ds.StudyDate = ds.SeriesDate = date
        ds.save_as(f)
    return files


def study_uid_of(files: list[Path]) -> str:
    return str(pydicom.dcmread(files[0], stop_before_pixels=True).StudyInstanceUID)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--slices", type=int, default=100)
    ap.add_argument("--size", type=int, default=256)
    args = ap.parse_args()
    print(f"load average: {os.getloadavg()}")
    with tempfile.TemporaryDirectory(prefix="bench-priors-") as tmp_name:
        tmp = Path(tmp_name)
        node_port = free_port()
        rules = tmp / "rules.yaml"
        rules.write_text(
            "version: 1\nrules:\n"
            + "".join(
                f"  - name: via-{m}\n    when: {{StudyDescription: {{contains: current-{m}}}}}\n"
                f"    then: {{model: bench-probe}}\n    priors: {{from: {m}, within_days: 1095}}\n"
                for m in METHODS
            )
        )
        with start_orthanc(
            tmp / "orthanc", modalities={"ainode": ("AINODE", "127.0.0.1", node_port)}
        ) as orthanc:
            refs: dict[str, str] = {}
            for m in METHODS:
                pid = f"BENCH-{m}"
                kw = {"patient_id": pid, "slices": args.slices, "size": args.size}
                prior = write_study(
                    tmp / m / "prior", date="20240301", body_part="CHEST", description="prior", **kw
                )
                ref = write_study(
                    tmp / m / "ref", date="20230101", body_part="CHEST", description="ref", **kw
                )
                abd = write_study(
                    tmp / m / "abd", date="20250601", body_part="ABDOMEN", description="abd", **kw
                )
                refs[m] = study_uid_of(ref)
                for f in [*prior, *ref, *abd]:
                    httpx.post(
                        f"{orthanc.url}/instances", content=f.read_bytes(), timeout=60
                    ).raise_for_status()
            config = priors_config(
                tmp,
                node_port=node_port,
                rules=rules,
                orthanc=orthanc,
                priors={"timeout_seconds": 600},
            )
            node = Node(config, serve_http=False)
            node.start()
            try:
                # warm-up: the first routing waits for the models to be described
                warm = write_study(
                    tmp / "warm", patient_id="BENCH-none", date="20260110", body_part="CHEST",
                    description="current-move", slices=2, size=16,
                )  # fmt: skip
                for f in warm:
                    node.spool.store(f.read_bytes(), calling_aet="BENCH", source="bench")
                node.tracker.complete(study_uid_of(warm))
                size = f"{args.size}x{args.size}"
                print(f"series: {args.slices} CT slices of {size}, Orthanc on loopback")
                for m in METHODS:
                    cur = write_study(
                        tmp / m / "cur", patient_id=f"BENCH-{m}", date="20260110",
                        body_part="CHEST", description=f"current-{m}", slices=2, size=16,
                    )  # fmt: skip
                    for f in cur:
                        node.spool.store(f.read_bytes(), calling_aet="BENCH", source="bench")
                    uid = study_uid_of(cur)
                    t0 = time.perf_counter()
                    node.tracker.complete(uid)

                    def fetched(uid: str = uid) -> bool:
                        jobs = node.jobs.list_jobs(study_uid=uid)
                        p = jobs[0].job.prior if jobs else None
                        return p is not None and p.state is not PriorState.WAITING

                    wait_until(fetched, timeout=600, what=f"prior via {m}")
                    t_prior = time.perf_counter() - t0
                    prior = node.jobs.list_jobs(study_uid=uid)[0].job.prior
                    assert prior is not None
                    t1 = time.perf_counter()
                    rec = node.pulls.submit(m, PullQuery(study_uid=refs[m]))
                    wait_until(lambda r=rec.id: node.pulls.get(r).is_finished, timeout=600)
                    t_pull = time.perf_counter() - t1
                    done = node.pulls.get(rec.id)
                    print(
                        f"{m:5s} prior {prior.state.value}: {t_prior:6.2f} s | plain pull "
                        f"({done.state.value}, {done.received} inst.): {t_pull:6.2f} s | "
                        f"ratio {t_prior / t_pull:4.2f}"
                    )
            finally:
                node.stop()
    print(f"load average: {os.getloadavg()}")


if __name__ == "__main__":
    main()
