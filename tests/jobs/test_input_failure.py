"""An input unreadable at load time fails once (reason 'input'), is not retried, never 'dead'."""

from __future__ import annotations

from pathlib import Path

from node.jobs import EmbeddedEngine, JobStore, job_id_for
from node.types import Job, JobState
from tests.util import wait_until


def _job(model: str) -> Job:
    return Job(
        job_id=job_id_for(study_uid="1.2", rule="r", model=model, input_fingerprint=model),
        study_uid="1.2",
        series_uids=("1.2.3",),
        model=model,
        rule="r",
    )


def test_input_failure_is_final_after_one_attempt_and_model_failure_is_retried(
    tmp_path: Path,
) -> None:
    store = JobStore(tmp_path / "index.sqlite")
    bad_input, crash = _job("bad-input"), _job("raise")
    engine = EmbeddedEngine(store, runner="tests.jobs.runners:run", workers=1)
    store.submit([bad_input, crash], max_attempts=3)
    engine.start()
    try:
        ended = (JobState.FAILED, JobState.DEAD)
        wait_until(
            lambda: all(store.get(j.job_id).state in ended for j in (bad_input, crash)),
            timeout=120,
            what="both jobs ended",
        )
    finally:
        engine.stop()
    record = store.get(bad_input.job_id)
    assert (record.state, record.attempts) == (JobState.FAILED, 1)
    assert (record.reason or "").startswith("input: cannot decode pixel data")
    model = store.get(crash.job_id)
    assert (model.state, model.attempts) == (JobState.DEAD, 3)
