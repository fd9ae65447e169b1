"""Engine drain (graceful shutdown), worker warm-up, and result series numbers per job."""

from __future__ import annotations

import datetime as dt
import time
from pathlib import Path

import pytest

from node.jobs import EmbeddedEngine, JobStore, job_id_for
from node.results.identity import ResultContext
from node.routing.plan import plan_jobs, series_number_base
from node.types import Instance, Job, JobState
from tests.util import wait_until


def _job(model: str, fp: str = "a", **params: object) -> Job:
    return Job(
        job_id=job_id_for(study_uid="1.2", rule="r", model=model, input_fingerprint=fp),
        study_uid="1.2",
        series_uids=("1.2.3",),
        model=model,
        rule="r",
        parameters=dict(params),
    )


@pytest.fixture
def store(tmp_path: Path) -> JobStore:
    return JobStore(tmp_path / "index.sqlite")


def test_drain_lets_the_running_job_finish_and_claims_nothing_new(store: JobStore) -> None:
    running, waiting = _job("slow", fp="1", seconds=1.5), _job("ok", fp="2")
    engine = EmbeddedEngine(store, runner="tests.jobs.runners:run", workers=1)
    store.submit([running])
    engine.start()
    try:
        wait_until(lambda: engine.running() != {}, timeout=60, what="job running")
        store.submit([waiting])
        t0 = time.monotonic()
        assert engine.drain(60) == []
        assert time.monotonic() - t0 < 30
    finally:
        engine.stop()
    assert store.get(running.job_id).state is JobState.SUCCEEDED
    assert store.get(running.job_id).attempts == 1
    assert store.get(waiting.job_id).state is JobState.QUEUED  # left for the next start


def test_drain_deadline_returns_the_jobs_still_running(store: JobStore) -> None:
    job = _job("hang")
    engine = EmbeddedEngine(store, runner="tests.jobs.runners:run", workers=1)
    store.submit([job])
    engine.start()
    try:
        wait_until(lambda: engine.running() != {}, timeout=60, what="job running")
        assert engine.drain(0.3) == [job.job_id]
    finally:
        engine.stop()
    # killed by stop(): still 'running' in the queue, re-queued by the next start
    assert store.get(job.job_id).state is JobState.RUNNING
    assert store.requeue_running() == [job.job_id]


def test_worker_warm_up_does_not_count_against_the_job_timeout(store: JobStore) -> None:
    job = _job("ok")
    engine = EmbeddedEngine(
        store,
        runner="tests.jobs.runners:run",
        prepare="tests.jobs.runners:prepare",
        context={"prepare_seconds": 2.0},
        timeout_seconds=1.0,
        workers=1,
    )
    store.submit([job], max_attempts=1)
    engine.start()
    try:
        wait_until(lambda: store.get(job.job_id).state is JobState.SUCCEEDED, timeout=60)
    finally:
        engine.stop()


def test_worker_that_cannot_start_fails_the_job_with_the_reason(store: JobStore) -> None:
    job = _job("ok")
    engine = EmbeddedEngine(
        store,
        runner="tests.jobs.runners:run",
        prepare="tests.jobs.runners:prepare",
        context={"prepare_fails": True},
        workers=1,
    )
    store.submit([job], max_attempts=1)
    engine.start()
    try:
        wait_until(lambda: store.get(job.job_id).state is JobState.DEAD, timeout=60)
    finally:
        engine.stop()
    reason = store.get(job.job_id).reason or ""
    assert reason == "worker process failed to start: RuntimeError: cannot load the models"


class _Decision:
    def __init__(self, rule: str, model: str, series: tuple[str, ...]) -> None:
        self.rule, self.model, self.series_uids = rule, model, series
        self.parameters: dict[str, object] = {}
        self.deliver: tuple[str, ...] = ()
        self.send_to: str | None = None
        self.priority = 0
        self.ignored = False


def test_each_job_of_a_study_numbers_its_result_series_apart() -> None:
    def instances(series_uid: str) -> list[Instance]:
        return [
            Instance(
                study_uid="1.2",
                series_uid=series_uid,
                sop_uid=f"{series_uid}.1",
                sop_class_uid="1.2.840.10008.5.1.4.1.1.2",
                transfer_syntax_uid="1.2.840.10008.1.2.1",
                path=Path("x.dcm"),
                size_bytes=1,
                sha256="0" * 64,
                modality="CT",
            )
        ]

    decisions = [_Decision("a", "seg", ("1.2.3", "1.2.4")), _Decision("b", "detect", ("1.2.3",))]
    plan = plan_jobs("1.2", decisions, series_instances=instances, now=0.0)
    bases = [j.series_number_base for j in plan.jobs]
    assert bases == [series_number_base(k) for k in range(3)] == [9000, 10000, 11000]
    again = plan_jobs("1.2", decisions, series_instances=instances, now=5.0)
    assert [j.series_number_base for j in again.jobs] == bases  # deterministic
    when = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    numbers = {
        ResultContext("j", "m", "1", False, when, series_number_base=b).series_number(i)
        for b in bases
        for i in range(3)
    }
    assert len(numbers) == 9 and min(numbers) == 9001
