"""Node + Redis + two real ``ainode worker`` processes (separate data dirs, no shared disk).

- a multi-study run completes and every result is delivered once, with Redis killed (SIGKILL)
  and restarted in the middle and studies arriving while it is down;
- ``kill -9`` of a worker in the middle of a job: the job is redelivered to the other worker
  and completes once;
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
from tests.scale.cluster import WorkerProcess, db_rows, node_settings, studies, worker
from tests.util import wait_until

pytestmark = pytest.mark.slow


#: Deadlines (not waits: polling ends as soon as the condition holds).  On a loaded shared
#: machine the node's first routing, which describes the models in a child process importing
#: torch and MONAI, took 74 s (load average 20, 3 xdist workers), so a step may take minutes.
STEP_SECONDS = 240
RUN_SECONDS = 360


def _send(port: int, files: list[Path]) -> None:
    out = subprocess.run(
        [tool("storescu"), "-v", "-nh", "-aet", "STORESCU", "-aec", "AINODE", "127.0.0.1",
         str(port), *map(str, files)],
        capture_output=True, text=True, timeout=120,
        env={"TCP_NODELAY": "1", "PATH": "/usr/bin:/bin"},
    )  # fmt: skip
    acked, failed = parse_storescu(out.stdout + out.stderr)
    assert not failed and len(acked) == len(files), (out.stdout + out.stderr)[-2000:]


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


def test_multi_study_run_with_redis_killed_mid_run_delivers_once(tmp_path: Path) -> None:
    sets = studies(tmp_path / "in", 5)
    with _cluster(tmp_path) as (redis, node, procs):
        _send(node.dicom_port, [f for s in sets[:3] for f in s])
        wait_until(
            lambda: bool(db_rows(node.data_dir, "SELECT 1 FROM job_publications")),
            timeout=STEP_SECONDS,
            what="a job in Redis",
        )
        redis.kill()  # SIGKILL: only the append-only file survives
        # the node keeps ingesting; new jobs wait in its own queue until Redis is back
        _send(node.dicom_port, [f for s in sets[3:] for f in s])
        wait_until(
            lambda: len(db_rows(node.data_dir, "SELECT 1 FROM jobs")) == 5,
            timeout=STEP_SECONDS,
            what="jobs of the studies sent while Redis was down",
        )
        unpublished = db_rows(
            node.data_dir,
            "SELECT COUNT(*) FROM jobs WHERE job_id NOT IN (SELECT job_id FROM job_publications)",
        )
        assert unpublished[0][0] >= 1
        redis.start()
        wait_until(
            lambda: _finished(node, 5), timeout=RUN_SECONDS, what="all jobs done and delivered"
        )
        claims = _check_once(node, tmp_path / "archive", 5)
        names = {f"{p.name}/cpu" for p in procs}
        assert {r.split(" ")[2] for rs in claims.values() for r in rs} <= names
        # the jobs' workers and devices are recorded (ainode jobs, console, /metrics read these)
        for (who,) in db_rows(node.data_dir, "SELECT worker FROM jobs"):
            assert who in names
        # workers keep nothing: input fetched over WADO-RS into scratch, removed after the job
        for p in procs:
            assert not list((p.workdir / "data").rglob("*.dcm"))


def test_worker_kill_9_and_node_restart(tmp_path: Path) -> None:
    # larger series so that a job lasts long enough to be killed in the middle
    sets = studies(tmp_path / "in", 4, slices=16, size=64)
    with _cluster(tmp_path) as (_redis, node, procs):
        _send(node.dicom_port, [f for s in sets[:2] for f in s])
        running: list[tuple[str, str]] = []

        def one_running() -> bool:
            running[:] = db_rows(
                node.data_dir, "SELECT job_id, worker FROM jobs WHERE state='running'"
            )
            return bool(running)

        wait_until(one_running, timeout=STEP_SECONDS, what="a job running on a worker")
        victim_job, victim = running[0]
        by_name = {f"{p.name}/cpu": p for p in procs}
        by_name[victim].kill()
        t_kill = time.monotonic()
        (survivor,) = [p for n, p in by_name.items() if n != victim]

        # the killed worker's job comes back after the visibility timeout, to the survivor
        def redone() -> bool:
            rows = db_rows(node.data_dir, "SELECT state FROM jobs WHERE job_id=?", (victim_job,))
            return rows == [("succeeded",)]

        wait_until(
            redone, timeout=STEP_SECONDS, what="the killed worker's job redelivered and done"
        )
        redelivery = time.monotonic() - t_kill
        events = [
            r[0]
            for r in db_rows(
                node.data_dir,
                "SELECT reason FROM job_events WHERE job_id=? AND state='running' ORDER BY id",
                (victim_job,),
            )
        ]
        assert events[0] == f"claimed by {victim}"
        assert f"redelivered to {survivor.name}/cpu (was {victim})" in events, events
        print(f"redelivered after {redelivery:.1f} s")

        # node restart (SIGKILL) while the survivor runs jobs: nothing lost or duplicated
        _send(node.dicom_port, [f for s in sets[2:] for f in s])
        wait_until(one_running, timeout=STEP_SECONDS, what="a job running before the node restart")
        node.kill()
        node.start()
        wait_until(
            lambda: _finished(node, 4), timeout=RUN_SECONDS, what="all jobs done and delivered"
        )
        _check_once(node, tmp_path / "archive", 4)
