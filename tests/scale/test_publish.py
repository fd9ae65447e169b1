"""The node side of the distributed engine against a real redis-server (no workers):
lanes and priorities, no pixel data in Redis, Redis down at start, and the job table's rules for
(re)publication and remote starts."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import redis as redis_client

from node.jobs.celery_app import STAT_QUEUE, model_queue
from node.jobs.distributed import CeleryEngine
from node.jobs.store import JobStore
from node.types import Job, JobState
from tests.peers.redis import RedisServer, start_redis
from tests.util import free_port, wait_until


def _job(n: int, model: str, priority: int = 0) -> Job:
    return Job(
        job_id=f"j-{n}",
        study_uid=f"1.2.3.{n}",
        series_uids=(f"1.2.3.{n}.1",),
        model=model,
        rule="r",
        parameters={"_created_at": 1},
        destinations=("pacs",),
        priority=priority,
    )


def _engine(store: JobStore, url: str, tmp: Path) -> CeleryEngine:
    return CeleryEngine(
        store,
        broker_url=url,
        data_dir=tmp,
        series_instances=lambda uid: [],
        visibility_timeout_seconds=60,
        stat_priority=100,
        publish_interval_seconds=0.2,
    )


def _messages(r: redis_client.Redis, queue: str) -> list[dict[str, object]]:
    out = []
    for key in r.keys(queue + "*"):
        out.extend(json.loads(m) for m in r.lrange(key, 0, -1))
    return out


def test_jobs_go_to_their_lanes_without_pixel_data(tmp_path: Path) -> None:
    store = JobStore(tmp_path / "index.sqlite")
    store.submit([_job(1, "lung"), _job(2, "liver", priority=10), _job(3, "lung", priority=200)])
    with start_redis(tmp_path / "redis") as server:
        engine = _engine(store, server.url, tmp_path)
        engine.start()
        try:
            r = redis_client.Redis(port=server.port)
            wait_until(lambda: len(_messages(r, "ainode.")) == 3, timeout=30, what="3 messages")
            stat = _messages(r, STAT_QUEUE)
            assert [str(m["headers"]["id"]).split(".")[0] for m in stat] == ["j-3"]  # type: ignore[index]
            assert len(_messages(r, model_queue("lung"))) == 1
            assert len(_messages(r, model_queue("liver"))) == 1
            # Redis priority 0 is the most urgent: the STAT job is at 0, others lower
            assert stat[0]["properties"]["priority"] == 0  # type: ignore[index]
            liver = _messages(r, model_queue("liver"))[0]
            assert liver["properties"]["priority"] == 3  # type: ignore[index]
            for m in _messages(r, "ainode."):
                assert len(json.dumps(m)) < 4096  # identifiers only: no pixel data
            # published once: the publisher does not send a job again while it waits
            engine.wake()
            wait_until(lambda: engine.broker_up is True, timeout=10)
            assert len(_messages(r, "ainode.")) == 3
        finally:
            engine.stop()


def test_redis_down_at_start_jobs_wait_then_publish(tmp_path: Path) -> None:
    store = JobStore(tmp_path / "index.sqlite")
    store.submit([_job(1, "lung")])
    server = RedisServer(workdir=tmp_path / "redis", port=free_port())
    engine = _engine(store, server.url, tmp_path)
    engine.start()
    try:
        wait_until(lambda: engine.broker_up is False, timeout=30, what="broker seen down")
        assert store.get("j-1").state is JobState.QUEUED
        store.submit([_job(2, "lung")])  # the node goes on queuing work
        server.start()
        r = redis_client.Redis(port=server.port)
        wait_until(lambda: len(_messages(r, "ainode.")) == 2, timeout=60, what="published")
    finally:
        engine.stop()
        server.stop()


def test_publication_due_after_requeue_and_when_lost(tmp_path: Path) -> None:
    store = JobStore(tmp_path / "index.sqlite")
    store.submit([_job(1, "lung")])
    ((job, event),) = store.unpublished(republish_before=0)
    store.mark_published(job.job_id, queued_event=event, queue="q")
    assert store.unpublished(republish_before=0) == []
    # the broker lost it: published long ago and never started
    assert [j.job_id for j, _ in store.unpublished(republish_before=2e9)] == ["j-1"]
    # a failed run queues it again: a new publication is due
    assert store.start_remote("j-1", "w1") is not None
    assert store.finish("j-1", ok=False, reason="boom") is JobState.QUEUED
    assert [j.job_id for j, _ in store.unpublished(republish_before=0)] == ["j-1"]


def test_start_remote_redelivery_cancel_and_dead(tmp_path: Path) -> None:
    store = JobStore(tmp_path / "index.sqlite")
    store.submit([_job(1, "lung"), _job(2, "lung")], max_attempts=2)
    first = store.start_remote("j-1", "w1/cpu")
    assert first is not None and first.state is JobState.RUNNING and first.worker == "w1/cpu"
    # w1 died; the message comes back to w2
    again = store.start_remote("j-1", "w2/cpu")
    assert again is not None and again.worker == "w2/cpu" and again.attempts == 2
    assert store.events("j-1")[-1]["reason"] == "redelivered to w2/cpu (was w1/cpu)"
    # a job that killed every worker it ran on is not run for ever
    assert store.start_remote("j-1", "w3/cpu") is None
    assert store.get("j-1").state is JobState.DEAD
    store.cancel("j-2")
    assert store.start_remote("j-2", "w1/cpu") is None
    with pytest.raises(Exception, match="no job"):
        store.start_remote("j-404", "w1/cpu")


def test_silent_running_job_goes_back_to_the_queue(tmp_path: Path) -> None:
    store = JobStore(tmp_path / "index.sqlite")
    store.submit([_job(1, "lung")])
    store.start_remote("j-1", "w1/cpu")
    assert store.requeue_stale(older_than=0, reason="silent") == []
    assert store.requeue_stale(older_than=2e9, reason="silent") == ["j-1"]
    assert store.get("j-1").state is JobState.QUEUED
