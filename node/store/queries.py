"""Read-only questions the metrics collector and the console dashboard ask of the store's
tables (``studies``, ``events``, ``instances``: ``node.store.index``; ``feedback``:
``node.store.feedback``), on a read-only connection of their own.  A table that does not exist
yet reads as empty.
"""

from __future__ import annotations

import sqlite3
from typing import Any

__all__ = [
    "completion_times",
    "count_events",
    "feedback_by_model_and_verdict",
    "stored_bytes",
    "studies_by_state",
    "study_arrival_times",
]


def _rows(conn: sqlite3.Connection, sql: str, args: tuple[Any, ...] = ()) -> list[Any]:
    try:
        return conn.execute(sql, args).fetchall()
    except sqlite3.OperationalError:  # that component's table does not exist yet
        return []


def studies_by_state(conn: sqlite3.Connection) -> list[tuple[str, int]]:
    """(state, number of studies): receiving or complete."""
    return [
        (str(s), int(n))
        for s, n in _rows(conn, "SELECT state, COUNT(*) FROM studies GROUP BY state")
    ]


def count_events(conn: sqlite3.Connection, kind: str) -> int:
    """Number of index events of one kind (``study-completed``, ``quarantined``, ...)."""
    rows = _rows(conn, "SELECT COUNT(*) FROM events WHERE kind = ?", (kind,))
    return int(rows[0][0]) if rows else 0


def stored_bytes(conn: sqlite3.Connection) -> int:
    """Bytes of the stored instances."""
    rows = _rows(conn, "SELECT COALESCE(SUM(size_bytes), 0) FROM instances")
    return int(rows[0][0]) if rows else 0


def study_arrival_times(conn: sqlite3.Connection, since: float) -> list[float]:
    """When each study first received at or after ``since`` arrived."""
    return [
        float(t)
        for (t,) in _rows(
            conn, "SELECT first_received FROM studies WHERE first_received >= ?", (since,)
        )
    ]


def completion_times(conn: sqlite3.Connection, since: float) -> list[float]:
    """When each study completion (every generation) at or after ``since`` happened."""
    return [
        float(t)
        for (t,) in _rows(
            conn, "SELECT ts FROM events WHERE kind = 'study-completed' AND ts >= ?", (since,)
        )
    ]


def feedback_by_model_and_verdict(conn: sqlite3.Connection) -> list[tuple[str, str, int]]:
    """(model, verdict, number of radiologists' verdicts)."""
    return [
        (str(m), str(v), int(n))
        for m, v, n in _rows(
            conn, "SELECT model, verdict, COUNT(*) FROM feedback GROUP BY model, verdict"
        )
    ]
