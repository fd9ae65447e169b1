"""A job cancelled while its model runs: the results are not handed on for delivery."""

from __future__ import annotations

from pathlib import Path

from node.jobs import EmbeddedEngine, JobStore, job_id_for
from node.types import Job, JobState
from tests.util import wait_until


def test_cancelled_while_running_is_not_delivered(tmp_path: Path) -> None:
    store = JobStore(tmp_path / "index.sqlite")
    delivered: list[str] = []
    job = Job(
        job_id=job_id_for(study_uid="1.2.3", rule="r", model="slow", input_fingerprint="a"),
        study_uid="1.2.3",
        series_uids=("1.2.3.4",),
        model="slow",
        rule="r",
        parameters={"seconds": 2},
        destinations=("pacs",),
    )
    engine = EmbeddedEngine(
        store,
        runner="tests.jobs.runners:run",
        on_success=lambda j, out: delivered.append(j.job_id),
    )
    store.submit([job])
    engine.start()
    try:
        wait_until(lambda: engine.running() != {}, timeout=60, what="model running")
        store.cancel(job.job_id)
        wait_until(lambda: engine.running() == {}, timeout=60, what="run over")
    finally:
        engine.stop()
    assert store.get(job.job_id).state is JobState.CANCELLED
    assert delivered == []
