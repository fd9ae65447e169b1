"""Node + Redis + two real ``ainode worker`` processes (split from ``test_cluster.py``, so that
pytest-xdist runs the two long cluster runs on two workers at once):

- ``kill -9`` of a worker in the middle of a job: the job is redelivered to the other worker
  and completes once;
- the node restarted while jobs are in flight: nothing lost or duplicated.
"""

from __future__ import annotations

import time
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


def test_worker_kill_9_and_node_restart(tmp_path: Path) -> None:
    # larger series so that a job lasts long enough to be killed in the middle
    sets = studies(tmp_path / "in", 4, slices=16, size=64)
    with running_cluster(tmp_path) as (_redis, node, procs):
        send(node.dicom_port, [f for s in sets[:2] for f in s])
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
        send(node.dicom_port, [f for s in sets[2:] for f in s])
        wait_until(one_running, timeout=STEP_SECONDS, what="a job running before the node restart")
        node.kill()
        node.start()
        wait_until(
            lambda: finished(node, 4), timeout=RUN_SECONDS, what="all jobs done and delivered"
        )
        check_once(node, tmp_path / "archive", 4)
