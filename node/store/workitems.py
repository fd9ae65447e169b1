"""UPS workitems and their subscriptions: tables ``workitems`` and ``workitem_subscriptions``.

ainode as a small Task Manager (PS3.18 section 11, UPS-RS): each workitem is one row holding its
DICOM JSON dataset, its Procedure Step State and the Transaction UID of the performer that
claimed it.  Every change runs in one ``BEGIN IMMEDIATE`` transaction that reads the row, checks
it with the rules of :mod:`node.store.ups` and writes it, so of two performers claiming the same
workitem at once exactly one wins and the other is refused (0xC302).  Writes use
``synchronous=FULL`` (like the job store): an answered request survives a power loss or
``kill -9``.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Mapping
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from node.errors import NotFoundError, WorkitemError
from node.store.migrate import migrate
from node.store.sqlite import ThreadConnections
from node.store.ups import (
    FILTERED_SUBSCRIPTION_UID,
    GLOBAL_SUBSCRIPTION_UID,
    TAGS,
    UPS_PUSH_SOP_CLASS_UID,
    UpsState,
    matches,
    strip_transaction,
    text_value,
    transition,
)

__all__ = ["CancelOutcome", "Subscription", "Workitem", "WorkitemStore"]

_STEPS = (
    """
    CREATE TABLE workitems (
        uid TEXT PRIMARY KEY,
        state TEXT NOT NULL
            CHECK (state IN ('SCHEDULED', 'IN PROGRESS', 'COMPLETED', 'CANCELED')),
        transaction_uid TEXT,
        dataset TEXT NOT NULL,
        created_at REAL NOT NULL,
        updated_at REAL NOT NULL,
        cancel_requested_at REAL
    );
    CREATE INDEX workitems_state ON workitems(state, created_at);
    CREATE TABLE workitem_subscriptions (
        aet TEXT NOT NULL,
        target TEXT NOT NULL,
        deletion_lock INTEGER NOT NULL,
        filter TEXT,
        created_at REAL NOT NULL,
        PRIMARY KEY (aet, target)
    )
    """,
    # Suspend Global Subscription (PS3.4 CC.2.3.3): no workitem created after this time
    "ALTER TABLE workitem_subscriptions ADD COLUMN suspended_at REAL",
)

_COLS = "uid, state, transaction_uid, dataset, created_at, updated_at, cancel_requested_at"


@dataclass(frozen=True, slots=True)
class Workitem:
    """One stored workitem.  ``dataset`` is DICOM JSON with its state, never its Transaction UID."""

    uid: str
    state: UpsState
    dataset: dict[str, Any]
    created_at: float
    updated_at: float
    cancel_requested_at: float | None

    @property
    def label(self) -> str | None:
        """Procedure Step Label (0074,1204)."""
        return text_value(self.dataset, "ProcedureStepLabel")


@dataclass(frozen=True, slots=True)
class Subscription:
    """An AE's subscription to one workitem or to the (filtered) global subscription UID."""

    aet: str
    target: str
    deletion_lock: bool
    filter: list[tuple[str, str]] | None
    created_at: float
    #: a suspended global subscription covers only workitems created before this time
    suspended_at: float | None = None


@dataclass(frozen=True, slots=True)
class CancelOutcome:
    """What a cancel request did: ``canceled`` (it was SCHEDULED) or ``requested`` (IN
    PROGRESS: the performer decides), plus a PS3.4 warning ``(status, text)`` when it was
    already CANCELED."""

    workitem: Workitem
    canceled: bool
    warning: tuple[int, str] | None = None


def _attr(vr: str, *values: Any) -> dict[str, Any]:
    return {"vr": vr, "Value": list(values)} if values else {"vr": vr}


def _dt(now: float) -> str:
    return time.strftime("%Y%m%d%H%M%S", time.gmtime(now)) + "+0000"


class WorkitemStore:
    """The workitem tables of the node's SQLite index file.

    Parameters
    ----------
    db_path:
        ``data_dir/index.sqlite``.
    """

    def __init__(self, db_path: Path) -> None:
        self._db = ThreadConnections(db_path)
        migrate(self._conn(), "workitems", _STEPS)

    def _conn(self) -> sqlite3.Connection:
        return self._db.conn()

    def _write(self) -> AbstractContextManager[sqlite3.Connection]:
        return self._db.write()

    @staticmethod
    def _row(row: tuple[Any, ...]) -> tuple[Workitem, str | None]:
        uid, state, txn, dataset, created, updated, cancel = row
        item = Workitem(uid, UpsState(state), json.loads(dataset), created, updated, cancel)
        return item, txn

    def _load(self, conn: sqlite3.Connection, uid: str) -> tuple[Workitem, str | None]:
        row = conn.execute(f"SELECT {_COLS} FROM workitems WHERE uid = ?", (uid,)).fetchone()
        if row is None:
            raise NotFoundError(f"no workitem {uid} on this node")
        return self._row(row)

    def _save(
        self,
        conn: sqlite3.Connection,
        item: Workitem,
        *,
        dataset: dict[str, Any],
        state: UpsState,
        transaction_uid: str | None,
        now: float,
        cancel_requested_at: float | None = None,
    ) -> Workitem:
        dataset = {**dataset, TAGS["ProcedureStepState"]: _attr("CS", state.value)}
        cancel = cancel_requested_at or item.cancel_requested_at
        conn.execute(
            "UPDATE workitems SET state = ?, transaction_uid = ?, dataset = ?, updated_at = ?,"
            " cancel_requested_at = ? WHERE uid = ?",
            (state.value, transaction_uid, json.dumps(dataset), now, cancel, item.uid),
        )
        return Workitem(item.uid, state, dataset, item.created_at, now, cancel)

    def create(
        self, uid: str, dataset: Mapping[str, Any], *, worklist_label: str, now: float | None = None
    ) -> Workitem:
        """Store a new SCHEDULED workitem (checked by ``ups.check_create`` beforehand).

        The SCP's own attributes are set here (PS3.4 CC.2.5.1.1): SOP Class UID (UPS Push),
        SOP Instance UID, Procedure Step State SCHEDULED, Scheduled Procedure Step
        Modification DateTime, and Worklist Label when the creator gave none.

        Raises
        ------
        WorkitemError
            409 (0x0111, duplicate SOP instance) when ``uid`` exists already.
        """
        ts = time.time() if now is None else now
        ds = strip_transaction(dataset)
        ds[TAGS["SOPClassUID"]] = _attr("UI", UPS_PUSH_SOP_CLASS_UID)
        ds[TAGS["SOPInstanceUID"]] = _attr("UI", uid)
        ds[TAGS["ProcedureStepState"]] = _attr("CS", UpsState.SCHEDULED.value)
        ds["00404010"] = _attr("DT", _dt(ts))  # Scheduled Procedure Step Modification DateTime
        if not text_value(ds, "WorklistLabel"):
            ds[TAGS["WorklistLabel"]] = _attr("LO", worklist_label)
        with self._write() as conn:
            try:
                conn.execute(
                    f"INSERT INTO workitems({_COLS}) VALUES (?, ?, NULL, ?, ?, ?, NULL)",
                    (uid, UpsState.SCHEDULED.value, json.dumps(ds), ts, ts),
                )
            except sqlite3.IntegrityError:
                raise WorkitemError(
                    f"workitem {uid} exists already", http_status=409, dicom_status=0x0111
                ) from None
        return Workitem(uid, UpsState.SCHEDULED, ds, ts, ts, None)

    def get(self, uid: str) -> Workitem:
        """The workitem ``uid``.

        Raises
        ------
        NotFoundError
            No such workitem.
        """
        return self._load(self._conn(), uid)[0]

    def workitems(self, *, state: UpsState | None = None) -> list[Workitem]:
        """Every workitem (of ``state``), oldest first."""
        sql = f"SELECT {_COLS} FROM workitems"
        args: tuple[Any, ...] = ()
        if state is not None:
            sql += " WHERE state = ?"
            args = (state.value,)
        rows = self._conn().execute(sql + " ORDER BY created_at, uid", args).fetchall()
        return [self._row(r)[0] for r in rows]

    def counts(self) -> dict[str, int]:
        """``{state: n}`` over every workitem."""
        rows = self._conn().execute("SELECT state, COUNT(*) FROM workitems GROUP BY state")
        return {state: int(n) for state, n in rows}

    def update(
        self,
        uid: str,
        changes: Mapping[str, Any],
        *,
        transaction_uid: str | None,
        now: float | None = None,
    ) -> Workitem:
        """Merge ``changes`` (checked by ``ups.check_update``) into the workitem (PS3.4 CC.2.2).

        A SCHEDULED workitem is updated without a Transaction UID; an IN PROGRESS one only with
        the Transaction UID it was claimed with.

        Raises
        ------
        NotFoundError
            No such workitem.
        WorkitemError
            409 0xC300 when it is COMPLETED or CANCELED; 400 0xC301 when IN PROGRESS and no
            Transaction UID is given, 409 0xC301 when it does not match.
        """
        ts = time.time() if now is None else now
        with self._write() as conn:
            item, stored = self._load(conn, uid)
            if item.state.is_final:
                raise WorkitemError(
                    f"the workitem is {item.state.value} and may no longer be updated",
                    http_status=409,
                    dicom_status=0xC300,
                )
            if item.state is UpsState.IN_PROGRESS:
                if not transaction_uid:
                    raise WorkitemError(
                        "the workitem is IN PROGRESS: an update needs the Transaction UID it "
                        "was claimed with (query parameter transaction-uid)",
                        http_status=400,
                        dicom_status=0xC301,
                    )
                if transaction_uid != stored:
                    raise WorkitemError(
                        "the Transaction UID does not match the one the workitem was claimed with",
                        http_status=409,
                        dicom_status=0xC301,
                    )
            merged = {**item.dataset, **strip_transaction(changes)}
            merged["00404010"] = _attr("DT", _dt(ts))
            return self._save(
                conn, item, dataset=merged, state=item.state, transaction_uid=stored, now=ts
            )

    def change_state(
        self,
        uid: str,
        state: UpsState,
        *,
        transaction_uid: str | None,
        now: float | None = None,
    ) -> tuple[Workitem, tuple[int, str] | None]:
        """Move the workitem to ``state`` under the rules of ``ups.transition`` (atomically).

        Returns
        -------
        tuple
            The workitem as stored and the PS3.4 warning ``(status, text)`` when it already was
            in that final state (nothing changed).

        Raises
        ------
        NotFoundError
            No such workitem.
        WorkitemError
            See ``node.store.ups.transition``.
        """
        ts = time.time() if now is None else now
        with self._write() as conn:
            item, stored = self._load(conn, uid)
            txn, warning = transition(
                current=item.state,
                stored_transaction=stored,
                requested=state,
                transaction_uid=transaction_uid,
                dataset=item.dataset,
            )
            if warning is not None:
                return item, warning
            saved = self._save(
                conn, item, dataset=item.dataset, state=state, transaction_uid=txn, now=ts
            )
            return saved, None

    def request_cancel(
        self,
        uid: str,
        *,
        reason: str | None = None,
        contact_uri: str | None = None,
        now: float | None = None,
    ) -> CancelOutcome:
        """A cancel request (PS3.4 CC.2.4, PS3.18 11.8).

        A SCHEDULED workitem is CANCELED at once, with a Procedure Step Progress Information
        item giving the cancellation time and reason; an IN PROGRESS one is only marked (its
        performer decides, PS3.4 CC.2.4.3); a CANCELED one answers a warning (0xB304).

        Raises
        ------
        NotFoundError
            No such workitem.
        WorkitemError
            409 0xC311 when it is COMPLETED.
        """
        ts = time.time() if now is None else now
        with self._write() as conn:
            item, stored = self._load(conn, uid)
            if item.state is UpsState.COMPLETED:
                raise WorkitemError(
                    "the workitem is already COMPLETED", http_status=409, dicom_status=0xC311
                )
            if item.state is UpsState.CANCELED:
                text = "the workitem is already in the requested state of CANCELED"
                return CancelOutcome(item, canceled=False, warning=(0xB304, text))
            if item.state is UpsState.IN_PROGRESS:
                saved = self._save(
                    conn,
                    item,
                    dataset=item.dataset,
                    state=item.state,
                    transaction_uid=stored,
                    now=ts,
                    cancel_requested_at=ts,
                )
                return CancelOutcome(saved, canceled=False)
            progress: dict[str, Any] = {
                TAGS["ProcedureStepCancellationDateTime"]: _attr("DT", _dt(ts))
            }
            if reason:
                progress[TAGS["ReasonForCancellation"]] = _attr("LT", reason)
            if contact_uri:
                progress["0074100A"] = _attr("UR", contact_uri)  # Contact URI
            ds = {
                **item.dataset,
                TAGS["ProcedureStepProgressInformationSequence"]: _attr("SQ", progress),
            }
            saved = self._save(
                conn,
                item,
                dataset=ds,
                state=UpsState.CANCELED,
                transaction_uid=None,
                now=ts,
                cancel_requested_at=ts,
            )
            return CancelOutcome(saved, canceled=True)

    def subscribe(
        self,
        aet: str,
        target: str,
        *,
        deletion_lock: bool,
        filter: list[tuple[str, str]] | None = None,
        now: float | None = None,
    ) -> Subscription:
        """Subscribe ``aet`` to ``target`` (a workitem UID, or a global subscription UID);
        subscribing again replaces the deletion lock and filter (PS3.4 CC.2.3.1)."""
        ts = time.time() if now is None else now
        with self._write() as conn:
            conn.execute(
                "INSERT INTO workitem_subscriptions(aet, target, deletion_lock, filter, created_at)"
                " VALUES (?, ?, ?, ?, ?) ON CONFLICT(aet, target) DO UPDATE SET"
                " deletion_lock = excluded.deletion_lock, filter = excluded.filter,"
                " suspended_at = NULL",
                (aet, target, int(deletion_lock), json.dumps(filter) if filter else None, ts),
            )
        return Subscription(aet, target, deletion_lock, filter, ts)

    def unsubscribe(self, aet: str, target: str) -> bool:
        """Remove ``aet``'s subscription to ``target``; False when there was none."""
        with self._write() as conn:
            cur = conn.execute(
                "DELETE FROM workitem_subscriptions WHERE aet = ? AND target = ?", (aet, target)
            )
            return cur.rowcount > 0

    def suspend(self, aet: str, target: str, *, now: float | None = None) -> bool:
        """Suspend ``aet``'s (filtered) global subscription ``target`` (PS3.4 CC.2.3.3): it
        keeps covering the workitems that exist now, no later one.  False when there is none."""
        ts = time.time() if now is None else now
        with self._write() as conn:
            cur = conn.execute(
                "UPDATE workitem_subscriptions SET suspended_at = COALESCE(suspended_at, ?)"
                " WHERE aet = ? AND target = ?",
                (ts, aet, target),
            )
            return cur.rowcount > 0

    def subscriptions(self, *, target: str | None = None) -> list[Subscription]:
        """Every subscription (to ``target``), oldest first."""
        sql = (
            "SELECT aet, target, deletion_lock, filter, created_at, suspended_at"
            " FROM workitem_subscriptions"
        )
        args: tuple[Any, ...] = ()
        if target is not None:
            sql += " WHERE target = ?"
            args = (target,)
        out = []
        rows = self._conn().execute(sql + " ORDER BY created_at", args)
        for aet, tgt, lock, flt, created, suspended in rows:
            parsed = [(str(k), str(v)) for k, v in json.loads(flt)] if flt else None
            out.append(Subscription(aet, tgt, bool(lock), parsed, created, suspended))
        return out

    def prune_final(self, before: float) -> list[str]:
        """Delete COMPLETED and CANCELED workitems last changed before ``before`` (retention).

        A workitem stays while a subscription holds a deletion lock on it (PS3.4 CC.2.3.1): a
        locked subscription to the workitem itself, or a locked global subscription (filtered or
        not) that was not suspended before the workitem was created.  The subscriptions to a
        deleted workitem are deleted with it.  Returns the UIDs deleted.
        """
        final = (UpsState.COMPLETED.value, UpsState.CANCELED.value)
        with self._write() as conn:
            rows = conn.execute(
                "SELECT w.uid FROM workitems w WHERE w.state IN (?, ?) AND w.updated_at < ?"
                " AND NOT EXISTS (SELECT 1 FROM workitem_subscriptions s WHERE s.deletion_lock"
                " AND (s.target = w.uid OR (s.target IN (?, ?)"
                " AND (s.suspended_at IS NULL OR s.suspended_at > w.created_at))))",
                (*final, before, GLOBAL_SUBSCRIPTION_UID, FILTERED_SUBSCRIPTION_UID),
            ).fetchall()
            uids = [str(uid) for (uid,) in rows]
            for uid in uids:
                conn.execute("DELETE FROM workitem_subscriptions WHERE target = ?", (uid,))
                conn.execute("DELETE FROM workitems WHERE uid = ?", (uid,))
        return uids

    def subscribers(self, item: Workitem) -> set[str]:
        """The AE titles subscribed to ``item``: to it, to the global subscription, or to the
        filtered global subscription when it matches the filter (PS3.4 CC.2.3), leaving out
        suspended global subscriptions for workitems created after the suspension."""
        out: set[str] = set()
        for sub in self.subscriptions():
            if sub.suspended_at is not None and item.created_at >= sub.suspended_at:
                continue
            if (
                sub.target in (item.uid, GLOBAL_SUBSCRIPTION_UID)
                or sub.target == FILTERED_SUBSCRIPTION_UID
                and matches(item.dataset, sub.filter or [])
            ):
                out.add(sub.aet)
        return out

    def close(self) -> None:
        """Close this thread's connection (others close with their threads)."""
        self._db.close()
