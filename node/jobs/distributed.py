"""The distributed job engine: the node publishes jobs to Celery (Redis), workers run them.

``CeleryEngine`` takes the place of ``EmbeddedEngine`` behind ``JobEngine`` when the config says
``queue: redis://HOST:PORT/DB``.  The node's SQLite job table stays the source of truth:

* a publisher thread sends every queued job that is not yet in the broker (``JobStore.
  unpublished``) to its model's queue or the STAT lane, and records the publication only after
  Redis took it; while Redis is down jobs simply stay queued here and ingest goes on;
* a job published long ago that no worker started (the broker lost it) is published again, and
  a running job that no worker reported on for longer than the job time limit plus the
  visibility timeout goes back to the queue;
* workers report through HTTP callbacks (``node.api.remote_jobs``): ``begin`` (queued ->
  running, with worker and device), ``accept_results`` (the result objects: gate, durable write,
  outbox, succeeded — once, whatever the number of deliveries) and ``fail``.

Messages may be delivered more than once (late acknowledgement, redelivery after a worker
died); deterministic job ids and result UIDs make every extra delivery a no-op here.
"""

from __future__ import annotations

import io
import logging
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import pydicom

from node.errors import AinodeError, ResultError
from node.jobs.celery_app import (
    STAT_QUEUE,
    TASK_NAME,
    job_message,
    make_celery,
    model_queue,
    redis_priority,
)
from node.jobs.store import JobRecord, JobStore
from node.store.durable import write_durably
from node.types import Instance, Job, JobState, ResultObject

__all__ = ["CeleryEngine"]

log = logging.getLogger(__name__)


class CeleryEngine:
    """Publish queued jobs to Celery and take remote workers' reports.

    Parameters
    ----------
    store:
        The durable queue (source of truth).
    broker_url:
        ``redis://HOST:PORT/DB``.
    data_dir:
        The node's data directory (result objects are written under ``results/<job_id>/``).
    series_instances:
        Stored instances of a series (``Index.series_instances``: what a starting worker
        fetches, and the sources of the results gate).
    job_timeout_seconds:
        The job time limit workers enforce.
    visibility_timeout_seconds:
        Broker redelivery delay of unacknowledged jobs (default: job time limit + 60 s).
    unacked_restore_interval_seconds:
        How often consumers look for messages to redeliver.
    stat_priority:
        Jobs at or above this routing priority go to the STAT lane.
    publish_interval_seconds:
        How often the publisher looks for work when nobody wakes it.
    on_success:
        Called with (job, outputs) before a job is marked succeeded (queues deliveries).
    """

    def __init__(
        self,
        store: JobStore,
        *,
        broker_url: str,
        data_dir: Path,
        series_instances: Callable[[str], Sequence[Instance]],
        job_timeout_seconds: float = 1800.0,
        visibility_timeout_seconds: float | None = None,
        unacked_restore_interval_seconds: float = 5.0,
        stat_priority: int = 100,
        publish_interval_seconds: float = 0.5,
        on_success: Callable[[Job, Mapping[str, Any]], None] | None = None,
    ) -> None:
        self._store = store
        self._broker_url = broker_url
        self._data_dir = data_dir
        self._series_instances = series_instances
        self._job_timeout = job_timeout_seconds
        self._visibility = visibility_timeout_seconds or job_timeout_seconds + 60.0
        self._restore_interval = unacked_restore_interval_seconds
        self._stat_priority = stat_priority
        self._interval = publish_interval_seconds
        self._on_success = on_success
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._results_lock = threading.Lock()
        self._app: Any = None
        self.broker_up: bool | None = None

    # ------------------------------------------------------------------------------ control
    def start(self) -> None:
        """Start the publisher (jobs left running stay running: their messages are in Redis)."""
        self._app = make_celery(
            self._broker_url,
            visibility_timeout_seconds=self._visibility,
            unacked_restore_interval_seconds=self._restore_interval,
        )
        # the results gate's imports (highdicom...) are slow: load them before results arrive
        threading.Thread(target=_preload, name="results-preload", daemon=True).start()
        self._thread = threading.Thread(target=self._loop, name="celery-publisher", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        """Stop publishing (what is in Redis stays there)."""
        self._stopping.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)
        if self._app is not None:
            self._app.close()

    def drain(self, timeout: float) -> list[str]:
        """Stop publishing; the ids of jobs running on remote workers (``Node.stop`` drains).

        Nothing is waited for: the node's HTTP listener is already closed, so a remote job's
        results cannot land during the drain.  Its worker keeps retrying the node for
        ``celery.callback_timeout_seconds`` and hands the job back to the queue after that; the
        message stays unacknowledged in Redis meanwhile, so the job is not lost.
        """
        del timeout
        self._stopping.set()
        self._wake.set()
        return list(self.running())

    def wake(self) -> None:
        """New jobs are queued: publish now."""
        self._wake.set()

    def running(self) -> dict[str, str]:
        """job_id -> worker, for jobs running on remote workers."""
        recs = self._store.list_jobs(states=(JobState.RUNNING,), limit=10000)
        return {r.job.job_id: r.worker or "" for r in recs}

    def queue_for(self, job: Job) -> str:
        """The broker queue a job goes to."""
        return STAT_QUEUE if job.priority >= self._stat_priority else model_queue(job.model)

    # ------------------------------------------------------------------------------ publishing
    def _loop(self) -> None:
        backoff = self._interval
        while not self._stopping.is_set():
            try:
                self._requeue_stale()
                self.publish_due()
                if self.broker_up is False:
                    log.info("queue.broker_back", extra={"broker": _safe(self._broker_url)})
                self.broker_up, backoff = True, self._interval
            except Exception as exc:  # noqa: BLE001 - broker down: jobs wait here
                if self.broker_up is not False:
                    log.warning(
                        "queue.broker_unavailable",
                        extra={"broker": _safe(self._broker_url), "error": type(exc).__name__},
                    )
                self.broker_up, backoff = False, min(backoff * 2, 10.0)
            self._wake.wait(backoff)
            self._wake.clear()

    def _requeue_stale(self) -> None:
        silent = self._job_timeout + self._visibility + 60.0
        ids = self._store.requeue_stale(
            older_than=time.time() - silent,
            reason=f"no word from its worker for {silent:g} s",
        )
        if ids:
            log.warning("jobs.requeued_stale", extra={"count": len(ids)})

    def publish_due(self) -> int:
        """Publish every due queued job; return how many (raises when the broker is down)."""
        due = self._store.unpublished(republish_before=time.time() - self._visibility - 60.0)
        for job, event in due:
            queue = self.queue_for(job)
            self._app.send_task(
                TASK_NAME,
                args=[job_message(job)],
                queue=queue,
                routing_key=queue,
                priority=redis_priority(job.priority, stat_priority=self._stat_priority),
                retry=False,
                task_id=f"{job.job_id}.{event}",
            )
            self._store.mark_published(job.job_id, queued_event=event, queue=queue)
            log.info("job.published", extra={"job_id": job.job_id, "queue": queue})
        return len(due)

    # ------------------------------------------------------------------------------ callbacks
    def begin(self, job_id: str, *, worker: str) -> tuple[JobRecord, list[Instance]] | None:
        """A worker starts ``job_id``: the record and the series' stored instances (looked up
        once), or None (skip it)."""
        rec = self._store.start_remote(job_id, worker)
        if rec is None:
            log.info("job.skipped_remote", extra={"job_id": job_id, "worker": worker})
            return None
        log.info("job.started", extra={"job_id": job_id, "model": rec.job.model, "worker": worker})
        instances = (
            list(self._series_instances(rec.job.series_uids[0])) if rec.job.series_uids else []
        )
        return rec, instances

    def fail(self, job_id: str, *, worker: str, reason: str) -> JobState:
        """A worker could not run ``job_id``: failed (queued again while attempts remain)."""
        if reason.startswith("input:"):  # unreadable input: fails once, not retried (issue 24)
            state = self._store.finish(
                job_id, ok=False, reason=f"{reason} (on {worker})", final=True
            )
        else:
            state = self._store.finish(job_id, ok=False, reason=f"on {worker}: {reason}")
        log.info("job.finished", extra={"job_id": job_id, "state": state.value, "worker": worker})
        if state is JobState.QUEUED:
            self._wake.set()
        return state

    def accept_results(
        self, job_id: str, *, worker: str, parts: Sequence[bytes], outputs: Mapping[str, Any]
    ) -> JobState:
        """Record a worker's result objects once: gate, durable write, outbox, succeeded.

        A job that is no longer running (delivered earlier, cancelled, dead) keeps its state
        and nothing is queued again: that is what makes redelivered jobs harmless.
        """
        with self._results_lock:
            rec = self._store.get(job_id)
            if rec.state is not JobState.RUNNING:
                log.info(
                    "job.results_ignored",
                    extra={"job_id": job_id, "state": rec.state.value, "worker": worker},
                )
                return rec.state
            try:
                objects = self._write_results(rec.job, parts)
            except (AinodeError, pydicom.errors.InvalidDicomError) as exc:
                return self.fail(job_id, worker=worker, reason=f"results refused: {exc}")
            out = dict(outputs)
            out["objects"] = objects
            out["worker"] = worker
            try:
                if self._on_success is not None:
                    self._on_success(rec.job, out)
            except Exception as exc:
                log.exception("jobs.on_success_failed", extra={"job_id": job_id})
                reason = f"after the model ran: {type(exc).__name__}: {exc}"
                return self.fail(job_id, worker=worker, reason=reason)
            state = self._store.finish(job_id, ok=True, reason=f"done on {worker}", outputs=out)
        log.info(
            "job.finished",
            extra={
                "job_id": job_id,
                "model": rec.job.model,
                "state": state.value,
                "worker": worker,
            },
        )
        return state

    def _write_results(self, job: Job, parts: Sequence[bytes]) -> list[ResultObject]:
        from node.results import check_results, result_object

        if not parts:
            return []
        datasets = [pydicom.dcmread(io.BytesIO(p)) for p in parts]
        sources = [i.path for i in self._series_instances(job.series_uids[0])]
        check_results(datasets, sources, encoded=parts)
        out_dir = self._data_dir / "results" / job.job_id
        objects: list[ResultObject] = []
        for n, (ds, data) in enumerate(zip(datasets, parts, strict=True)):
            if str(ds.StudyInstanceUID) != job.study_uid:
                raise ResultError(f"result {ds.SOPInstanceUID} is not of study {job.study_uid}")
            name = f"{n:03d}-{str(ds.Modality).lower()}.dcm"
            write_durably(out_dir / name, data)
            path = (out_dir / name).relative_to(self._data_dir)
            objects.append(result_object(ds, path, model=job.model))
        return objects


def _preload() -> None:
    import node.results  # noqa: F401


def _safe(url: str) -> str:
    """A broker URL without its password (for logs)."""
    scheme, sep, rest = url.partition("://")
    if "@" in rest:
        rest = "***@" + rest.split("@", 1)[1]
    return scheme + sep + rest
