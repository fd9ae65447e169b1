"""Rejecting delivered results: an IOCM rejection note through the outbox, recorded durably.

A result set is rejected when a newer job of the same study, rule and model (and series)
delivers (``superseded``) or when an operator retracts it (``retracted``: CLI, API, console).
``Rejections.reject`` then, for the jobs named:

1. takes their outbox rows that are not yet covered by a rejection;
2. records the rejection (``rejections`` table: kind, reason, actor, jobs, objects, the note)
   and which objects it covers (``rejected_objects``, one row per SOP Instance UID);
3. builds the IOCM rejection note (KOS "Rejected for Quality Reasons", DCM 113001, CID 7011;
   ``node.results.rejection``) from the rejected objects' headers and writes it durably under
   ``data_dir/results/rejections/<note_id>.dcm``;
4. withdraws the rows that did not go out yet (state ``withdrawn``: never sent, never retried);
5. queues the note for every destination that received an old object (or may be receiving one
   right now) and accepts notes (``rejection_notes``, default on; on Orthanc also
   ``delete_rejected``: the Orthanc sender then deletes the referenced instances by REST);
6. marks the rejection queued.

Every step is idempotent and the note's id -- and so its UIDs (PS3.5 B.2) and its content
date-time, frozen in the record -- derive from the rejected SOP Instance UIDs, so a crash at
any point is repaired by running it again (``resume`` at start-up finishes rejections that
were recorded but not queued) and the outbox's (SOP Instance UID, destination) key sends the
note once.  A row that a destination's worker was sending while it was withdrawn ends
``delivered``; the outbox then queues the note for that destination too
(``notes_for_delivered``).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import logging
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from node.delivery.rows import FORWARD
from node.errors import ConflictError, NotFoundError, ResultError
from node.imaging.sop_classes import KOS_CLASS
from node.store.durable import write_durably
from node.store.migrate import migrate
from node.types import DeliveryState, RejectionKind

__all__ = ["REASON_MAX", "Rejection", "Rejections", "accepts_notes"]

log = logging.getLogger(__name__)

#: Longest reason kept (the note's Key Object Description is at most 1024 characters).
REASON_MAX = 1024

STEPS = [
    """
    CREATE TABLE rejections (
        note_id TEXT PRIMARY KEY,
        study_uid TEXT NOT NULL,
        kind TEXT NOT NULL,
        reason TEXT NOT NULL,
        actor TEXT NOT NULL,
        job_ids TEXT NOT NULL,
        superseded_by TEXT,
        rejected TEXT NOT NULL,
        note_sop_uid TEXT,
        note_path TEXT,
        destinations TEXT NOT NULL DEFAULT '[]',
        created_at REAL NOT NULL,
        queued_at REAL
    );
    CREATE INDEX rejections_study ON rejections (study_uid);
    CREATE TABLE rejected_objects (
        sop_uid TEXT PRIMARY KEY,
        note_id TEXT NOT NULL,
        job_id TEXT NOT NULL
    );
    CREATE INDEX rejected_objects_job ON rejected_objects (job_id)
    """,
]

_COLS = (
    "note_id, study_uid, kind, reason, actor, job_ids, superseded_by, rejected, note_sop_uid,"
    " note_path, destinations, created_at, queued_at"
)


#: Key Object Selection Document Storage (PS3.4 B.5): the SOP class of a rejection note


def accepts_notes(config: Any) -> bool:
    """Whether a destination gets rejection notes: it deletes rejected results on receiving one
    (Orthanc ``delete_rejected``), or it takes them (``rejection_notes``) and its
    ``sop_classes``, when listed, include Key Object Selection."""
    if getattr(config, "delete_rejected", False):
        return True
    if not getattr(config, "rejection_notes", True):
        return False
    allowed = getattr(config, "sop_classes", None)
    return allowed is None or KOS_CLASS in allowed


@dataclass(frozen=True, slots=True)
class Rejection:
    """One rejection of results, as recorded."""

    note_id: str
    study_uid: str
    kind: RejectionKind
    reason: str
    actor: str
    job_ids: tuple[str, ...]
    superseded_by: str | None
    rejected_sop_uids: tuple[str, ...]
    note_sop_uid: str | None
    note_path: Path | None
    destinations: tuple[str, ...]
    created_at: float
    queued_at: float | None

    def to_json(self) -> dict[str, Any]:
        """Plain JSON form for the CLI and the API (no paths)."""
        return {
            "note_id": self.note_id,
            "study_uid": self.study_uid,
            "kind": self.kind.value,
            "reason": self.reason,
            "actor": self.actor,
            "job_ids": list(self.job_ids),
            "superseded_by": self.superseded_by,
            "rejected_sop_uids": list(self.rejected_sop_uids),
            "note_sop_uid": self.note_sop_uid,
            "destinations": list(self.destinations),
            "created_at": self.created_at,
            "queued_at": self.queued_at,
        }


def _rejection(r: Sequence[Any]) -> Rejection:
    return Rejection(
        note_id=r[0],
        study_uid=r[1],
        kind=RejectionKind(r[2]),
        reason=r[3],
        actor=r[4],
        job_ids=tuple(json.loads(r[5])),
        superseded_by=r[6],
        rejected_sop_uids=tuple(json.loads(r[7])),
        note_sop_uid=r[8],
        note_path=Path(r[9]) if r[9] else None,
        destinations=tuple(json.loads(r[10])),
        created_at=float(r[11]),
        queued_at=float(r[12]) if r[12] is not None else None,
    )


@dataclass(frozen=True, slots=True)
class _Target:
    """An object to reject: its SOP Instance UID, its file and the job that made it."""

    sop_uid: str
    path: Path
    job_id: str


class Rejections:
    """Rejections of delivered results (tables ``rejections`` and ``rejected_objects``).

    Parameters
    ----------
    outbox:
        The node's outbox (``node.delivery.outbox.Outbox``); its database holds the tables.
    data_dir:
        The node's data folder (notes go to ``results/rejections/``).
    clock:
        Seconds since the epoch (frozen into a note's content date-time).
    """

    def __init__(self, outbox: Any, *, data_dir: Path, clock: Any = time.time) -> None:
        self._outbox = outbox
        self._data_dir = Path(data_dir)
        self._clock = clock
        self._lock = threading.Lock()
        self._listeners: list[Callable[[Rejection], None]] = []
        self._conn = sqlite3.connect(
            str(outbox.db_path), timeout=10.0, check_same_thread=False, isolation_level=None
        )
        self._conn.execute("PRAGMA busy_timeout=10000")
        self._conn.execute("PRAGMA synchronous=FULL")
        migrate(self._conn, "rejections", STEPS)

    def add_listener(self, callback: Callable[[Rejection], None]) -> None:
        """Call ``callback(rejection)`` once a new rejection is queued (the audit log subscribes
        here); a failing callback is logged and ignored."""
        self._listeners.append(callback)

    def close(self) -> None:
        """Close the database connection."""
        with self._lock:
            self._conn.close()

    # ------------------------------------------------------------------ rejecting
    def reject(
        self,
        job_ids: Iterable[str],
        *,
        kind: RejectionKind | str,
        reason: str,
        actor: str,
        superseded_by: str | None = None,
        keep: Iterable[str] = (),
    ) -> Rejection | None:
        """Reject what the jobs ``job_ids`` delivered or queued and no rejection covers yet,
        except the objects whose SOP Instance UIDs are in ``keep`` (a job run again whose new
        result set has other UIDs, e.g. a new model version: its earlier objects go).

        Returns the rejection, or None when nothing of theirs is left to reject.

        Raises
        ------
        ResultError
            The rejection note cannot be built (the rejected objects span several studies).
        """
        kind = RejectionKind(kind)
        jobs = sorted(set(job_ids))
        kept = set(keep)
        targets = [t for t in self._targets(jobs) if t.sop_uid not in kept]
        if not targets:
            return None
        sop_uids = sorted(t.sop_uid for t in targets)
        note_id = "r-" + hashlib.sha256("\n".join(sop_uids).encode()).hexdigest()[:20]
        study_uids = {r.study_uid for r in self._outbox.list_for_jobs(jobs)}
        now = self._clock()
        with self._lock:
            self._conn.execute("BEGIN IMMEDIATE")  # the record and its objects, or neither
            try:
                self._conn.execute(
                    "INSERT OR IGNORE INTO rejections (note_id, study_uid, kind, reason, actor,"
                    " job_ids, superseded_by, rejected, created_at) VALUES (?,?,?,?,?,?,?,?,?)",
                    (
                        note_id,
                        min(study_uids) if study_uids else "",
                        kind.value,
                        reason[:REASON_MAX],
                        actor,
                        json.dumps(sorted({t.job_id for t in targets})),
                        superseded_by,
                        json.dumps(sop_uids),
                        now,
                    ),
                )
                self._conn.executemany(
                    "INSERT OR IGNORE INTO rejected_objects (sop_uid, note_id, job_id)"
                    " VALUES (?,?,?)",
                    [(t.sop_uid, note_id, t.job_id) for t in targets],
                )
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise
            self._conn.execute("COMMIT")
        self._finish(self.get(note_id), targets)
        done = self.get(note_id)
        for callback in self._listeners:
            try:
                callback(done)
            except Exception:  # noqa: BLE001 - a listener must not undo a rejection
                log.exception("rejections.listener_failed", extra={"note_id": note_id})
        return done

    def retract(self, uid: str, *, reason: str, actor: str) -> Rejection:
        """Retract a result set: ``uid`` is a job id, or the SOP Instance UID or Series Instance
        UID of any object it delivered or queued; the job's whole result set is rejected (its
        SR references its SEG and key images, so they go together).

        Raises
        ------
        NotFoundError
            ``uid`` names no result in the outbox.
        ConflictError
            Its results were rejected already.
        ResultError
            The rejection note cannot be built.
        """
        reason = reason.strip() or "retracted by an operator"
        jobs = self._outbox.job_ids_of(uid)
        if not jobs:
            raise NotFoundError(
                f"no delivered or queued result is named {uid!r} (a job id, or the SOP Instance "
                "or Series Instance UID of a result object); see 'ainode deliveries list'"
            )
        done = self.reject(jobs, kind=RejectionKind.RETRACTED, reason=reason, actor=actor)
        if done is None:
            notes = sorted(set(self.rejected_jobs(jobs).values()))
            raise ConflictError(
                f"the results of {', '.join(jobs)} were rejected already ({', '.join(notes)})"
            )
        return done

    def resume(self) -> list[str]:
        """Finish rejections recorded but not queued (a crash in between); return their ids."""
        with self._lock:
            rows = self._conn.execute(
                f"SELECT {_COLS} FROM rejections WHERE queued_at IS NULL ORDER BY created_at"
            ).fetchall()
        done = []
        for row in rows:
            rejection = _rejection(row)
            with self._lock:
                objects = self._conn.execute(
                    "SELECT sop_uid, job_id FROM rejected_objects WHERE note_id = ?",
                    (rejection.note_id,),
                ).fetchall()
            paths = self._outbox.paths_of([s for s, _ in objects])
            targets = [_Target(s, paths[s], j) for s, j in objects if s in paths]
            if not targets:
                continue
            try:
                self._finish(rejection, targets)
            except ResultError:
                log.exception("rejections.resume_failed", extra={"note_id": rejection.note_id})
                continue
            done.append(rejection.note_id)
        if done:
            log.info("rejections.resumed", extra={"rejections": len(done)})
        return done

    def _targets(self, job_ids: Sequence[str]) -> list[_Target]:
        """Objects of ``job_ids`` in the outbox not yet covered by a rejection (one per SOP
        Instance UID; an SC rendering sent in place of a refused SEG/SR counts too)."""
        if not job_ids:
            return []
        rows = self._outbox.list_for_jobs(job_ids)
        with self._lock:
            covered = {
                str(r[0])
                for r in self._conn.execute(
                    "SELECT sop_uid FROM rejected_objects WHERE job_id IN "
                    f"({','.join('?' * len(job_ids))})",
                    list(job_ids),
                )
            }
        out: dict[str, _Target] = {}
        for r in rows:
            if r.sop_uid not in covered:
                out.setdefault(r.sop_uid, _Target(r.sop_uid, r.path, r.job_id))
            sent = r.sent_sop_uid
            if (
                r.state is DeliveryState.DELIVERED
                and sent
                and sent != r.sop_uid
                and sent not in covered
                and r.fallback_path is not None
            ):
                out.setdefault(sent, _Target(sent, r.fallback_path, r.job_id))
        return [out[k] for k in sorted(out)]

    def _finish(self, rejection: Rejection, targets: Sequence[_Target]) -> None:
        """Steps 3-6 of the module docstring (each idempotent)."""
        from node.results.rejection import build_rejection_note

        path = self._data_dir / "results" / "rejections" / f"{rejection.note_id}.dcm"
        readable = [t.path for t in targets if t.path.is_file()]
        if not readable:
            raise ResultError(
                f"rejection {rejection.note_id}: none of the {len(targets)} rejected objects is "
                "still on disk to build the note from (removed by retention?)"
            )
        note = build_rejection_note(
            _headers(readable),
            note_id=rejection.note_id,
            reason=rejection.reason,
            content_datetime=dt.datetime.fromtimestamp(int(rejection.created_at), tz=dt.UTC),
        )
        if not path.is_file():
            write_durably(path, _encode(note))
        sops = [t.sop_uid for t in targets]
        # the note id, not the reason: the reason is free text and delivery rows are widely read
        why = f"{rejection.kind.value}, rejection {rejection.note_id}"
        receiving = self._outbox.withdraw(sops, reason=why)
        destinations = [d for d in receiving if accepts_notes(self._outbox.config_of(d))]
        if destinations:
            self._outbox.enqueue_many([path], destinations=destinations, job_id=rejection.note_id)
        with self._lock:
            self._conn.execute(
                "UPDATE rejections SET note_sop_uid = ?, note_path = ?, destinations = ?,"
                " queued_at = COALESCE(queued_at, ?) WHERE note_id = ?",
                (
                    str(note.SOPInstanceUID),
                    str(path),
                    json.dumps(sorted(set(destinations) | set(rejection.destinations))),
                    self._clock(),
                    rejection.note_id,
                ),
            )
        log.info(
            "results.rejected",
            extra={
                "note_id": rejection.note_id,
                "kind": rejection.kind.value,
                "objects": len(targets),
                "destinations": len(destinations),
            },
        )

    # ------------------------------------------------------------------ reading
    def get(self, note_id: str) -> Rejection:
        """One rejection by its note id.

        Raises
        ------
        NotFoundError
            No such rejection.
        """
        with self._lock:
            row = self._conn.execute(
                f"SELECT {_COLS} FROM rejections WHERE note_id = ?", (note_id,)
            ).fetchone()
        if row is None:
            raise NotFoundError(f"no rejection {note_id!r}")
        return _rejection(row)

    def list(
        self,
        *,
        study_uid: str | None = None,
        job_id: str | None = None,
        kind: RejectionKind | str | None = None,
        limit: int = 200,
    ) -> list[Rejection]:
        """Rejections, newest first, of one study, covering one job, or of one kind."""
        sql, args = f"SELECT {_COLS} FROM rejections", []
        where = []
        if kind is not None:
            where.append("kind = ?")
            args.append(RejectionKind(kind).value)
        if study_uid is not None:
            where.append("study_uid = ?")
            args.append(study_uid)
        if job_id is not None:
            where.append("note_id IN (SELECT note_id FROM rejected_objects WHERE job_id = ?)")
            args.append(job_id)
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY created_at DESC, note_id LIMIT ?"
        with self._lock:
            rows = self._conn.execute(sql, (*args, limit)).fetchall()
        return [_rejection(r) for r in rows]

    def rejected_jobs(self, job_ids: Iterable[str]) -> dict[str, str]:
        """Job id -> note id, for those of ``job_ids`` whose results were rejected."""
        ids = list(job_ids)
        if not ids:
            return {}
        with self._lock:
            rows = self._conn.execute(
                "SELECT job_id, MIN(note_id) FROM rejected_objects WHERE job_id IN "
                f"({','.join('?' * len(ids))}) GROUP BY job_id",
                ids,
            ).fetchall()
        return {str(j): str(n) for j, n in rows}

    def retractable(self, study_uid: str) -> tuple[str, ...]:
        """Jobs of ``study_uid`` with delivered or queued objects that no rejection covers."""
        rows = [
            r
            for r in self._outbox.list(study_uid=study_uid, limit=100_000)
            if r.job_id != FORWARD and not r.job_id.startswith("r-")
        ]
        with self._lock:
            covered = {
                str(s[0])
                for s in self._conn.execute(
                    "SELECT o.sop_uid FROM rejected_objects o JOIN rejections r"
                    " ON r.note_id = o.note_id WHERE r.study_uid = ?",
                    (study_uid,),
                )
            }
        return tuple(
            sorted(
                {
                    r.job_id
                    for r in rows
                    if r.sop_uid not in covered and r.state is not DeliveryState.WITHDRAWN
                }
            )
        )


def notes_for(conn: sqlite3.Connection, sop_uids: Sequence[str]) -> Mapping[str, str]:
    """SOP Instance UID -> note path, for those of ``sop_uids`` a written rejection covers
    (on the outbox's own connection; the table may not exist yet)."""
    if not sop_uids:
        return {}
    try:
        rows = conn.execute(
            "SELECT o.sop_uid, r.note_path FROM rejected_objects o JOIN rejections r"
            " ON r.note_id = o.note_id WHERE r.note_path IS NOT NULL AND o.sop_uid IN "
            f"({','.join('?' * len(sop_uids))})",
            list(sop_uids),
        ).fetchall()
    except sqlite3.OperationalError:  # no rejection was ever made: no table
        return {}
    return {str(s): str(p) for s, p in rows}


def _headers(paths: Sequence[Path]) -> list[Any]:
    import pydicom

    return [pydicom.dcmread(p, stop_before_pixels=True) for p in paths]


def _encode(note: Any) -> bytes:
    from node.results.gate import encode

    return encode(note)
