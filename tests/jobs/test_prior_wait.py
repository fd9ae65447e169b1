"""Jobs waiting for a prior in the real SQLite job store: not claimed nor published while
waiting, released by ``resolve_prior``, run with the timeout reason once the deadline passes,
and the outcome survives a new ``JobStore`` on the same file (a restarted node)."""

from __future__ import annotations

import time
from pathlib import Path

from node.jobs.celery_app import job_from_message, job_message
from node.jobs.store import JobStore
from node.types import (
    NO_PRIOR,
    PRIOR_FAILED,
    Job,
    JobState,
    PriorOutcome,
    PriorSeries,
    PriorState,
)
from tests.util import wait_until


def _job(job_id: str, *, rule: str = "chest", wait_until: float | None = None) -> Job:
    prior = (
        PriorOutcome(PriorState.WAITING, wait_until=wait_until) if wait_until is not None else None
    )
    return Job(job_id, "1.2.3", ("1.2.3.4",), "m", rule, prior=prior)


def test_waiting_job_is_not_claimed_until_its_prior_is_resolved(tmp_path: Path) -> None:
    store = JobStore(tmp_path / "index.sqlite")
    store.submit([_job("j-wait", wait_until=time.time() + 600), _job("j-other", rule="other")])
    assert [w[:2] for w in store.waiting_priors()] == [("1.2.3", "chest")]
    assert store.waiting_priors()[0][3] == ("1.2.3.4",)
    claimed = store.claim("w1")
    assert claimed is not None and claimed.job_id == "j-other" and claimed.prior is None
    assert store.claim("w1") is None  # the waiting one stays queued
    assert [j.job_id for j, _ in store.unpublished(republish_before=0)] == []
    fetched = PriorOutcome(PriorState.FETCHED, series=(PriorSeries("9.8", "9.8.7", "20240301"),))
    assert store.resolve_prior("1.2.3", "chest", fetched) == ["j-wait"]
    assert store.waiting_priors() == []
    again = JobStore(tmp_path / "index.sqlite")  # a restarted node reads the same row
    assert again.get("j-wait").job.prior == fetched
    assert [j.job_id for j, _ in again.unpublished(republish_before=0)] == ["j-wait"]
    job = again.claim("w2")
    assert job is not None and job.job_id == "j-wait" and job.prior == fetched
    assert again.get("j-wait").to_json()["prior"]["series"][0]["series_uid"] == "9.8.7"
    # a late answer changes nothing for a job that no longer waits
    none = PriorOutcome(PriorState.NONE, reason=NO_PRIOR)
    assert again.resolve_prior("1.2.3", "chest", none) == []
    assert again.get("j-wait").job.prior == fetched


def test_deadline_passed_runs_the_job_with_the_timeout_reason(tmp_path: Path) -> None:
    store = JobStore(tmp_path / "index.sqlite")
    store.submit([_job("j-late", wait_until=time.time() - 1)])
    job = store.claim("w1")
    assert job is not None and job.prior is not None
    assert job.prior.state is PriorState.FAILED
    assert job.prior.reason is not None
    assert job.prior.reason.startswith(f"{PRIOR_FAILED}: not retrieved within the priors timeout")
    assert store.get("j-late").state is JobState.RUNNING
    assert store.waiting_priors() == []


def test_deadline_passed_after_failures_runs_the_job_with_the_last_failure(
    tmp_path: Path,
) -> None:
    store = JobStore(tmp_path / "index.sqlite")
    store.submit([_job("j-fail", wait_until=time.time() + 0.5)])
    store.note_prior_failure("1.2.3", "chest", f"{PRIOR_FAILED}: source refused")
    waiting = store.get("j-fail").job.prior
    assert waiting is not None and waiting.state is PriorState.WAITING
    assert waiting.reason == f"{PRIOR_FAILED}: source refused"
    assert store.claim("w1") is None  # still waiting
    claimed: list[Job] = []

    def claim() -> bool:
        job = store.claim("w1")
        claimed.extend([job] if job is not None else [])
        return bool(claimed)

    wait_until(claim, timeout=30, what="the job claimed once its wait ended")
    job = claimed[0]
    assert job.prior is not None
    assert (job.prior.state, job.prior.reason) == (
        PriorState.FAILED,
        f"{PRIOR_FAILED}: source refused",
    )


def test_prior_travels_in_the_task_message() -> None:
    job = Job(
        "j-1",
        "1.2",
        ("1.2.3",),
        "m",
        "r",
        prior=PriorOutcome(
            PriorState.FETCHED, series=(PriorSeries("5.6", "5.6.7", None, "CHEST"),)
        ),
    )
    assert job_from_message(job_message(job)) == job
    bare = Job("j-2", "1.2", ("1.2.3",), "m", "r")
    assert job_from_message(job_message(bare)) == bare
