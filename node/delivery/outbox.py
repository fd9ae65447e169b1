"""The durable outbox: every result object to every destination is one row in the SQLite index.

States: ``pending`` -> ``delivered`` | ``dead`` (``node.types.DeliveryState``).  One worker thread
per destination sends due rows in batches (one association / request per batch), so a destination
that is down blocks no other.  Failures back off exponentially with jitter,
``min(max, base * 2**(attempts-1)) * U(0.5, 1)``, and a row is dead-lettered after
``max_attempts``; ``retry`` puts it back.  Enqueueing the same (SOP Instance UID, destination)
again is a no-op unless the row is dead, and results carry deterministic UIDs, so a re-send after
a crash (sent, but not yet marked delivered) overwrites the same instance at the peer instead of
duplicating it.  Time comes from an injectable ``clock`` so long outages can be simulated.
"""

from __future__ import annotations

import contextlib
import logging
import random
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

from node.config import Config, DeliveryConfig
from node.delivery.base import (
    BatchError,
    Outcome,
    OutcomeKind,
    Parcel,
    Sender,
    SenderContext,
)
from node.delivery.rows import (
    COLUMNS,
    FORWARD,
    REFUSAL_TTL_SECONDS,
    STEPS,
    Delivery,
    ObjectUids,
    connect,
    read_object_uids,
    row_to_delivery,
)
from node.delivery.senders import DestinationConfig, make_sender
from node.errors import ConflictError, DestinationError, NotFoundError, ResultError
from node.types import DeliveryState, Instance, ResultKind, ResultObject

__all__ = ["FORWARD", "STEPS", "Delivery", "Outbox", "connect"]

log = logging.getLogger(__name__)


class Outbox:
    """Durable, retrying delivery of DICOM files to the configured destinations.

    Parameters
    ----------
    db_path:
        The node's SQLite index (``data_dir/index.sqlite``); the outbox owns its own tables.
    destinations:
        Destination name -> config (``node.config`` destination models).
    clock:
        Seconds since the epoch; injectable for simulated-time tests.
    policy:
        Retry policy (``delivery`` section of the config).
    node_ae_title:
        Calling AE title for DIMSE destinations that do not set their own.
    rng:
        Source of back-off jitter.
    poll_seconds:
        Longest a worker sleeps before looking at the table again (picks up CLI retries).
    """

    def __init__(
        self,
        db_path: Path,
        destinations: Mapping[str, DestinationConfig],
        *,
        clock: Callable[[], float] = time.time,
        policy: DeliveryConfig | None = None,
        node_ae_title: str = "AINODE",
        rng: random.Random | None = None,
        poll_seconds: float = 2.0,
    ) -> None:
        self._db_path = Path(db_path)
        self._destinations = dict(destinations)
        self._clock = clock
        self._policy = policy or DeliveryConfig()
        self._node_ae_title = node_ae_title
        self._rng = rng or random.Random()
        self._poll_seconds = poll_seconds
        self._conn = connect(self._db_path)
        self._lock = threading.RLock()
        self._wake = {name: threading.Event() for name in self._destinations}
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._senders: dict[str, Sender] = {}
        self._listeners: list[Callable[[str, Sequence[Delivery], Sequence[Delivery]], None]] = []

    @classmethod
    def from_config(cls, config: Config, **kwargs: Any) -> Outbox:
        """The node's outbox: ``data_dir/index.sqlite``, ``destinations``, ``delivery`` policy and
        ``node.ae_title`` from ``config`` (``kwargs`` go to the constructor, e.g. ``clock``)."""
        return cls(
            config.node.data_dir / "index.sqlite",
            config.destinations,
            policy=config.delivery,
            node_ae_title=config.node.ae_title,
            **kwargs,
        )

    # ------------------------------------------------------------ public API
    def add_listener(
        self, callback: Callable[[str, Sequence[Delivery], Sequence[Delivery]], None]
    ) -> None:
        """Call ``callback(destination, delivered, dead)`` after each batch that delivered or
        dead-lettered rows (committed; rows as they were before the batch).  The audit log
        subscribes here; a failing callback is logged and ignored."""
        self._listeners.append(callback)

    @property
    def destinations(self) -> tuple[str, ...]:
        """Names of the configured destinations."""
        return tuple(self._destinations)

    @property
    def db_path(self) -> Path:
        """The SQLite file holding the outbox (the node's index)."""
        return self._db_path

    def config_of(self, destination: str) -> DestinationConfig:
        """The configuration of one destination.

        Raises
        ------
        NotFoundError
            Not a configured destination.
        """
        try:
            return self._destinations[destination]
        except KeyError:
            raise NotFoundError(f"unknown destination {destination!r}") from None

    def list_for_jobs(self, job_ids: Sequence[str]) -> list[Delivery]:
        """The rows of the objects made by ``job_ids`` (every destination and state)."""
        if not job_ids:
            return []
        marks = ",".join("?" * len(job_ids))
        with self._lock:
            rows = self._conn.execute(
                f"SELECT {COLUMNS} FROM outbox WHERE job_id IN ({marks}) ORDER BY id",
                list(job_ids),
            ).fetchall()
        return [row_to_delivery(r) for r in rows]

    def job_ids_of(self, uid: str) -> list[str]:
        """Jobs whose queued or delivered objects ``uid`` names: a job id, or the SOP Instance
        UID or Series Instance UID of one of its objects (forwards and notes excluded)."""
        with self._lock:
            rows = self._conn.execute(
                "SELECT DISTINCT job_id FROM outbox WHERE (job_id = ? OR sop_uid = ? OR"
                " series_uid = ? OR sent_sop_uid = ?) AND job_id <> ? AND job_id NOT LIKE 'r-%'"
                " ORDER BY job_id",
                (uid, uid, uid, uid, FORWARD),
            ).fetchall()
        return [str(r[0]) for r in rows]

    def paths_of(self, sop_uids: Sequence[str]) -> dict[str, Path]:
        """SOP Instance UID -> file, for objects of ``sop_uids`` the outbox holds (also SC
        renderings sent in their place)."""
        if not sop_uids:
            return {}
        marks = ",".join("?" * len(sop_uids))
        out: dict[str, Path] = {}
        with self._lock:
            for sop, path in self._conn.execute(
                f"SELECT sop_uid, path FROM outbox WHERE sop_uid IN ({marks})", list(sop_uids)
            ):
                out.setdefault(str(sop), Path(path))
            for sop, path in self._conn.execute(
                f"SELECT sent_sop_uid, fallback_path FROM outbox WHERE sent_sop_uid IN ({marks})"
                " AND fallback_path IS NOT NULL",
                list(sop_uids),
            ):
                out.setdefault(str(sop), Path(path))
        return out

    def withdraw(self, sop_uids: Sequence[str], *, reason: str) -> list[str]:
        """Withdraw the rows of ``sop_uids`` that did not go out (state ``withdrawn``: never
        sent, not revived by a retry or an enqueue); return the destinations that received
        one of them (rows ``delivered``, also of an SC rendering sent in their place).

        A row that a worker is sending at this moment ends ``delivered`` and the worker queues
        the object's rejection note for its destination (``_record``).
        """
        if not sop_uids:
            return []
        marks = ",".join("?" * len(sop_uids))
        now = self._clock()
        with self._lock, self._conn:
            received = [
                str(r[0])
                for r in self._conn.execute(
                    "SELECT DISTINCT destination FROM outbox WHERE state = 'delivered' AND"
                    f" (sop_uid IN ({marks}) OR sent_sop_uid IN ({marks})) ORDER BY destination",
                    [*sop_uids, *sop_uids],
                )
            ]
            n = self._conn.execute(
                "UPDATE outbox SET state = 'withdrawn', updated_at = ?, last_error = ?"
                f" WHERE state IN ('pending', 'dead') AND sop_uid IN ({marks})",
                (now, f"withdrawn: {reason}"[:1024], *sop_uids),
            ).rowcount
        log.info("outbox.withdrawn", extra={"rows": n, "received_by": len(received)})
        return received

    def enqueue(
        self,
        path: Path,
        *,
        destinations: Sequence[str],
        job_id: str | None,
        fallback_path: Path | None = None,
    ) -> list[int]:
        """Queue one DICOM file for each destination; return the row ids.

        Parameters
        ----------
        path:
            The object on disk under ``data_dir`` (read for its UIDs, never modified).
        destinations:
            Destination names from the config.
        job_id:
            The job that produced the object, or ``None`` (stored as ``"forward"``) for received
            originals forwarded by a rule.
        fallback_path:
            A Secondary Capture rendering to send instead where the destination refuses this
            object's SOP class and has ``sc_fallback`` set.

        Raises
        ------
        NotFoundError
            A destination name is not configured.
        ResultError
            The file is not a readable DICOM object.
        """
        return self.enqueue_many(
            [path], destinations=destinations, job_id=job_id, fallback_paths=[fallback_path]
        )

    def enqueue_many(
        self,
        paths: Sequence[Path],
        *,
        destinations: Sequence[str],
        job_id: str | None,
        fallback_paths: Sequence[Path | None] | None = None,
    ) -> list[int]:
        """Queue several files in one transaction (see ``enqueue``); return the row ids.

        Each file is read for its UIDs: for files from outside the node's stages (a rejection
        note, ``ainode send``, tests).  The stages hand typed objects instead
        (``enqueue_instances``, ``enqueue_results``).
        """
        self._check_destinations(destinations)
        fallbacks = list(fallback_paths) if fallback_paths is not None else [None] * len(paths)
        headers = [read_object_uids(Path(p)) for p in paths]
        return self._enqueue(
            list(zip(paths, headers, fallbacks, strict=True)),
            destinations=destinations,
            job_id=job_id,
        )

    def enqueue_instances(
        self, instances: Sequence[Instance], *, destinations: Sequence[str]
    ) -> list[int]:
        """Queue stored originals (a rule's ``send_to``) for each destination, as the ingest
        stage identified them: no file is read.  Return the row ids.

        Raises
        ------
        NotFoundError
            A destination name is not configured.
        """
        self._check_destinations(destinations)
        items = [(i.path, ObjectUids.of(i), None) for i in instances]
        return self._enqueue(items, destinations=destinations, job_id=None)

    def enqueue_results(
        self,
        objects: Sequence[ResultObject],
        *,
        destinations: Sequence[str],
        job_id: str,
        root: Path,
    ) -> list[int]:
        """Queue a job's result objects for each destination, as the job described them: no
        file is read.  Return the row ids.

        The job's Secondary Capture (its first object of kind ``sc``) is the fallback of its SEG
        and SR objects: sent instead where a destination refuses their SOP class and has
        ``sc_fallback`` set.

        Parameters
        ----------
        objects:
            What the job wrote (``node.jobs.pipeline``), paths relative to ``root``.
        destinations:
            Destination names from the config.
        job_id:
            The job that made them.
        root:
            The folder the objects' paths are relative to (the node's ``data_dir``).

        Raises
        ------
        NotFoundError
            A destination name is not configured.
        """
        self._check_destinations(destinations)
        paths = [root / o.path for o in objects]
        sc = next((p for p, o in zip(paths, objects, strict=True) if o.kind is ResultKind.SC), None)
        items = [
            (path, ObjectUids.of(o), sc if o.kind in (ResultKind.SEG, ResultKind.SR) else None)
            for path, o in zip(paths, objects, strict=True)
        ]
        return self._enqueue(items, destinations=destinations, job_id=job_id)

    def _check_destinations(self, destinations: Sequence[str]) -> None:
        unknown = [d for d in destinations if d not in self._destinations]
        if unknown:
            raise NotFoundError(
                f"unknown destination(s) {', '.join(map(repr, unknown))}; configured: "
                f"{', '.join(self._destinations) or 'none'} (see 'destinations' in the config)"
            )

    def _enqueue(
        self,
        items: Sequence[tuple[Path, ObjectUids, Path | None]],
        *,
        destinations: Sequence[str],
        job_id: str | None,
    ) -> list[int]:
        """Insert (file, its UIDs, its fallback) for each destination in one transaction."""
        now = self._clock()
        ids: list[int] = []
        with self._lock, self._conn:
            for path, header, fallback in items:
                for dest in destinations:
                    ids.append(
                        _insert(
                            self._conn,
                            dest,
                            path,
                            header,
                            fallback=fallback,
                            job_id=job_id or FORWARD,
                            now=now,
                        )
                    )
        for dest in destinations:
            self._wake[dest].set()
        log.debug("outbox.enqueued", extra={"rows": len(ids), "job_id": job_id or FORWARD})
        return ids

    def list(
        self,
        *,
        state: DeliveryState | str | None = None,
        destination: str | None = None,
        study_uid: str | None = None,
        job_id: str | None = None,
        limit: int = 1000,
    ) -> list[Delivery]:
        """Rows of the outbox, newest first, filtered by the given fields."""
        where, args = [], []
        if state is not None:
            where.append("state = ?")
            args.append(DeliveryState(state).value)
        for col, val in (
            ("destination", destination),
            ("study_uid", study_uid),
            ("job_id", job_id),
        ):
            if val is not None:
                where.append(f"{col} = ?")
                args.append(val)
        sql = f"SELECT {COLUMNS} FROM outbox"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY id DESC LIMIT ?"
        with self._lock:
            rows = self._conn.execute(sql, (*args, limit)).fetchall()
        return [row_to_delivery(r) for r in rows]

    def get(self, row_id: int) -> Delivery:
        """One row by id.

        Raises
        ------
        NotFoundError
            No such row.
        """
        with self._lock:
            r = self._conn.execute(
                f"SELECT {COLUMNS} FROM outbox WHERE id = ?", (row_id,)
            ).fetchone()
        if r is None:
            raise NotFoundError(f"no delivery with id {row_id}; see 'ainode deliveries list'")
        return row_to_delivery(r)

    def retry(self, row_id: int) -> Delivery:
        """Put a row back to ``pending`` with no attempts counted, due now.

        Meant for dead-lettered rows once the destination is fixed; a delivered row is sent again
        (same UIDs, so the peer keeps one copy).

        Raises
        ------
        NotFoundError
            No such row.
        ConflictError
            The row was withdrawn (its result was rejected).
        """
        if self.get(row_id).state is DeliveryState.WITHDRAWN:
            raise ConflictError(
                f"delivery {row_id} was withdrawn (its result was superseded or retracted) and "
                "is never sent; see 'ainode results list'"
            )
        now = self._clock()
        with self._lock, self._conn:
            self._conn.execute(
                "UPDATE outbox SET state = 'pending', attempts = 0, next_attempt_at = ?,"
                " updated_at = ?, use_fallback = 0 WHERE id = ?",
                (now, now, row_id),
            )
        row = self.get(row_id)
        if row.destination in self._wake:
            self._wake[row.destination].set()
        log.info("outbox.retry", extra={"row_id": row_id, "destination": row.destination})
        return row

    def retry_dead(self, *, destination: str | None = None) -> int:
        """Retry every dead row (of one destination, or all); return how many."""
        now = self._clock()
        sql = (
            "UPDATE outbox SET state = 'pending', attempts = 0, next_attempt_at = ?,"
            " updated_at = ?, use_fallback = 0 WHERE state = 'dead'"
        )
        args: list[Any] = [now, now]
        if destination is not None:
            sql += " AND destination = ?"
            args.append(destination)
        with self._lock, self._conn:
            n = self._conn.execute(sql, args).rowcount
        for event in self._wake.values():
            event.set()
        log.info("outbox.retry_dead", extra={"rows": n, "destination": destination or "*"})
        return int(n)

    def counts(self) -> dict[str, dict[str, int]]:
        """``{destination: {state: rows}}`` for dashboards and metrics."""
        with self._lock:
            rows = self._conn.execute(
                "SELECT destination, state, COUNT(*) FROM outbox GROUP BY destination, state"
            ).fetchall()
        out: dict[str, dict[str, int]] = {}
        for dest, state, n in rows:
            out.setdefault(dest, {})[state] = int(n)
        return out

    def start(self) -> None:
        """Start one worker thread per destination."""
        if self._threads:
            return
        self._stop.clear()
        for name in self._destinations:
            t = threading.Thread(target=self._worker, args=(name,), name=f"outbox-{name}")
            t.daemon = True
            t.start()
            self._threads.append(t)
        log.info("outbox.started", extra={"destinations": len(self._destinations)})

    def stop(self, timeout: float = 30.0) -> None:
        """Stop the workers (each finishes its current batch) and close connections."""
        self._stop.set()
        for event in self._wake.values():
            event.set()
        for t in self._threads:
            t.join(timeout)
        self._threads.clear()
        for sender in self._senders.values():
            sender.close()
        self._senders.clear()

    def close(self) -> None:
        """Stop the workers and close the database connection."""
        self.stop()
        with self._lock:
            self._conn.close()

    def run_once(self, destinations: Iterable[str] | None = None) -> int:
        """Send everything that is due now, synchronously (tests, CLI); return rows handled."""
        handled = 0
        for name in destinations or self._destinations:
            while True:
                n, _ = self._process(name, self._conn)
                handled += n
                if n == 0:
                    break
        return handled

    # ------------------------------------------------------------ worker
    def _worker(self, name: str) -> None:
        conn = connect(self._db_path)
        try:
            while not self._stop.is_set():
                try:
                    n, wait = self._process(name, conn)
                except sqlite3.Error:  # e.g. locked past busy_timeout: keep the worker alive
                    log.exception("outbox.db_error", extra={"destination": name})
                    n, wait = 0, self._poll_seconds
                if n:
                    continue
                timeout = self._poll_seconds if wait is None else min(wait, self._poll_seconds)
                self._wake[name].wait(max(timeout, 0.01))
                self._wake[name].clear()
        finally:
            conn.close()

    def _sender(self, name: str) -> Sender:
        sender = self._senders.get(name)
        if sender is None:
            context = SenderContext(
                name=name,
                node_ae_title=self._node_ae_title,
                timeout_seconds=self._policy.timeout_seconds,
                remember_refusal=lambda sop, ts: self._remember_refusal(name, sop, ts),
                refusals=lambda: self._refusals(name),
            )
            sender = make_sender(self._destinations[name], context)
            self._senders[name] = sender
        return sender

    def _remember_refusal(self, name: str, sop_class_uid: str, ts_uid: str) -> None:
        with self._lock, self._conn:
            self._conn.execute(
                "INSERT INTO outbox_refusal VALUES (?,?,?,?) ON CONFLICT DO UPDATE SET"
                " learnt_at = excluded.learnt_at",
                (name, sop_class_uid, ts_uid, self._clock()),
            )
        log.info(
            "outbox.refusal_learnt",
            extra={"destination": name, "sop_class_uid": sop_class_uid, "ts": ts_uid},
        )

    def _refusals(self, name: str) -> frozenset[tuple[str, str]]:
        since = self._clock() - REFUSAL_TTL_SECONDS
        with self._lock:
            rows = self._conn.execute(
                "SELECT sop_class_uid, transfer_syntax_uid FROM outbox_refusal"
                " WHERE destination = ? AND learnt_at >= ?",
                (name, since),
            ).fetchall()
        return frozenset((str(a), str(b)) for a, b in rows)

    def _backoff(self, attempts: int) -> float:
        p = self._policy
        delay = min(p.backoff_max_seconds, p.backoff_base_seconds * 2 ** max(attempts - 1, 0))
        return float(delay) * (0.5 + 0.5 * self._rng.random())

    def _process(self, name: str, conn: sqlite3.Connection) -> tuple[int, float | None]:
        """Send one batch of due rows of ``name``; return (rows handled, seconds to next due)."""
        now = self._clock()
        rows = [
            row_to_delivery(r)
            for r in conn.execute(
                f"SELECT {COLUMNS} FROM outbox WHERE destination = ? AND state = 'pending'"
                " AND next_attempt_at <= ? ORDER BY next_attempt_at, id LIMIT ?",
                (name, now, self._policy.batch_size),
            ).fetchall()
        ]
        if not rows:
            nxt = conn.execute(
                "SELECT MIN(next_attempt_at) FROM outbox"
                " WHERE destination = ? AND state = 'pending'",
                (name,),
            ).fetchone()[0]
            return 0, None if nxt is None else max(float(nxt) - now, 0.0)
        config = self._destinations[name]
        allowed = getattr(config, "sop_classes", None)
        is_fallback_on = bool(getattr(config, "sc_fallback", False))
        outcomes: dict[int, Outcome] = {}
        parcels: list[Parcel] = []
        for row in rows:
            parcel, refusal = self._parcel(row, allowed, is_fallback_on)
            if parcel is None:
                outcomes[row.id] = refusal
            else:
                parcels.append(parcel)
        by_id = {r.id: r for r in rows}
        failure: str | None = None
        if parcels:
            try:
                for o in self._sender(name).send(parcels):
                    outcomes[o.row_id] = o
            except BatchError as exc:
                failure = str(exc)
                for o in exc.partial:
                    outcomes[o.row_id] = o
            except DestinationError as exc:
                failure = str(exc)
            except (
                Exception
            ) as exc:  # a sender bug must not kill the worker: back off, keep it visible
                log.exception("outbox.sender_crashed", extra={"destination": name})
                failure = f"internal error in sender: {type(exc).__name__}: {exc}"
        # SOP class refused: switch to the SC rendering where allowed, else dead
        retry_with_fallback = [
            rid
            for rid, o in outcomes.items()
            if o.kind is OutcomeKind.REFUSED
            and is_fallback_on
            and by_id[rid].fallback_path is not None
            and not by_id[rid].is_fallback_used
        ]
        self._record(conn, name, rows, outcomes, failure, retry_with_fallback)
        return len(rows), 0.0

    def _parcel(
        self, row: Delivery, allowed: Sequence[str] | None, is_fallback_on: bool
    ) -> tuple[Parcel | None, Outcome]:
        path, sop_class = row.path, row.sop_class_uid
        use_fallback = row.is_fallback_used
        if allowed is not None and sop_class not in allowed and not use_fallback:
            if is_fallback_on and row.fallback_path is not None:
                use_fallback = True
            else:
                return None, Outcome(
                    row.id,
                    OutcomeKind.REFUSED,
                    detail=f"SOP class {sop_class} is not in the destination's sop_classes",
                )
        if use_fallback and row.fallback_path is not None:
            try:
                h = read_object_uids(row.fallback_path)
            except ResultError as exc:
                return None, Outcome(row.id, OutcomeKind.REFUSED, detail=str(exc))
            return (
                Parcel(
                    row.id,
                    row.fallback_path,
                    h.sop_uid,
                    h.sop_class_uid,
                    h.study_uid,
                    h.series_uid,
                    h.transfer_syntax_uid,
                ),
                Outcome(row.id, OutcomeKind.DELIVERED),
            )
        if not path.is_file():
            return None, Outcome(
                row.id, OutcomeKind.REFUSED, detail=f"file {path} is gone from the store"
            )
        return (
            Parcel(
                row.id,
                path,
                row.sop_uid,
                sop_class,
                row.study_uid,
                row.series_uid,
                row.transfer_syntax_uid,
                row.fallback_path,
            ),
            Outcome(row.id, OutcomeKind.DELIVERED),
        )

    def _record(
        self,
        conn: sqlite3.Connection,
        name: str,
        rows: Sequence[Delivery],
        outcomes: Mapping[int, Outcome],
        failure: str | None,
        retry_with_fallback: Sequence[int],
    ) -> None:
        now = self._clock()
        delivered = dead = retried = 0
        done: list[Delivery] = []
        lost: list[Delivery] = []
        held_dead: Sequence[int] = ()
        with self._lock if conn is self._conn else contextlib.nullcontext(), conn:
            marks = ",".join("?" * len(rows))
            withdrawn = {
                int(r[0])
                for r in conn.execute(
                    f"SELECT id FROM outbox WHERE state = 'withdrawn' AND id IN ({marks})",
                    [r.id for r in rows],
                )
            }
            for row in rows:
                o = outcomes.get(row.id)
                if row.id in withdrawn and (o is None or o.kind is not OutcomeKind.DELIVERED):
                    continue  # withdrawn meanwhile and not sent: it stays withdrawn
                became = self._record_row(
                    conn, row, o, now, failure, fallback=row.id in retry_with_fallback
                )
                if became == "delivered":
                    delivered += 1
                    done.append(row)
                elif became == "dead":
                    dead += 1
                    lost.append(row)
                else:
                    retried += 1
            sent_late = [r for r in done if r.id in withdrawn]
            if sent_late:
                # withdrawn while this batch was sending it: the destination has it now, so it
                # gets the rejection note as well
                self._queue_notes(conn, name, sent_late, now)
            if failure is not None:
                # the destination itself failed: every other due row waits as long as this batch
                held_dead = self._hold_others(conn, name, {r.id for r in rows}, now, failure)
        log.info(
            "outbox.batch",
            extra={
                "destination": name,
                "delivered": delivered,
                "retry": retried,
                "dead": dead,
                "failure": failure is not None,
            },
        )
        self._notify(name, done, lost, held_dead)

    def _record_row(
        self,
        conn: sqlite3.Connection,
        row: Delivery,
        o: Outcome | None,
        now: float,
        failure: str | None,
        *,
        fallback: bool,
    ) -> Literal["delivered", "dead", "retry"]:
        """Record one row's outcome; what the row became."""
        if fallback:  # the destination refused the SOP class: send the SC fallback next
            conn.execute(
                "UPDATE outbox SET use_fallback = 1, next_attempt_at = ?, updated_at = ?,"
                " last_status = ?, last_error = ? WHERE id = ?",
                (now, now, o.status if o else None, _err(o, "SOP class refused"), row.id),
            )
            return "retry"
        if o is not None and o.kind is OutcomeKind.DELIVERED:
            is_config_fallback = (
                not row.is_fallback_used
                and o.sent_sop_uid is not None
                and o.sent_sop_uid != row.sop_uid
            )
            note = o.detail or None
            if is_config_fallback:
                note = "SOP class not in the destination's sop_classes; SC fallback sent"
            conn.execute(
                "UPDATE outbox SET state = 'delivered', delivered_at = ?, updated_at = ?,"
                " attempts = attempts + 1, last_status = ?,"
                " last_error = CASE WHEN use_fallback = 1 THEN last_error ELSE ? END,"
                " use_fallback = MAX(use_fallback, ?),"
                " sent_sop_uid = ?, sent_transfer_syntax_uid = ? WHERE id = ?",
                (
                    now,
                    now,
                    o.status,
                    note,
                    int(is_config_fallback),
                    o.sent_sop_uid,
                    o.sent_transfer_syntax_uid,
                    row.id,
                ),
            )
            return "delivered"
        if o is not None and o.kind is OutcomeKind.REFUSED:
            conn.execute(
                "UPDATE outbox SET state = 'dead', updated_at = ?, attempts = attempts + 1,"
                " last_status = ?, last_error = ? WHERE id = ?",
                (now, o.status, _err(o, "refused"), row.id),
            )
            return "dead"
        attempts = row.attempts + 1
        is_dead = attempts >= self._policy.max_attempts
        conn.execute(
            "UPDATE outbox SET state = ?, attempts = ?, next_attempt_at = ?,"
            " updated_at = ?, last_status = ?, last_error = ? WHERE id = ?",
            (
                "dead" if is_dead else "pending",
                attempts,
                now + self._backoff(attempts),
                now,
                o.status if o else None,
                _err(o, failure or "no outcome from sender"),
                row.id,
            ),
        )
        return "dead" if is_dead else "retry"

    def _notify(
        self,
        name: str,
        done: Sequence[Delivery],
        lost: Sequence[Delivery],
        held_dead: Sequence[int],
    ) -> None:
        """Tell the listeners (the audit log) what was delivered and what died."""
        if self._listeners and (done or lost or held_dead):
            lost = [*lost, *(self.get(rid) for rid in held_dead)]
            for callback in self._listeners:
                try:
                    callback(name, done, lost)
                except Exception:  # noqa: BLE001 - a listener must not stop deliveries
                    log.exception("outbox.listener_failed", extra={"destination": name})

    def _queue_notes(
        self, conn: sqlite3.Connection, name: str, rows: Sequence[Delivery], now: float
    ) -> None:
        from node.delivery.rejections import accepts_notes, notes_for

        if not accepts_notes(self._destinations[name]):
            return
        notes = notes_for(conn, [r.sop_uid for r in rows])
        for note in sorted(set(notes.values())):
            path = Path(note)
            try:
                header = read_object_uids(path)
            except ResultError:
                log.exception("outbox.rejection_note_unreadable", extra={"destination": name})
                continue
            _insert(conn, name, path, header, fallback=None, job_id=path.stem, now=now)
            log.info("outbox.rejection_note_queued_late", extra={"destination": name})

    def _hold_others(
        self, conn: sqlite3.Connection, name: str, done: set[int], now: float, failure: str
    ) -> Sequence[int]:
        others = conn.execute(
            "SELECT id, attempts FROM outbox WHERE destination = ? AND state = 'pending'"
            " AND next_attempt_at <= ?",
            (name, now),
        ).fetchall()
        dead: list[int] = []
        for rid, attempts in others:
            if rid in done:
                continue
            n = int(attempts) + 1
            is_dead = n >= self._policy.max_attempts
            conn.execute(
                "UPDATE outbox SET state = ?, attempts = ?, next_attempt_at = ?, updated_at = ?,"
                " last_error = ? WHERE id = ?",
                ("dead" if is_dead else "pending", n, now + self._backoff(n), now, failure, rid),
            )
            if is_dead:
                dead.append(rid)
        return dead


def _err(o: Outcome | None, default: str) -> str:
    if o is None:
        return default
    code = f"status 0x{o.status:04X}: " if o.status is not None else ""
    return f"{code}{o.detail or default}"


def _insert(
    conn: sqlite3.Connection,
    dest: str,
    path: Path,
    header: ObjectUids,
    *,
    fallback: Path | None,
    job_id: str,
    now: float,
) -> int:
    """Insert one (object, destination) row, or revive it when it is dead; return its id."""
    conn.execute(
        "INSERT INTO outbox (destination, sop_uid, sop_class_uid, study_uid,"
        " series_uid, transfer_syntax_uid, path, fallback_path, job_id, state,"
        " next_attempt_at, created_at, updated_at)"
        " VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)"
        " ON CONFLICT (sop_uid, destination) DO UPDATE SET"
        " state = excluded.state, attempts = 0,"
        " next_attempt_at = excluded.created_at,"
        " updated_at = excluded.created_at, path = excluded.path,"
        " fallback_path = excluded.fallback_path, use_fallback = 0,"
        " job_id = excluded.job_id, last_error = NULL, last_status = NULL"
        " WHERE outbox.state = 'dead'",
        (
            dest,
            header.sop_uid,
            header.sop_class_uid,
            header.study_uid,
            header.series_uid,
            header.transfer_syntax_uid,
            str(Path(path).resolve()),
            str(Path(fallback).resolve()) if fallback else None,
            job_id,
            DeliveryState.PENDING.value,
            now,
            now,
            now,
        ),
    )
    row = conn.execute(
        "SELECT id FROM outbox WHERE sop_uid = ? AND destination = ?",
        (header.sop_uid, dest),
    ).fetchone()
    return int(row[0])
