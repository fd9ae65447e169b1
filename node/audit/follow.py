"""Audit the job queue's automatic transitions by following its ``job_events`` table.

Every state change of a job is a row in ``job_events`` (``node.jobs.store``), whoever made it:
the engine (running, succeeded, failed, dead), routing (queued), the CLI or the API.  The
follower reads the rows after its cursor (kept in the audit table, so a restart resumes where
the last run stopped and nothing is audited twice) and records one ``job.<state>`` event each:
job id, rule, model and study UID, never the failure text (it may quote input data).
"""

from __future__ import annotations

import logging
import sqlite3
import threading
from collections.abc import Iterable, Sequence
from typing import Protocol

from node.audit.log import AuditLog

__all__ = ["JobEventFollower", "JobEventSource", "JobTransition", "SupersededAuditor"]

log = logging.getLogger(__name__)

_CURSOR = "job_events"
_BATCH = 500


class JobTransition(Protocol):
    """One row of ``job_events`` with its job's identity (``node.jobs.queries.JobEvent``)."""

    @property
    def event_id(self) -> int: ...
    @property
    def job_id(self) -> str: ...
    @property
    def state(self) -> str: ...
    @property
    def study_uid(self) -> str | None: ...
    @property
    def rule(self) -> str | None: ...
    @property
    def model(self) -> str | None: ...


class JobEventSource(Protocol):
    """Reads transitions after an event id (``node.jobs.queries.JobEventReader``): the job
    queue owns ``job_events``, the follower only reads through it."""

    def __call__(self, after: int, limit: int) -> Sequence[JobTransition]: ...

    def close(self) -> None: ...


class JobEventFollower:
    """Polls ``job_events`` and writes one audit record per transition.

    Parameters
    ----------
    audit:
        Where records go (and where the cursor is kept).
    events:
        Where the transitions are read (``node.jobs.queries.JobEventReader`` on the index).
    poll_seconds:
        Pause between polls when there is nothing new.
    """

    def __init__(
        self, audit: AuditLog, events: JobEventSource, *, poll_seconds: float = 1.0
    ) -> None:
        self._audit = audit
        self._events = events
        self._poll_seconds = poll_seconds
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def poll_once(self) -> int:
        """Audit the transitions after the cursor (at most one batch); return how many."""
        cursor = self._audit.cursor(_CURSOR) or 0
        rows = self._events(cursor, _BATCH)
        for e in rows:
            self._audit.record(
                f"job.{e.state}",
                study_uid=e.study_uid,
                job_id=e.job_id,
                rule=e.rule,
                model=e.model,
            )
            self._audit.set_cursor(_CURSOR, int(e.event_id))
        return len(rows)

    def start(self) -> None:
        """Follow in a daemon thread until ``stop``."""
        if self._thread is not None:
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="audit-jobs", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                n = self.poll_once()
            except sqlite3.Error:
                log.exception("audit.follow_failed")
                n = 0
            if n < _BATCH:
                self._stop.wait(self._poll_seconds)

    def stop(self) -> None:
        """Stop following (audits what is already there first) and close the connection."""
        thread, self._thread = self._thread, None
        if thread is not None:
            self._stop.set()
            thread.join(timeout=10)
            try:
                self.poll_once()
            except sqlite3.Error:
                log.exception("audit.follow_failed")
        self._events.close()


class SupersededRejection(Protocol):
    """A recorded rejection (``node.delivery.rejections.Rejection``), as the auditor reads it."""

    @property
    def note_id(self) -> str: ...
    @property
    def study_uid(self) -> str: ...
    @property
    def job_ids(self) -> tuple[str, ...]: ...
    @property
    def superseded_by(self) -> str | None: ...
    @property
    def rejected_sop_uids(self) -> tuple[str, ...]: ...
    @property
    def destinations(self) -> tuple[str, ...]: ...
    @property
    def queued_at(self) -> float | None: ...


class SupersededAuditor:
    """Records ``results.superseded`` once per rejection the node made of superseded results.

    The rejection is the state change and lives in the index (``rejections`` table); the
    audit record follows it.  A ``kill -9`` between the two must not lose the record, so it
    is re-derived: ``catch_up`` (at start-up) records every queued superseded rejection that
    has no record yet, and ``record`` (the live listener) skips one that has.  The audit table
    is the memory of what was recorded (the note id is in each record).
    """

    EVENT = "results.superseded"

    def __init__(self, audit: AuditLog) -> None:
        self._audit = audit
        self._lock = threading.Lock()

    def record(self, rejection: SupersededRejection) -> bool:
        """Record ``rejection`` unless it was recorded already; return whether it was now."""
        if rejection.queued_at is None:
            return False  # not finished: recorded when ``resume`` finishes it (catch_up)
        with self._lock:
            if rejection.note_id in self._audit.recorded_values(self.EVENT, "note_id"):
                return False
            self._audit.record(
                self.EVENT,
                study_uid=rejection.study_uid,
                note_id=rejection.note_id,
                job_ids=list(rejection.job_ids),
                superseded_by=rejection.superseded_by,
                objects=len(rejection.rejected_sop_uids),
                destinations=list(rejection.destinations),
            )
        return True

    def catch_up(self, rejections: Iterable[SupersededRejection]) -> int:
        """Record those of ``rejections`` (superseded ones, oldest first) not recorded yet."""
        return sum(self.record(r) for r in rejections)
