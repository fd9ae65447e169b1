from __future__ import annotations

from pathlib import Path

import pytest

from node.jobs import EmbeddedEngine, JobStore, job_id_for
from node.types import Job, JobState
from tests.util import wait_until


def _job(model: str, study: str = "1.2.3", rule: str = "r", fp: str = "a", **params) -> Job:
    return Job(
        job_id=job_id_for(study_uid=study, rule=rule, model=model, input_fingerprint=fp),
        study_uid=study,
        series_uids=("1.2.3.4",),
        model=model,
        rule=rule,
        parameters=params,
        destinations=("pacs",),
    )


def _final(store: JobStore, job_id: str) -> bool:
    return store.get(job_id).state in (JobState.SUCCEEDED, JobState.DEAD, JobState.CANCELLED)


@pytest.fixture
def store(tmp_path: Path) -> JobStore:
    return JobStore(tmp_path / "index.sqlite")


def test_jobs_succeed_and_crashing_models_fail_with_reason(store: JobStore, tmp_path: Path):
    delivered: list[str] = []
    engine = EmbeddedEngine(
        store,
        runner="tests.jobs.runners:run",
        workers=2,
        timeout_seconds=8,
        memory_limit_bytes=300 * 2**20,
        on_success=lambda job, out: delivered.append(job.job_id),
    )
    jobs = {m: _job(m) for m in ("ok", "raise", "segv", "exit", "hang", "hog")}
    store.submit(jobs.values(), max_attempts=1)
    engine.start()
    try:
        for j in jobs.values():
            wait_until(lambda j=j: _final(store, j.job_id), timeout=60, what=f"{j.model} final")
    finally:
        engine.stop()
    rec = {m: store.get(j.job_id) for m, j in jobs.items()}
    assert rec["ok"].state is JobState.SUCCEEDED
    assert delivered == [jobs["ok"].job_id]
    assert rec["raise"].state is JobState.DEAD
    assert rec["raise"].reason == "ValueError: model exploded on purpose"
    assert "SIGSEGV" in (rec["segv"].reason or "")
    assert "exited with status 3" in (rec["exit"].reason or "")
    assert "timed out" in (rec["hang"].reason or "")
    assert "memory limit" in (rec["hog"].reason or "")
    states = [e["state"] for e in store.events(jobs["ok"].job_id)]
    assert states == ["queued", "running", "succeeded"]


def test_failed_job_is_retried_until_attempts_run_out(store: JobStore):
    job = _job("raise")
    store.submit([job], max_attempts=2)
    engine = EmbeddedEngine(store, runner="tests.jobs.runners:run", workers=1)
    engine.start()
    try:
        wait_until(lambda: _final(store, job.job_id), timeout=60, what="job dead")
    finally:
        engine.stop()
    rec = store.get(job.job_id)
    assert (rec.state, rec.attempts) == (JobState.DEAD, 2)
    assert [e["state"] for e in store.events(job.job_id)].count("failed") == 1
    store.retry(job.job_id)
    assert store.get(job.job_id).state is JobState.QUEUED


def test_same_inputs_do_not_rerun_and_new_inputs_supersede(store: JobStore):
    first = _job("ok", fp="v1")
    assert store.submit([first]) == [first.job_id]
    assert store.submit([first]) == []
    second = _job("ok", fp="v2")
    assert store.submit([second]) == [second.job_id]
    old = store.get(first.job_id)
    assert old.superseded_by == second.job_id
    assert old.state is JobState.CANCELLED


def test_priority_order_and_restart_requeues_running(store: JobStore, tmp_path: Path):
    low = _job("ok", fp="low")
    stat = Job(
        job_id=job_id_for(study_uid="9", rule="stat", model="ok", input_fingerprint="x"),
        study_uid="9",
        series_uids=(),
        model="ok",
        rule="stat",
        priority=10,
    )
    store.submit([low])
    store.submit([stat])
    claimed = store.claim("w1")
    assert claimed is not None and claimed.job_id == stat.job_id
    # the node dies here; a new JobStore on the same file re-queues it on start
    again = JobStore(tmp_path / "index.sqlite")
    assert again.requeue_running() == [stat.job_id]
    rec = again.get(stat.job_id)
    assert (rec.state, rec.attempts) == (JobState.QUEUED, 0)


def test_model_concurrency_limit(store: JobStore):
    a, b = _job("ok", fp="1"), _job("ok", fp="2", rule="other")
    store.submit([a, b])
    assert store.claim("w1", busy_models={"ok": 1}, model_limits={"ok": 1}) is None
    assert store.claim("w1", busy_models={}, model_limits={"ok": 1}) is not None


def test_cancel_and_unknown_job(store: JobStore):
    from node.errors import NotFoundError

    job = _job("ok")
    store.submit([job])
    store.cancel(job.job_id)
    assert store.get(job.job_id).state is JobState.CANCELLED
    with pytest.raises(NotFoundError):
        store.get("j-nope")


def test_jobs_on_other_series_do_not_supersede_each_other(store: JobStore):
    a = _job("ok", fp="s1")
    b = Job(
        **{**{f: getattr(a, f) for f in a.__slots__}, "job_id": "j-other", "series_uids": ("9",)}
    )
    store.submit([a, b])
    assert store.get(a.job_id).superseded_by is None
    assert store.get(b.job_id).state is JobState.QUEUED
