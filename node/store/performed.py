"""Workitems this node performs for a UPS-RS Task Manager: table ``performed_workitems``.

ainode as a Task Performer (issue 23 section 1, docs/workflow.md): before it asks a manager to
move a workitem to IN PROGRESS, the performer writes the workitem's UID and the new Transaction
UID here (``synchronous=FULL``), so a node restarted or killed at any point finds every workitem
it may hold and the Transaction UID that proves it, and finishes it (COMPLETED or CANCELED with
the reason) instead of leaving it IN PROGRESS for ever.
"""

from __future__ import annotations

import enum
import json
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from node.store.migrate import migrate
from node.store.sqlite import ThreadConnections

__all__ = ["PerformedState", "PerformedStore", "PerformedWorkitem"]

_STEPS = (
    """
    CREATE TABLE performed_workitems (
        source TEXT NOT NULL,
        uid TEXT NOT NULL,
        transaction_uid TEXT NOT NULL,
        state TEXT NOT NULL,
        study_uids TEXT NOT NULL DEFAULT '[]',
        reason TEXT,
        claimed_at REAL NOT NULL,
        updated_at REAL NOT NULL,
        PRIMARY KEY (source, uid)
    );
    CREATE INDEX performed_state ON performed_workitems(state)
    """,
)

_COLS = "source, uid, transaction_uid, state, study_uids, reason, claimed_at, updated_at"


class PerformedState(enum.StrEnum):
    """Where this node is with a workitem it performs; the value is the stored string."""

    #: the Transaction UID is stored; the manager may or may not have accepted the claim
    CLAIMING = "claiming"
    #: the manager accepted the claim (IN PROGRESS with our Transaction UID)
    IN_PROGRESS = "in-progress"
    COMPLETED = "completed"
    CANCELED = "canceled"
    #: another performer won the claim (409), or the manager finished the workitem without us
    LOST = "lost"

    @property
    def is_final(self) -> bool:
        """True once nothing more is to be done for the workitem."""
        return self in (PerformedState.COMPLETED, PerformedState.CANCELED, PerformedState.LOST)


@dataclass(frozen=True, slots=True)
class PerformedWorkitem:
    """One workitem this node claimed (or tried to) at one source."""

    source: str
    uid: str
    transaction_uid: str
    state: PerformedState
    study_uids: list[str]
    reason: str | None
    claimed_at: float
    updated_at: float

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict, without the Transaction UID (it proves ownership: never shown)."""
        return {
            "source": self.source,
            "uid": self.uid,
            "state": self.state.value,
            "study_uids": list(self.study_uids),
            "reason": self.reason,
            "claimed_at": self.claimed_at,
            "updated_at": self.updated_at,
        }


class PerformedStore:
    """The ``performed_workitems`` table of the node's SQLite index file.

    Parameters
    ----------
    db_path:
        ``data_dir/index.sqlite``.
    """

    def __init__(self, db_path: Path) -> None:
        self._db = ThreadConnections(db_path)
        migrate(self._conn(), "performed_workitems", _STEPS)

    def _conn(self) -> sqlite3.Connection:
        return self._db.conn()

    def begin(self, *, source: str, uid: str, transaction_uid: str) -> PerformedWorkitem:
        """Record a claim about to be made (before the manager is asked).

        A workitem tried before and lost is tried again with the new Transaction UID.
        """
        now = time.time()
        self._conn().execute(
            "INSERT INTO performed_workitems(source, uid, transaction_uid, state, claimed_at,"
            " updated_at) VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT(source, uid) DO UPDATE SET"
            " transaction_uid = excluded.transaction_uid, state = excluded.state,"
            " reason = NULL, claimed_at = excluded.claimed_at, updated_at = excluded.updated_at",
            (source, uid, transaction_uid, PerformedState.CLAIMING.value, now, now),
        )
        return self.get(source=source, uid=uid)

    def set_state(
        self,
        *,
        source: str,
        uid: str,
        state: PerformedState,
        reason: str | None = None,
        study_uids: list[str] | None = None,
    ) -> None:
        """Move a recorded workitem to ``state`` (with the reason of a cancel or loss)."""
        sets = ["state = ?", "updated_at = ?", "reason = COALESCE(?, reason)"]
        args: list[Any] = [PerformedState(state).value, time.time(), reason]
        if study_uids is not None:
            sets.append("study_uids = ?")
            args.append(json.dumps(study_uids))
        self._conn().execute(
            f"UPDATE performed_workitems SET {', '.join(sets)} WHERE source = ? AND uid = ?",
            (*args, source, uid),
        )

    def get(self, *, source: str, uid: str) -> PerformedWorkitem:
        """One recorded workitem; ``KeyError`` when this node never claimed it."""
        row = (
            self._conn()
            .execute(
                f"SELECT {_COLS} FROM performed_workitems WHERE source = ? AND uid = ?",
                (source, uid),
            )
            .fetchone()
        )
        if row is None:
            raise KeyError(uid)
        return _record(row)

    def unfinished(self, source: str) -> list[PerformedWorkitem]:
        """Workitems of ``source`` claimed (or being claimed) and not yet finished, oldest first."""
        finals = [s.value for s in PerformedState if s.is_final]
        rows = self._conn().execute(
            f"SELECT {_COLS} FROM performed_workitems WHERE source = ? AND state NOT IN"
            f" ({','.join('?' * len(finals))}) ORDER BY claimed_at",
            (source, *finals),
        )
        return [_record(r) for r in rows]

    def list(self, *, limit: int = 200) -> list[PerformedWorkitem]:
        """Every recorded workitem, newest first."""
        rows = self._conn().execute(
            f"SELECT {_COLS} FROM performed_workitems ORDER BY claimed_at DESC LIMIT ?", (limit,)
        )
        return [_record(r) for r in rows]


def _record(row: tuple[Any, ...]) -> PerformedWorkitem:
    source, uid, txn, state, studies, reason, claimed, updated = row
    return PerformedWorkitem(
        source=source,
        uid=uid,
        transaction_uid=txn,
        state=PerformedState(state),
        study_uids=list(json.loads(studies)),
        reason=reason,
        claimed_at=claimed,
        updated_at=updated,
    )
