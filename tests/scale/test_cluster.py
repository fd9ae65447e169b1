"""Node + Redis + two real ``ainode worker`` processes (separate data dirs, no shared disk):
a multi-study run completes and every result is delivered once, with Redis killed (SIGKILL)
and restarted in the middle and studies arriving while it is down.

A worker killed mid-job and a node restarted while jobs are in flight are
``test_cluster_worker_kill.py`` (its own file, so that pytest-xdist runs both on two workers).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.scale.cluster import db_rows, studies
from tests.scale.cluster_run import (
    RUN_SECONDS,
    STEP_SECONDS,
    check_once,
    finished,
    running_cluster,
    send,
)
from tests.util import wait_until

pytestmark = pytest.mark.slow


def test_multi_study_run_with_redis_killed_mid_run_delivers_once(tmp_path: Path) -> None:
    sets = studies(tmp_path / "in", 5)
    with running_cluster(tmp_path) as (redis, node, procs):
        send(node.dicom_port, [f for s in sets[:3] for f in s])
        wait_until(
            lambda: bool(db_rows(node.data_dir, "SELECT 1 FROM job_publications")),
            timeout=STEP_SECONDS,
            what="a job in Redis",
        )
        redis.kill()  # SIGKILL: only the append-only file survives
        # the node keeps ingesting; new jobs wait in its own queue until Redis is back
        send(node.dicom_port, [f for s in sets[3:] for f in s])
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
            lambda: finished(node, 5), timeout=RUN_SECONDS, what="all jobs done and delivered"
        )
        claims = check_once(node, tmp_path / "archive", 5)
        names = {f"{p.name}/cpu" for p in procs}
        assert {r.split(" ")[2] for rs in claims.values() for r in rs} <= names
        # the jobs' workers and devices are recorded (ainode jobs, console, /metrics read these)
        for (who,) in db_rows(node.data_dir, "SELECT worker FROM jobs"):
            assert who in names
        # workers keep nothing: input fetched over WADO-RS into scratch, removed after the job
        for p in procs:
            assert not list((p.workdir / "data").rglob("*.dcm"))
