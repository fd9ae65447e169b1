"""Radiologist feedback on results: one durable row per verdict (table ``feedback``).

A reader accepts, rejects or modifies a result object (its SOP Instance UID) or one finding in
it (its Tracking Identifier / Tracking UID), with an optional comment: the "standardized logging
of radiologist acceptance and override" of the ACR-SIIM practice parameter for imaging AI.  Rows
are never updated: a second verdict on the same target is a new row (the history is the record).

Each row keeps the model name, version and Device UID that produced the target, so acceptance
can be counted per model version (the model inventory, ``ainode_feedback_total``).  Writes run in
``BEGIN IMMEDIATE`` transactions with ``synchronous=FULL`` (like the job store): an answered
``POST /api/feedback`` survives a power loss.  Comments are free text and may contain patient
data: they are stored here and returned by the API, never logged or audited.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Mapping
from contextlib import AbstractContextManager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal, get_args

from node.store.migrate import migrate
from node.store.sqlite import ThreadConnections

__all__ = [
    "COMMENT_MAX",
    "VERDICTS",
    "FeedbackRecord",
    "FeedbackStore",
    "Verdict",
    "acceptance",
]

Verdict = Literal["accept", "reject", "modify"]
#: The verdicts, in display order.
VERDICTS: tuple[str, ...] = get_args(Verdict)
#: Longest comment / ``modified`` text accepted (characters).
COMMENT_MAX = 2000

_STEPS = (
    """
    CREATE TABLE feedback (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        created_at REAL NOT NULL,
        actor TEXT NOT NULL,
        study_uid TEXT NOT NULL,
        job_id TEXT NOT NULL,
        model TEXT NOT NULL,
        model_version TEXT,
        device_uid TEXT,
        sop_uid TEXT NOT NULL,
        finding_id TEXT,
        finding_uid TEXT,
        verdict TEXT NOT NULL CHECK (verdict IN ('accept', 'reject', 'modify')),
        comment TEXT,
        modified TEXT
    );
    CREATE INDEX feedback_study ON feedback(study_uid, id);
    CREATE INDEX feedback_job ON feedback(job_id, id);
    CREATE INDEX feedback_model ON feedback(model, model_version, verdict)
    """,
)

_COLS = (
    "id, created_at, actor, study_uid, job_id, model, model_version, device_uid, sop_uid,"
    " finding_id, finding_uid, verdict, comment, modified"
)


@dataclass(frozen=True, slots=True)
class FeedbackRecord:
    """One stored verdict.

    ``actor`` is the principal (``user:NAME``, ``token:NAME``, ``anonymous`` on an open node);
    ``finding_id`` / ``finding_uid`` are None for a verdict on the whole result object.
    """

    id: int
    created_at: float
    actor: str
    study_uid: str
    job_id: str
    model: str
    model_version: str | None
    device_uid: str | None
    sop_uid: str
    finding_id: str | None
    finding_uid: str | None
    verdict: str
    comment: str | None
    modified: str | None

    def to_json(self) -> dict[str, Any]:
        """Plain JSON form for the API and the console."""
        return asdict(self)


class FeedbackStore:
    """The ``feedback`` table of the node's SQLite index file.

    Parameters
    ----------
    db_path:
        ``data_dir/index.sqlite``.
    """

    def __init__(self, db_path: Path) -> None:
        self._db = ThreadConnections(db_path)
        migrate(self._conn(), "feedback", _STEPS)

    def _conn(self) -> sqlite3.Connection:
        return self._db.conn()

    def _write(self) -> AbstractContextManager[sqlite3.Connection]:
        return self._db.write()

    def add(
        self,
        *,
        actor: str,
        study_uid: str,
        job_id: str,
        model: str,
        model_version: str | None,
        device_uid: str | None,
        sop_uid: str,
        verdict: str,
        finding_id: str | None = None,
        finding_uid: str | None = None,
        comment: str | None = None,
        modified: str | None = None,
        now: float | None = None,
    ) -> FeedbackRecord:
        """Store one verdict (committed when this returns) and return it with its id.

        Raises
        ------
        ValueError
            ``verdict`` is not one of ``VERDICTS``, or a text is longer than ``COMMENT_MAX``.
        """
        if verdict not in VERDICTS:
            raise ValueError(f"verdict must be one of {', '.join(VERDICTS)}, not {verdict!r}")
        for name, text in (("comment", comment), ("modified", modified)):
            if text is not None and len(text) > COMMENT_MAX:
                raise ValueError(f"{name} is longer than {COMMENT_MAX} characters")
        ts = time.time() if now is None else now
        values = (
            ts,
            actor,
            study_uid,
            job_id,
            model,
            model_version,
            device_uid,
            sop_uid,
            finding_id,
            finding_uid,
            verdict,
            comment,
            modified,
        )
        with self._write() as conn:
            cur = conn.execute(
                f"INSERT INTO feedback({_COLS.removeprefix('id, ')})"
                f" VALUES ({','.join('?' * len(values))})",
                values,
            )
            row_id = cur.lastrowid
        assert row_id is not None
        return FeedbackRecord(row_id, *values)

    def list(
        self,
        *,
        study_uid: str | None = None,
        job_id: str | None = None,
        model: str | None = None,
        verdict: str | None = None,
        limit: int = 200,
    ) -> list[FeedbackRecord]:
        """Verdicts, newest first, filtered by study, job, model and/or verdict."""
        where: list[str] = []
        args: list[Any] = []
        for column, value in (
            ("study_uid", study_uid),
            ("job_id", job_id),
            ("model", model),
            ("verdict", verdict),
        ):
            if value is not None:
                where.append(f"{column} = ?")
                args.append(value)
        sql = f"SELECT {_COLS} FROM feedback"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY id DESC LIMIT ?"
        args.append(limit)
        return [FeedbackRecord(*row) for row in self._conn().execute(sql, args)]

    def counts(self) -> dict[tuple[str, str | None], dict[str, int]]:
        """``{(model, version): {verdict: n}}`` over every stored verdict."""
        out: dict[tuple[str, str | None], dict[str, int]] = {}
        for model, version, verdict, n in self._conn().execute(
            "SELECT model, model_version, verdict, COUNT(*) FROM feedback"
            " GROUP BY model, model_version, verdict"
        ):
            out.setdefault((model, version), {})[verdict] = int(n)
        return out

    def close(self) -> None:
        """Close this thread's connection (others close with their threads)."""
        self._db.close()


def acceptance(counts: Mapping[str, int]) -> dict[str, Any]:
    """``{accept, reject, modify, total, acceptance_rate}`` of one model version's counts.

    ``acceptance_rate`` is accept / all verdicts (None without any verdict), rounded to 4 places.
    """
    row: dict[str, Any] = {v: int(counts.get(v, 0)) for v in VERDICTS}
    total = sum(row.values())
    row["total"] = total
    row["acceptance_rate"] = round(row["accept"] / total, 4) if total else None
    return row
