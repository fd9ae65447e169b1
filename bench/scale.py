"""Benchmark: the Celery + Redis path (node + ``ainode worker``) against the embedded engine.

* per-job overhead: the same job (same model, same study) run again ``--repeats`` times with
  ``POST /api/jobs/{id}/retry``, queued -> succeeded latency, embedded engine vs one remote
  worker (which fetches over WADO-RS and posts its results back); the difference is the cost of
  the distributed path;
* throughput: ``--studies`` studies sent at once, studies/hour with 1 and with 2 workers;
* input fetch of a ``--slices``-instance CT series (real CT from the corpus, new UIDs per
  slice): WADO-RS from the node (``node.jobs.remote.fetch_series``) vs reading the node's files
  directly (what a worker with ``celery.shared_data_dir`` does).

Prints figures; asserts nothing.  Every process runs on this machine, so "2 workers" share its
cores with the node and with each other.

Usage: ``PYTHONPATH=. python bench/scale.py [--repeats 5] [--studies 8] [--slices 300]``
"""

from __future__ import annotations

import argparse
import contextlib
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pydicom
from pydicom.uid import generate_uid

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from node.app import Node  # noqa: E402
from node.config import Config, NodeConfig, StudyConfig  # noqa: E402
from node.jobs.remote import fetch_series  # noqa: E402
from tests.peers.dcmtk import tool  # noqa: E402
from tests.peers.node import NodeProcess, start_node  # noqa: E402
from tests.peers.redis import start_redis  # noqa: E402
from tests.scale.cluster import db_rows, node_settings, studies, worker  # noqa: E402
from tests.util import wait_until  # noqa: E402

CHEST = "ct/chest-ct-siemens-sensation10-b40f-30sl"
TOKEN = "s3cret"


def send(port: int, files: list[Path]) -> None:
    subprocess.run(
        [tool("storescu"), "-nh", "-aet", "BENCH", "-aec", "AINODE", "127.0.0.1", str(port),
         *map(str, files)],
        check=True, capture_output=True, timeout=600,
        env={"TCP_NODELAY": "1", "PATH": "/usr/bin:/bin"},
    )  # fmt: skip


def all_done(node: NodeProcess, n: int) -> bool:
    rows = db_rows(node.data_dir, "SELECT state FROM jobs")
    return len(rows) >= n and all(r[0] in ("succeeded", "dead") for r in rows)


def latencies(node: NodeProcess, job_id: str) -> list[float]:
    """queued -> succeeded seconds of every run of ``job_id``."""
    rows = db_rows(
        node.data_dir, "SELECT ts, state FROM job_events WHERE job_id=? ORDER BY id", (job_id,)
    )
    out, queued = [], None
    for ts, state in rows:
        if state == "queued":
            queued = ts
        elif state == "succeeded" and queued is not None:
            out.append(ts - queued)
            queued = None
    return out


@contextlib.contextmanager
def cluster(work: Path, *, workers: int, embedded: bool) -> Iterator[NodeProcess]:
    with start_redis(work / "redis") as redis:
        settings = node_settings(work, "embedded" if embedded else redis.url)
        settings["inference"] = {"job_timeout_seconds": 300, "torch_threads": 1}
        settings["models"] = [str(work / "models")]
        settings["celery"] = {"visibility_timeout_seconds": 360}
        with start_node(work / "node", **settings) as node:
            procs = [
                worker(
                    work / f"worker{i}",
                    broker=redis.url,
                    node_url=node.url,
                    models=work / "models",
                    visibility_timeout_seconds=360,
                )
                for i in range(0 if embedded else workers)
            ]
            try:
                for p in procs:
                    p.launch()
                for p in procs:
                    p.wait_ready(600)
                yield node
            finally:
                for p in procs:
                    p.stop()


def per_job(work: Path, *, embedded: bool, repeats: int) -> tuple[list[float], list[float]]:
    """(latencies, model seconds) of one job run ``repeats`` + 1 times (first run excluded)."""
    files = studies(work / "in", 1, slices=16, size=64)[0]
    with cluster(work, workers=1, embedded=embedded) as node:
        send(node.dicom_port, files)
        wait_until(lambda: all_done(node, 1), timeout=600, what="first run")
        states = db_rows(node.data_dir, "SELECT state, reason FROM jobs")
        assert states[0][0] == "succeeded", states
        (job_id,) = [r[0] for r in db_rows(node.data_dir, "SELECT job_id FROM jobs")]
        http = httpx.Client(base_url=node.url, headers={"Authorization": f"Bearer {TOKEN}"})
        model: list[float] = []
        for n in range(repeats):
            http.post(f"/api/jobs/{job_id}/retry").raise_for_status()
            wait_until(lambda n=n: len(latencies(node, job_id)) >= n + 2, timeout=600, what="rerun")
            t = http.get(f"/api/jobs/{job_id}").json()["outputs"]["timings_seconds"]
            model.append(float(t.get("model", 0.0)))
        return latencies(node, job_id)[1:], model


def throughput(work: Path, *, workers: int, count: int) -> float:
    """Studies per hour: ``count`` studies sent at once, first queued -> last succeeded."""
    files = [f for s in studies(work / "in", count, slices=16, size=64) for f in s]
    with cluster(work, workers=workers, embedded=False) as node:
        send(node.dicom_port, files)
        wait_until(lambda: all_done(node, count), timeout=3600, what="all jobs")
        (first, last) = db_rows(
            node.data_dir,
            "SELECT MIN(ts), MAX(ts) FROM job_events WHERE state IN ('queued','succeeded')",
        )[0]
        return count / (last - first) * 3600.0


def big_series(corpus: Path, n: int, out: Path) -> list[Path]:
    src = sorted((corpus / CHEST).glob("*.dcm"))
    out.mkdir(parents=True)
    series_uid = generate_uid()
    paths = []
    for i in range(n):
        ds = pydicom.dcmread(src[i % len(src)])
        ds.SeriesInstanceUID = series_uid
        ds.SOPInstanceUID = generate_uid()
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        ds.InstanceNumber = i + 1
        p = out / f"{i:04d}.dcm"
        ds.save_as(p, enforce_file_format=True)
        paths.append(p)
    return paths


def fetch(
    work: Path, corpus: Path, slices: int, repeats: int
) -> tuple[list[float], list[float], int]:
    """(WADO-RS seconds, shared-disk read seconds, bytes) for one series of ``slices``."""
    files = big_series(corpus, slices, work / "ct")
    from node.config import AuthConfig

    node = Node(
        Config(
            auth=AuthConfig(token=TOKEN),
            node=NodeConfig(data_dir=work / "data", dicom_port=0, http_port=0, min_free_bytes=0),
            study=StudyConfig(stable_seconds=3600),
        )
    )
    node.start()
    try:
        for f in files:
            node.spool.store(f.read_bytes(), calling_aet=None, source="stow")
        first = pydicom.dcmread(files[0], stop_before_pixels=True)
        study, series = str(first.StudyInstanceUID), str(first.SeriesInstanceUID)
        wado, disk = [], []
        size = 0
        for n in range(repeats):
            t = time.perf_counter()
            got = fetch_series(
                node_url=f"http://127.0.0.1:{node.http_port}",
                token=TOKEN,
                study_uid=study,
                series_uid=series,
                out_dir=work / f"fetch{n}",
            )
            wado.append(time.perf_counter() - t)
            assert len(got) == slices
            t = time.perf_counter()
            size = sum(len(i.path.read_bytes()) for i in node.index.series_instances(series))
            disk.append(time.perf_counter() - t)
        return wado, disk, size
    finally:
        node.stop()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--studies", type=int, default=8)
    ap.add_argument("--slices", type=int, default=300)
    ap.add_argument("--corpus", type=Path, default=ROOT / "tests" / "corpus")
    ap.add_argument("--skip", default="", help="comma list of: overhead,throughput,fetch")
    args = ap.parse_args()
    # SIGTERM unwinds the context managers, so no node, worker or redis-server is left behind
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))
    skip = set(args.skip.split(","))
    with tempfile.TemporaryDirectory(prefix="bench-scale-") as tmp:
        work = Path(tmp)
        if "fetch" not in skip:
            wado, disk, size = fetch(work / "fetch", args.corpus, args.slices, 3)
            w, d = statistics.median(wado), statistics.median(disk)
            print(f"input fetch, {args.slices}-slice CT ({size / 2**20:.1f} MiB), median of 3:")
            print(f"  WADO-RS from the node: {w:.2f} s ({size / 2**20 / w:.0f} MiB/s)")
            print(f"  shared disk read:      {d:.2f} s ({size / 2**20 / d:.0f} MiB/s)")
            print(f"  ratio WADO-RS / disk:  {w / d:.1f}x")
        if "overhead" not in skip:
            emb, emb_model = per_job(work / "emb", embedded=True, repeats=args.repeats)
            cel, cel_model = per_job(work / "cel", embedded=False, repeats=args.repeats)
            e, c = statistics.median(emb), statistics.median(cel)
            print(f"per-job latency (queued -> succeeded), median of {args.repeats}:")
            print(f"  embedded engine: {e:.2f} s (model {statistics.median(emb_model):.2f} s)")
            print(f"  celery + worker: {c:.2f} s (model {statistics.median(cel_model):.2f} s)")
            print(f"  overhead of the distributed path: {c - e:+.2f} s per job ({c / e:.2f}x)")
        if "throughput" not in skip:
            one = throughput(work / "t1", workers=1, count=args.studies)
            two = throughput(work / "t2", workers=2, count=args.studies)
            print(f"throughput, {args.studies} studies of 16 x 64 x 64 CT:")
            print(f"  1 worker:  {one:.0f} studies/hour")
            print(f"  2 workers: {two:.0f} studies/hour ({two / one:.2f}x)")


if __name__ == "__main__":
    main()
