"""Read-only questions other components ask of the outbox, and the purge of one study.

The delivery package owns ``outbox`` and ``outbox_refusal`` (schema in ``node.delivery.rows``,
writes in ``node.delivery.outbox``).  The metrics collector, the console dashboard and
retention ask these questions on a connection of their own, so each function takes a
``sqlite3.Connection``.  A table that does not exist yet reads as empty.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from typing import Any

from node.store.retention import Purged, StudyHold, StudyRows

__all__ = [
    "DELIVERY_ROWS",
    "DestinationCounts",
    "StudyDeliveries",
    "count_by_destination_and_state",
    "count_by_state",
    "dead_by_destination",
    "delivered_times",
    "purge_study",
    "study_deliveries",
]


def _rows(conn: sqlite3.Connection, sql: str, args: tuple[Any, ...] = ()) -> list[Any]:
    try:
        return conn.execute(sql, args).fetchall()
    except sqlite3.OperationalError:  # the outbox has not created its tables yet
        return []


def _has_outbox(conn: sqlite3.Connection) -> bool:
    row = conn.execute(
        "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'outbox'"
    ).fetchone()
    return row is not None


@dataclass(frozen=True, slots=True)
class DestinationCounts:
    """Outbox rows of one destination in one state."""

    destination: str
    state: str
    rows: int
    attempts: int
    """Send attempts recorded on those rows."""
    failing: int
    """Rows whose last attempt failed and that are not delivered."""


def count_by_destination_and_state(conn: sqlite3.Connection) -> list[DestinationCounts]:
    """Row, attempt and failure counts per (destination, state)."""
    return [
        DestinationCounts(str(d), str(s), int(n), int(tried), int(failed or 0))
        for d, s, n, tried, failed in _rows(
            conn,
            "SELECT destination, state, COUNT(*), COALESCE(SUM(attempts), 0),"
            " SUM(CASE WHEN last_error IS NOT NULL AND state <> 'delivered' THEN 1 ELSE 0 END)"
            " FROM outbox GROUP BY destination, state",
        )
    ]


def count_by_state(conn: sqlite3.Connection) -> dict[str, int]:
    """Number of outbox rows per state."""
    return {str(s): int(n) for s, n in _rows(conn, "SELECT state, COUNT(*) FROM outbox GROUP BY 1")}


def dead_by_destination(conn: sqlite3.Connection) -> dict[str, int]:
    """Number of dead-lettered rows per destination."""
    return {
        str(d): int(n)
        for d, n in _rows(
            conn, "SELECT destination, COUNT(*) FROM outbox WHERE state = 'dead' GROUP BY 1"
        )
    }


def delivered_times(conn: sqlite3.Connection, since: float) -> list[float]:
    """When each object delivered at or after ``since`` was delivered."""
    return [
        float(t)
        for (t,) in _rows(
            conn,
            "SELECT delivered_at FROM outbox WHERE state = 'delivered' AND delivered_at >= ?",
            (since,),
        )
    ]


@dataclass(frozen=True, slots=True)
class StudyDeliveries:
    """What retention needs to know of a study's deliveries before it may remove the study."""

    pending: bool
    """An object of the study still waits to be sent."""
    last_activity: float | None
    """When an outbox row of the study last changed."""


def study_deliveries(conn: sqlite3.Connection, study_uid: str) -> StudyDeliveries:
    """Delivery activity of one study."""
    if not _has_outbox(conn):
        return StudyDeliveries(pending=False, last_activity=None)
    pending, last = conn.execute(
        "SELECT SUM(state = 'pending'), MAX(updated_at) FROM outbox WHERE study_uid=?",
        (study_uid,),
    ).fetchone()
    return StudyDeliveries(
        pending=bool(pending), last_activity=None if last is None else float(last)
    )


def purge_study(conn: sqlite3.Connection, study_uid: str) -> int:
    """Delete a study's outbox rows inside the caller's transaction; return how many."""
    if not _has_outbox(conn):
        return 0
    return conn.execute("DELETE FROM outbox WHERE study_uid=?", (study_uid,)).rowcount


class _DeliveryRows:
    """The outbox as one of retention's ``StudyRows``."""

    def hold(self, conn: sqlite3.Connection, study_uid: str, generation: int) -> StudyHold:
        del generation  # deliveries do not depend on the completion generation
        d = study_deliveries(conn, study_uid)
        return StudyHold(keep=d.pending, last_activity=d.last_activity)

    def purge(self, conn: sqlite3.Connection, study_uid: str) -> Purged:
        purge_study(conn, study_uid)
        return Purged()


#: Hand this to ``node.store.retention.Retention(study_rows=...)``.
DELIVERY_ROWS: StudyRows = _DeliveryRows()
