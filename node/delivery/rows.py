"""The outbox table: its schema (migrated as component ``outbox``), its row type ``Delivery``,
and reading the UIDs of an object to enqueue."""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pydicom

from node.errors import ResultError
from node.store.migrate import migrate
from node.types import DeliveryState, Instance, ResultObject

__all__ = [
    "COLUMNS",
    "FORWARD",
    "REFUSAL_TTL_SECONDS",
    "STEPS",
    "Delivery",
    "ObjectUids",
    "connect",
    "read_object_uids",
    "row_to_delivery",
]

#: ``job_id`` of rows that forward received originals (rules' ``send_to``).
FORWARD = "forward"

STEPS = [
    """
    CREATE TABLE outbox (
        id INTEGER PRIMARY KEY,
        destination TEXT NOT NULL,
        sop_uid TEXT NOT NULL,
        sop_class_uid TEXT NOT NULL,
        study_uid TEXT NOT NULL,
        series_uid TEXT NOT NULL,
        transfer_syntax_uid TEXT NOT NULL,
        path TEXT NOT NULL,
        fallback_path TEXT,
        use_fallback INTEGER NOT NULL DEFAULT 0,
        job_id TEXT NOT NULL,
        state TEXT NOT NULL,
        attempts INTEGER NOT NULL DEFAULT 0,
        next_attempt_at REAL NOT NULL,
        created_at REAL NOT NULL,
        updated_at REAL NOT NULL,
        delivered_at REAL,
        last_status INTEGER,
        last_error TEXT,
        sent_sop_uid TEXT,
        sent_transfer_syntax_uid TEXT,
        UNIQUE (sop_uid, destination)
    );
    CREATE INDEX outbox_due ON outbox (destination, state, next_attempt_at);
    CREATE INDEX outbox_study ON outbox (study_uid);
    CREATE TABLE outbox_refusal (
        destination TEXT NOT NULL,
        sop_class_uid TEXT NOT NULL,
        transfer_syntax_uid TEXT NOT NULL,
        learnt_at REAL NOT NULL,
        PRIMARY KEY (destination, sop_class_uid, transfer_syntax_uid)
    )
    """,
]

COLUMNS = (
    "id, destination, sop_uid, sop_class_uid, study_uid, series_uid, transfer_syntax_uid, path, "
    "fallback_path, use_fallback, job_id, state, attempts, next_attempt_at, created_at, "
    "updated_at, delivered_at, last_status, last_error, sent_sop_uid, sent_transfer_syntax_uid"
)
#: A refusal learnt from a peer is trusted this long, then the peer is asked again.
REFUSAL_TTL_SECONDS = 3600.0


@dataclass(frozen=True, slots=True)
class Delivery:
    """One row of the outbox: one object to one destination."""

    id: int
    destination: str
    sop_uid: str
    sop_class_uid: str
    study_uid: str
    series_uid: str
    transfer_syntax_uid: str
    path: Path
    fallback_path: Path | None
    is_fallback_used: bool
    job_id: str
    state: DeliveryState
    attempts: int
    next_attempt_at: float
    created_at: float
    updated_at: float
    delivered_at: float | None
    last_status: int | None
    last_error: str | None
    sent_sop_uid: str | None
    sent_transfer_syntax_uid: str | None

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict (paths as strings, state as its value)."""
        return {
            "id": self.id,
            "destination": self.destination,
            "sop_uid": self.sop_uid,
            "sop_class_uid": self.sop_class_uid,
            "study_uid": self.study_uid,
            "series_uid": self.series_uid,
            "job_id": self.job_id,
            "state": self.state.value,
            "attempts": self.attempts,
            "next_attempt_at": self.next_attempt_at,
            "created_at": self.created_at,
            "delivered_at": self.delivered_at,
            "last_status": self.last_status,
            "last_error": self.last_error,
            "is_fallback_used": self.is_fallback_used,
            "sent_sop_uid": self.sent_sop_uid,
            "sent_transfer_syntax_uid": self.sent_transfer_syntax_uid,
        }


def row_to_delivery(r: sqlite3.Row | tuple[Any, ...]) -> Delivery:
    return Delivery(
        id=int(r[0]),
        destination=r[1],
        sop_uid=r[2],
        sop_class_uid=r[3],
        study_uid=r[4],
        series_uid=r[5],
        transfer_syntax_uid=r[6],
        path=Path(r[7]),
        fallback_path=Path(r[8]) if r[8] else None,
        is_fallback_used=bool(r[9]),
        job_id=r[10],
        state=DeliveryState(r[11]),
        attempts=int(r[12]),
        next_attempt_at=float(r[13]),
        created_at=float(r[14]),
        updated_at=float(r[15]),
        delivered_at=r[16],
        last_status=r[17],
        last_error=r[18],
        sent_sop_uid=r[19],
        sent_transfer_syntax_uid=r[20],
    )


def connect(db_path: Path) -> sqlite3.Connection:
    """Open the index file (WAL, 10 s busy timeout) and bring the outbox tables up to date."""
    db_path.parent.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(str(db_path), timeout=10.0, check_same_thread=False)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA busy_timeout=10000")
    conn.execute("PRAGMA synchronous=FULL")
    migrate(conn, "outbox", STEPS)
    return conn


@dataclass(frozen=True, slots=True)
class ObjectUids:
    """What an outbox row records of the object it sends."""

    sop_uid: str
    sop_class_uid: str
    study_uid: str
    series_uid: str
    transfer_syntax_uid: str

    @classmethod
    def of(cls, obj: Instance | ResultObject) -> ObjectUids:
        """The UIDs a stage already knows of a stored original or a result object."""
        return cls(
            sop_uid=obj.sop_uid,
            sop_class_uid=obj.sop_class_uid,
            study_uid=obj.study_uid,
            series_uid=obj.series_uid,
            transfer_syntax_uid=obj.transfer_syntax_uid,
        )


def read_object_uids(path: Path) -> ObjectUids:
    try:
        ds = pydicom.dcmread(
            path,
            stop_before_pixels=True,
            specific_tags=[
                "SOPInstanceUID",
                "SOPClassUID",
                "StudyInstanceUID",
                "SeriesInstanceUID",
            ],
        )
        meta = ds.file_meta
        return ObjectUids(
            sop_uid=str(ds.SOPInstanceUID),
            sop_class_uid=str(ds.SOPClassUID),
            study_uid=str(ds.StudyInstanceUID),
            series_uid=str(ds.SeriesInstanceUID),
            transfer_syntax_uid=str(meta.TransferSyntaxUID),
        )
    except (OSError, AttributeError, pydicom.errors.InvalidDicomError) as exc:
        raise ResultError(
            f"cannot enqueue {path.name}: not a readable DICOM file with SOP/Study/Series UIDs "
            f"and a transfer syntax ({exc})"
        ) from exc
