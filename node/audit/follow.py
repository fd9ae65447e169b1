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
from pathlib import Path

from node.audit.log import AuditLog

__all__ = ["JobEventFollower"]

log = logging.getLogger(__name__)

_CURSOR = "job_events"
_BATCH = 500


class JobEventFollower:
    """Polls ``job_events`` and writes one audit record per transition.

    Parameters
    ----------
    audit:
        Where records go (and where the cursor is kept).
    db_path:
        The node's index (``data_dir/index.sqlite``) holding ``jobs`` and ``job_events``.
    poll_seconds:
        Pause between polls when there is nothing new.
    """

    def __init__(self, audit: AuditLog, db_path: Path, *, poll_seconds: float = 1.0) -> None:
        self._audit = audit
        self._db_path = db_path
        self._poll_seconds = poll_seconds
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._conn: sqlite3.Connection | None = None

    def _connection(self) -> sqlite3.Connection:
        if self._conn is None:
            self._conn = sqlite3.connect(self._db_path, timeout=30, check_same_thread=False)
            self._conn.execute("PRAGMA busy_timeout=30000")
        return self._conn

    def poll_once(self) -> int:
        """Audit the transitions after the cursor (at most one batch); return how many."""
        cursor = self._audit.cursor(_CURSOR) or 0
        try:
            rows = (
                self._connection()
                .execute(
                    "SELECT e.id, e.job_id, e.state, j.study_uid, j.rule, j.model"
                    " FROM job_events e LEFT JOIN jobs j ON j.job_id = e.job_id"
                    " WHERE e.id > ? ORDER BY e.id LIMIT ?",
                    (cursor, _BATCH),
                )
                .fetchall()
            )
        except sqlite3.OperationalError:  # the job store has not created its tables yet
            return 0
        for event_id, job_id, state, study_uid, rule, model in rows:
            self._audit.record(
                f"job.{state}",
                study_uid=study_uid,
                job_id=job_id,
                rule=rule,
                model=model,
            )
            self._audit.set_cursor(_CURSOR, int(event_id))
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
        if self._conn is not None:
            self._conn.close()
            self._conn = None
