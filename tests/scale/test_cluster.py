"""Node + Redis + two real ``ainode worker`` processes (separate data dirs, no shared disk).

- a multi-study run completes and every result is delivered once;
- ``kill -9`` of a worker in the middle of a job: the job is redelivered to the other worker
  and completes once;
- Redis killed (SIGKILL) and restarted mid-run: nothing lost;
- the node restarted while jobs are in flight: nothing lost or duplicated.
"""

from __future__ import annotations

import contextlib
import subprocess
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pydicom
import pytest

from tests.peers.dcmtk import parse_storescu, tool
from tests.peers.node import NodeProcess, start_node
from tests.peers.redis import RedisServer, start_redis
from tests.scale.cluster import MODEL, WorkerProcess, db_rows, node_settings, studies, worker
from tests.util import wait_until

pytestmark = pytest.mark.slow


def _send(port: int, files: list[Path]) -> None:
    out = subprocess.run(
        [tool("storescu"), "-v", "-nh", "-aet", "STORESCU", "-aec", "AINODE", "127.0.0.1",
         str(port), *map(str, files)],
        capture_output=True, text=True, timeout=120, env={"TCP_NODELAY": "1", "PATH": "/usr/bin:/bin"},
    )  # fmt: skip
    acked, failed = parse_storescu(out.stdout + out.stderr)
    assert not failed and len(acked) == len(files), out.stdout[-2000:]


def _finished(node: NodeProcess, n_jobs: int) -> bool:
    rows = db_rows(node.data_dir, "SELECT state FROM jobs")
    if len(rows) < n_jobs or any(r[0] not in ("succeeded", "dead", "cancelled") for r in rows):
        return False
    pending = db_rows(node.data_dir, "SELECT COUNT(*) FROM outbox WHERE state<>'delivered'")
    return bool(pending) and pending[0][0] == 0


def _check_once(node: NodeProcess, archive: Path, n_jobs: int) -> dict[str, list[str]]:
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
def _cluster(
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
                    p.start()
                yield redis, node, procs
            except BaseException:
                for p in procs:
                    print(f"--- {p.name} log ---\n{p.log_text()[-5000:]}")
                print(f"--- redis log ---\n{redis.log_text()[-2000:]}")
                raise
            finally:
                for p in procs:
                    p.stop()


def test_multi_study_run_completes_and_delivers_once(tmp_path: Path) -> None:
    sets = studies(tmp_path / "in", 4)
    with _cluster(tmp_path) as (_redis, node, procs):
        _send(node.dicom_port, [f for s in sets for f in s])
        wait_until(lambda: _finished(node, 4), timeout=120, what="all jobs done and delivered")
        claims = _check_once(node, tmp_path / "archive", 4)
        workers_used = {r.split("claimed by ", 1)[1] for rs in claims.values() for r in rs}
        assert workers_used <= {f"{p.name}/cpu" for p in procs}
        # the jobs' workers and devices are recorded (ainode jobs, console, /metrics read these)
        for (who,) in db_rows(node.data_dir, "SELECT worker FROM jobs"):
            assert who in {f"{p.name}/cpu" for p in procs}
        # workers kept no input: they fetched over WADO-RS into scratch and cleaned up
        for p in procs:
            assert not list((p.workdir / "data").rglob("*.dcm"))
