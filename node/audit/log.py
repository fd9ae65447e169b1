"""Append-only audit log: ``data_dir/audit.log`` (JSON lines) and the ``audit`` table.

Each record is an event name, a UTC time, the actor (``node`` for the node's own work, else
who called the API) and identifiers only: UIDs, job/delivery ids, AE titles, sha256 hashes.
No patient data is ever written.  The file is opened in append mode and each line is flushed
and fsync'd before ``record`` returns, so an audited action is on disk before it is answered.
The mapping of these events to DICOM audit messages (PS3.15 A.5) is in docs/audit.md.
"""

from __future__ import annotations

import json
import logging
import os
import sqlite3
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from node.store.migrate import migrate

__all__ = ["AuditLog", "AuditRecord"]

log = logging.getLogger(__name__)

_STEPS = [
    """
    CREATE TABLE audit (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        ts REAL NOT NULL,
        event TEXT NOT NULL,
        actor TEXT NOT NULL,
        outcome TEXT NOT NULL,
        study_uid TEXT,
        detail TEXT NOT NULL DEFAULT '{}'
    );
    CREATE INDEX audit_study ON audit(study_uid, id)
    """,
    """
    CREATE TABLE audit_cursor (
        name TEXT PRIMARY KEY,
        position INTEGER NOT NULL
    )
    """,
]


@dataclass(frozen=True, slots=True)
class AuditRecord:
    """One audited event."""

    ts: float
    event: str
    actor: str
    outcome: str = "success"
    study_uid: str | None = None
    detail: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        """The JSON line written to ``audit.log``."""
        return {
            "ts": self.ts,
            "event": self.event,
            "actor": self.actor,
            "outcome": self.outcome,
            "study_uid": self.study_uid,
            **self.detail,
        }


class AuditLog:
    """Writes audit records to ``data_dir/audit.log`` and the ``audit`` table of the index.

    Parameters
    ----------
    data_dir:
        The node's data folder (the file and ``index.sqlite`` live there).
    """

    def __init__(self, data_dir: Path) -> None:
        self.path = Path(data_dir) / "audit.log"
        self._db_path = Path(data_dir) / "index.sqlite"
        self._lock = threading.Lock()
        self._conn = sqlite3.connect(
            self._db_path, timeout=30, isolation_level=None, check_same_thread=False
        )
        self._conn.execute("PRAGMA busy_timeout=30000")
        migrate(self._conn, "audit", _STEPS)

    def record(
        self,
        event: str,
        *,
        actor: str = "node",
        outcome: str = "success",
        study_uid: str | None = None,
        **detail: Any,
    ) -> AuditRecord:
        """Append one record (file line fsync'd, then the table row).

        Parameters
        ----------
        event:
            Stable event name (``rules.changed``, ``job.retry``, ``login``...).
        actor:
            Who: ``node``, ``token`` (an authenticated API client) or ``anonymous``.
        outcome:
            ``success`` or ``failure`` (PS3.15 A.5 EventOutcomeIndicator 0 / 4).
        study_uid, detail:
            Identifiers only; never patient data.
        """
        rec = AuditRecord(
            ts=time.time(),
            event=event,
            actor=actor,
            outcome=outcome,
            study_uid=study_uid,
            detail=dict(detail),
        )
        line = json.dumps(rec.to_json(), sort_keys=True, default=str) + "\n"
        with self._lock:
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o640)
            try:
                os.write(fd, line.encode("utf-8"))
                os.fsync(fd)
            finally:
                os.close(fd)
            self._conn.execute(
                "INSERT INTO audit(ts, event, actor, outcome, study_uid, detail)"
                " VALUES (?,?,?,?,?,?)",
                (
                    rec.ts,
                    event,
                    actor,
                    outcome,
                    study_uid,
                    json.dumps(rec.detail, sort_keys=True, default=str),
                ),
            )
        log.info("audit.recorded", extra={"event": event, "study_uid": study_uid})
        return rec

    def list(
        self, *, study_uid: str | None = None, event: str | None = None, limit: int = 200
    ) -> list[AuditRecord]:
        """Records from the table, newest first."""
        sql = "SELECT ts, event, actor, outcome, study_uid, detail FROM audit"
        where, args = [], []
        if study_uid is not None:
            where.append("study_uid = ?")
            args.append(study_uid)
        if event is not None:
            where.append("event = ?")
            args.append(event)
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY id DESC LIMIT ?"
        with self._lock:
            rows = self._conn.execute(sql, (*args, limit)).fetchall()
        return [
            AuditRecord(
                ts=r[0],
                event=r[1],
                actor=r[2],
                outcome=r[3],
                study_uid=r[4],
                detail=json.loads(r[5]),
            )
            for r in rows
        ]

    def recorded_values(self, event: str, key: str) -> set[str]:
        """Every value of the detail field ``key`` among the records of ``event`` (e.g. the
        note ids of the ``results.superseded`` records)."""
        with self._lock:
            rows = self._conn.execute(
                "SELECT json_extract(detail, ?) FROM audit WHERE event = ?", (f"$.{key}", event)
            ).fetchall()
        return {str(r[0]) for r in rows if r[0] is not None}

    def cursor(self, name: str) -> int | None:
        """Where the follower ``name`` stopped (e.g. the last audited ``job_events.id``)."""
        with self._lock:
            row = self._conn.execute(
                "SELECT position FROM audit_cursor WHERE name = ?", (name,)
            ).fetchone()
        return None if row is None else int(row[0])

    def set_cursor(self, name: str, position: int) -> None:
        """Remember where the follower ``name`` stopped."""
        with self._lock:
            self._conn.execute(
                "INSERT INTO audit_cursor(name, position) VALUES (?, ?)"
                " ON CONFLICT(name) DO UPDATE SET position = excluded.position",
                (name, position),
            )

    def close(self) -> None:
        """Close the table connection."""
        with self._lock:
            self._conn.close()
