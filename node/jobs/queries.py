"""Read-only questions other components ask of the job tables, and the purge of one study.

The jobs package owns ``jobs``, ``job_events`` and ``routings`` (schema and writes in
``node.jobs.store``).  The metrics collector, the console dashboard, retention and the audit
follower ask these questions on a connection of their own (a read-only one per scrape, or
retention's write transaction), so each function takes a ``sqlite3.Connection``.  A table that
does not exist yet (the job store never started on this data directory) reads as empty.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from node.store.retention import Purged, StudyHold, StudyRows

__all__ = [
    "JOB_ROWS",
    "JobEvent",
    "JobEventReader",
    "StudyJobs",
    "ai_status_sql",
    "count_by_model_and_state",
    "count_by_state",
    "events_after",
    "failure_times",
    "purge_study",
    "routed_sql",
    "routing_records",
    "run_seconds",
    "running_by_worker",
    "study_jobs",
    "succeeded_times",
]


def _rows(conn: sqlite3.Connection, sql: str, args: tuple[Any, ...] = ()) -> list[Any]:
    try:
        return conn.execute(sql, args).fetchall()
    except sqlite3.OperationalError:  # the job store has not created its tables yet
        return []


def _has_table(conn: sqlite3.Connection, name: str) -> bool:
    row = conn.execute(
        "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?", (name,)
    ).fetchone()
    return row is not None


def ai_status_sql(study_uid_column: str = "s.study_uid") -> str:
    """SQL expression of a study's AI status from its jobs that are not superseded: running,
    queued, failed (failed or dead), succeeded, cancelled (the first that applies) or none.

    The index sorts, filters and pages its study list in SQL with it
    (``node.store.index.Index(ai_status_sql=...)``); the jobs table must exist.
    """

    def has(states: str) -> str:
        return (
            f"EXISTS (SELECT 1 FROM jobs j WHERE j.study_uid = {study_uid_column}"
            f" AND j.superseded_by IS NULL AND j.state IN ({states}))"
        )

    steps = [
        (has("'running'"), "running"),
        (has("'queued'"), "queued"),
        (has("'failed', 'dead'"), "failed"),
        (has("'succeeded'"), "succeeded"),
        (has("'cancelled'"), "cancelled"),
    ]
    whens = " ".join(f"WHEN {cond} THEN '{status}'" for cond, status in steps)
    return f"CASE {whens} ELSE 'none' END"


def routed_sql(study_alias: str = "s") -> str:
    """SQL condition over a ``studies`` row ``study_alias``: its current completion generation
    has a routing record (the index lists the complete studies that were not routed with it,
    ``node.store.index.Index(routed_sql=...)``); the routings table must exist."""
    return (
        f"EXISTS (SELECT 1 FROM routings r WHERE r.study_uid = {study_alias}.study_uid"
        f" AND r.generation >= {study_alias}.generation)"
    )


def count_by_model_and_state(conn: sqlite3.Connection) -> list[tuple[str, str, int]]:
    """(model, state, number of jobs) for every pair that has jobs."""
    return [
        (str(m), str(s), int(n))
        for m, s, n in _rows(conn, "SELECT model, state, COUNT(*) FROM jobs GROUP BY model, state")
    ]


def count_by_state(conn: sqlite3.Connection) -> dict[str, int]:
    """Number of jobs per state."""
    return {str(s): int(n) for s, n in _rows(conn, "SELECT state, COUNT(*) FROM jobs GROUP BY 1")}


def running_by_worker(conn: sqlite3.Connection) -> list[tuple[str, int]]:
    """(worker, running jobs); the worker is '' for the node's embedded engine."""
    return [
        (str(w), int(n))
        for w, n in _rows(
            conn,
            "SELECT COALESCE(worker, ''), COUNT(*) FROM jobs WHERE state = 'running'"
            " GROUP BY worker",
        )
    ]


def run_seconds(conn: sqlite3.Connection) -> list[tuple[str, float]]:
    """(model, seconds from start to finish) of every succeeded job."""
    return [
        (str(m), max(0.0, float(s)))
        for m, s in _rows(
            conn,
            "SELECT model, finished_at - started_at FROM jobs WHERE state = 'succeeded'"
            " AND started_at IS NOT NULL AND finished_at IS NOT NULL",
        )
    ]


def succeeded_times(conn: sqlite3.Connection, since: float) -> list[float]:
    """When each job that succeeded at or after ``since`` finished."""
    return [
        float(t)
        for (t,) in _rows(
            conn,
            "SELECT finished_at FROM jobs WHERE state = 'succeeded' AND finished_at >= ?",
            (since,),
        )
    ]


def failure_times(conn: sqlite3.Connection, since: float) -> list[float]:
    """When each failure (``failed`` or ``dead`` transition) at or after ``since`` happened."""
    return [
        float(t)
        for (t,) in _rows(
            conn,
            "SELECT ts FROM job_events WHERE state IN ('failed', 'dead') AND ts >= ?",
            (since,),
        )
    ]


def routing_records(conn: sqlite3.Connection) -> Iterator[dict[str, Any]]:
    """Every stored routing record (``{"decisions": [...], "not_applicable": [...], ...}``);
    records that do not parse are skipped."""
    for (decisions,) in _rows(conn, "SELECT decisions FROM routings"):
        try:
            record = json.loads(decisions)
        except ValueError:
            continue
        if isinstance(record, dict):
            yield record


@dataclass(frozen=True, slots=True)
class JobEvent:
    """One state transition of a job, with the job's identity."""

    event_id: int
    job_id: str
    state: str
    study_uid: str | None
    rule: str | None
    model: str | None


def events_after(conn: sqlite3.Connection, after: int, limit: int) -> list[JobEvent]:
    """At most ``limit`` transitions with an event id above ``after``, oldest first."""
    return [
        JobEvent(int(i), str(j), str(s), u, r, m)
        for i, j, s, u, r, m in _rows(
            conn,
            "SELECT e.id, e.job_id, e.state, j.study_uid, j.rule, j.model"
            " FROM job_events e LEFT JOIN jobs j ON j.job_id = e.job_id"
            " WHERE e.id > ? ORDER BY e.id LIMIT ?",
            (after, limit),
        )
    ]


class JobEventReader:
    """``events_after`` on a connection of its own, for the audit follower's thread.

    Parameters
    ----------
    db_path:
        The node's index (``data_dir/index.sqlite``).
    """

    def __init__(self, db_path: Path) -> None:
        self._db_path = db_path
        self._conn: sqlite3.Connection | None = None

    def __call__(self, after: int, limit: int) -> list[JobEvent]:
        """At most ``limit`` transitions after event id ``after`` (none before the job store
        has created its tables)."""
        if self._conn is None:
            self._conn = sqlite3.connect(self._db_path, timeout=30, check_same_thread=False)
            self._conn.execute("PRAGMA busy_timeout=30000")
        return events_after(self._conn, after, limit)

    def close(self) -> None:
        """Close the connection (it reopens on the next call)."""
        if self._conn is not None:
            self._conn.close()
            self._conn = None


@dataclass(frozen=True, slots=True)
class StudyJobs:
    """What retention needs to know of a study's jobs before it may remove the study."""

    routed_generation: int | None
    """Newest routed completion generation; None when routing is not recorded here at all."""
    active: bool
    """A job of the study is queued or running."""
    last_activity: float | None
    """When a job of the study last finished or changed."""


def study_jobs(conn: sqlite3.Connection, study_uid: str) -> StudyJobs:
    """Routing and job activity of one study."""
    routed: int | None = None
    if _has_table(conn, "routings"):
        row = conn.execute(
            "SELECT COALESCE(MAX(generation), 0) FROM routings WHERE study_uid=?", (study_uid,)
        ).fetchone()
        routed = int(row[0])
    active, last = False, None
    if _has_table(conn, "jobs"):
        busy, newest = conn.execute(
            "SELECT SUM(state IN ('queued','running')), MAX(COALESCE(finished_at, updated_at))"
            " FROM jobs WHERE study_uid=?",
            (study_uid,),
        ).fetchone()
        active = bool(busy)
        last = None if newest is None else float(newest)
    return StudyJobs(routed_generation=routed, active=active, last_activity=last)


def purge_study(conn: sqlite3.Connection, study_uid: str) -> tuple[list[str], int]:
    """Delete a study's jobs, their events and its routing records inside the caller's
    transaction; return the job ids (their result folders go too) and the number of result
    objects they had written."""
    if not _has_table(conn, "jobs"):
        return [], 0
    job_ids: list[str] = []
    objects = 0
    for job_id, outputs in conn.execute(
        "SELECT job_id, outputs FROM jobs WHERE study_uid=?", (study_uid,)
    ).fetchall():
        job_ids.append(str(job_id))
        if outputs:
            objects += len(json.loads(outputs).get("objects", []))
    conn.executemany("DELETE FROM job_events WHERE job_id=?", [(j,) for j in job_ids])
    conn.execute("DELETE FROM jobs WHERE study_uid=?", (study_uid,))
    if _has_table(conn, "routings"):
        conn.execute("DELETE FROM routings WHERE study_uid=?", (study_uid,))
    return job_ids, objects


class _JobRows:
    """The job queue as one of retention's ``StudyRows``."""

    def hold(self, conn: sqlite3.Connection, study_uid: str, generation: int) -> StudyHold:
        jobs = study_jobs(conn, study_uid)
        not_routed = jobs.routed_generation is not None and jobs.routed_generation < generation
        return StudyHold(keep=not_routed or jobs.active, last_activity=jobs.last_activity)

    def purge(self, conn: sqlite3.Connection, study_uid: str) -> Purged:
        job_ids, objects = purge_study(conn, study_uid)
        return Purged(job_ids=job_ids, result_objects=objects)


#: Hand this to ``node.store.retention.Retention(study_rows=...)``.
JOB_ROWS: StudyRows = _JobRows()
