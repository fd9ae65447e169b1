"""Running the scale tests' cluster (Redis + a node + real workers), sending studies to it and
checking that every job ran and every result was delivered once (``test_cluster*.py``)."""

from __future__ import annotations

import contextlib
import subprocess
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pydicom

from tests.peers.dcmtk import parse_storescu, tool
from tests.peers.node import NodeProcess, start_node
from tests.peers.redis import RedisServer, start_redis
from tests.scale.cluster import WorkerProcess, db_rows, node_settings, worker

__all__ = ["RUN_SECONDS", "STEP_SECONDS", "check_once", "finished", "running_cluster", "send"]


#: Deadlines (not waits: polling ends as soon as the condition holds).  On a loaded shared
#: machine the node's first routing, which describes the models in a child process importing
#: torch and MONAI, took 74 s (load average 20, 3 xdist workers), so a step may take minutes.
STEP_SECONDS = 240
RUN_SECONDS = 360


def send(port: int, files: list[Path]) -> None:
    """C-STORE ``files`` with storescu; every one must be acknowledged."""
    out = subprocess.run(
        [tool("storescu"), "-v", "-nh", "-aet", "STORESCU", "-aec", "AINODE", "127.0.0.1",
         str(port), *map(str, files)],
        capture_output=True, text=True, timeout=120,
        env={"TCP_NODELAY": "1", "PATH": "/usr/bin:/bin"},
    )  # fmt: skip
    acked, failed = parse_storescu(out.stdout + out.stderr)
    assert not failed and len(acked) == len(files), (out.stdout + out.stderr)[-2000:]


def finished(node: NodeProcess, n_jobs: int) -> bool:
    """``n_jobs`` jobs are final and nothing waits in the outbox."""
    rows = db_rows(node.data_dir, "SELECT state FROM jobs")
    if len(rows) < n_jobs or any(r[0] not in ("succeeded", "dead", "cancelled") for r in rows):
        return False
    pending = db_rows(node.data_dir, "SELECT COUNT(*) FROM outbox WHERE state<>'delivered'")
    return bool(pending) and pending[0][0] == 0


def check_once(node: NodeProcess, archive: Path, n_jobs: int) -> dict[str, list[str]]:
    """Every job succeeded once; every result object delivered once; return job -> workers."""
    jobs = db_rows(node.data_dir, "SELECT job_id, state, outputs FROM jobs")
    assert len(jobs) == n_jobs
    assert all(state == "succeeded" for _, state, _ in jobs), jobs
    twice = db_rows(
        node.data_dir,
        "SELECT job_id FROM job_events WHERE state='succeeded' GROUP BY job_id HAVING COUNT(*)>1",
    )
    assert twice == []
    rows = db_rows(node.data_dir, "SELECT sop_uid, destination, state FROM outbox")
    sops = Counter(r[0] for r in rows)
    assert sops and all(n == 1 for n in sops.values())
    assert all(r[2] == "delivered" for r in rows)
    copies = Counter(
        str(pydicom.dcmread(p, stop_before_pixels=True).SOPInstanceUID)
        for p in archive.rglob("*.dcm")
    )
    assert copies == Counter(dict.fromkeys(sops, 1))
    claims: dict[str, list[str]] = {}
    for job_id, reason in db_rows(
        node.data_dir, "SELECT job_id, reason FROM job_events WHERE state='running' ORDER BY id"
    ):
        claims.setdefault(job_id, []).append(reason)
    return claims


@contextlib.contextmanager
def running_cluster(
    tmp_path: Path, workers: int = 2
) -> Iterator[tuple[RedisServer, NodeProcess, list[WorkerProcess]]]:
    with start_redis(tmp_path / "redis") as redis:
        settings = node_settings(tmp_path, redis.url)
        with start_node(tmp_path / "node", **settings) as node:
            procs = [
                worker(
                    tmp_path / f"worker{i}",
                    broker=redis.url,
                    node_url=node.url,
                    models=tmp_path / "models",
                )
                for i in range(workers)
            ]
            try:
                for p in procs:
                    p.launch()
                for p in procs:
                    p.wait_ready()
                yield redis, node, procs
            except BaseException:
                for p in procs:
                    print(f"--- {p.name} log ---\n{p.log_text()[-5000:]}")
                print(f"--- redis log ---\n{redis.log_text()[-2000:]}")
                raise
            finally:
                for p in procs:
                    p.stop()
