"""The SQLite index (WAL) of studies, series, instances and their events.

One database file, ``data_dir/index.sqlite``.  Connections come from a small pool (association
threads come and go); writes run in ``BEGIN IMMEDIATE`` transactions so concurrent writers queue
on SQLite's lock instead of failing.  ``synchronous=NORMAL``: a committed transaction survives a
crash of the process at once; after a power loss the last transactions may be missing, and the
spool re-indexes the fsync'd files they described (``node.ingest.reconcile``).  Paths are stored
relative to the data directory.
"""

from __future__ import annotations

import datetime as dt
import json
import queue
import sqlite3
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from node.store.migrate import migrate
from node.store.schema import STEPS
from node.types import DicomJson, Instance, Series, Study

__all__ = [
    "AI_STATUSES",
    "SORT_KEYS",
    "STEPS",
    "STUDY_STATES",
    "Index",
    "IngestRecord",
    "ReceivedStudy",
    "StoredRef",
    "StudyQuery",
    "decode_received",
]

#: A stored study as ``Index.studies_received_raw`` reads it (series headers as JSON text).
ReceivedStudy = tuple[
    str, int, float, list[tuple[str, str | None, str | None, str | None, str, int]]
]


def decode_received(raw: ReceivedStudy) -> tuple[Study, float]:
    """The ``Study`` (as ``Index.get_study`` builds it) and time of a ``ReceivedStudy``."""
    uid, generation, received, rows = raw
    series = tuple(
        Series(
            series_uid=series_uid,
            modality=modality,
            body_part=body_part,
            series_description=description,
            instance_count=n,
            header=json.loads(header_json),
        )
        for series_uid, modality, body_part, description, header_json, n in rows
    )
    header = dict(series[0].header) if series else {}
    return Study(study_uid=uid, series=series, generation=generation, header=header), received


Status = Literal["stored", "duplicate", "replaced"]


@dataclass(frozen=True, slots=True)
class StoredRef:
    """What the index knows of a stored SOP instance (for duplicate/replacement decisions)."""

    sop_uid: str
    study_uid: str
    series_uid: str
    path: Path
    sha256: str
    dataset_sha256: str
    size_bytes: int


@dataclass(frozen=True, slots=True)
class IngestRecord:
    """One outcome of the spool, written to the index in a group-commit transaction."""

    instance: Instance
    status: Status
    dataset_sha256: str
    source: str
    received_at: float
    series_description: str | None = None
    series_header: DicomJson | None = None
    previous: StoredRef | None = None


_POOL = 8

#: What ``StudyQuery.status`` accepts: the study's state, or its AI status (its jobs).
STUDY_STATES = ("open", "complete")
AI_STATUSES = ("none", "queued", "running", "failed", "succeeded", "cancelled")

#: Sort keys of ``search_studies`` and their columns (a whitelist: never user text in SQL).
_SORTS: dict[str, tuple[str, ...]] = {
    "received": ("s.last_received",),
    "study_date": ("s.study_date", "s.study_time"),
    "patient_id": ("s.patient_id",),
    "patient_name": ("s.patient_name",),
    "accession": ("s.accession",),
    "study_uid": ("s.study_uid",),
}
SORT_KEYS = tuple(_SORTS)


@dataclass(frozen=True, slots=True)
class StudyQuery:
    """Filters and order of a studies search; None means "any".

    ``patient_id``, ``accession`` and ``modality`` match exactly; ``patient_name`` and
    ``description`` are case-insensitive substrings; ``date_from``/``date_to`` bound the Study
    Date (inclusive); ``status`` is one of ``STUDY_STATES`` or ``AI_STATUSES``.
    """

    patient_id: str | None = None
    patient_name: str | None = None
    accession: str | None = None
    description: str | None = None
    modality: str | None = None
    date_from: dt.date | None = None
    date_to: dt.date | None = None
    status: str | None = None
    sort: str = "received"
    descending: bool = True


def _like(text: str) -> str:
    """``text`` with LIKE's wildcards escaped (escape character ``!``)."""
    return text.replace("!", "!!").replace("%", "!%").replace("_", "!_")


#: Patient ID, Patient's Name, Accession Number, Study Date, Study Time, Study Description.
_STUDY_TAGS = ("00100020", "00100010", "00080050", "00080020", "00080030", "00081030")


def _first(header: DicomJson, tag: str) -> str | None:
    """The first value of ``tag`` in a DICOM JSON header as text (a PN's Alphabetic group)."""
    element = header.get(tag)
    if not isinstance(element, dict):
        return None
    values = element.get("Value")
    if not isinstance(values, list) or not values:
        return None
    value = values[0]
    if isinstance(value, dict):
        value = value.get("Alphabetic")
    return None if value is None or value == "" else str(value)


class _Result:
    """Rows of one query, fetched before the connection went back to the pool."""

    def __init__(self, rows: list[sqlite3.Row]) -> None:
        self._rows = rows

    def fetchone(self) -> sqlite3.Row | None:
        return self._rows[0] if self._rows else None

    def fetchall(self) -> list[sqlite3.Row]:
        return self._rows


class _Reader:
    """``execute`` on a borrowed connection, for read-only queries."""

    def __init__(self, index: Index) -> None:
        self._index = index

    def execute(self, sql: str, params: Sequence[Any] = ()) -> _Result:
        with self._index._use() as conn:
            return _Result(conn.execute(sql, params).fetchall())


class Index:
    """The SQLite index at ``db_path`` (normally ``data_dir/index.sqlite``).

    Parameters
    ----------
    db_path:
        The database file; its directory is the data directory that stored paths are relative to.
    ai_status_sql:
        The job queue's SQL expression of a study's AI status over ``s.study_uid``
        (``node.jobs.queries.ai_status_sql()``); without it the study list's ``ai_status`` is
        None and the AI status filters match nothing.
    routed_sql:
        The job queue's SQL condition "the current completion of ``s`` was routed"
        (``node.jobs.queries.routed_sql()``); without it ``unrouted_studies`` counts every
        complete study.
    """

    def __init__(
        self,
        db_path: Path,
        *,
        ai_status_sql: str | None = None,
        routed_sql: str | None = None,
    ) -> None:
        self.db_path = Path(db_path)
        self._ai_status = ai_status_sql
        self._routed = routed_sql
        self.data_dir = self.db_path.parent
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self._idle: queue.LifoQueue[sqlite3.Connection] = queue.LifoQueue(maxsize=_POOL)
        self._closed = False
        self._has_jobs = False
        with self._use() as conn:
            conn.execute("PRAGMA journal_mode=WAL")
            migrate(conn, "index", STEPS)

    # ------------------------------------------------------------ connections
    def _connect(self) -> sqlite3.Connection:
        if self._closed:
            raise RuntimeError("the index is closed")
        conn = sqlite3.connect(
            self.db_path, timeout=30.0, isolation_level=None, check_same_thread=False
        )
        conn.row_factory = sqlite3.Row
        conn.execute("PRAGMA synchronous=NORMAL")
        conn.execute("PRAGMA foreign_keys=ON")
        return conn

    @contextmanager
    def _use(self) -> Iterator[sqlite3.Connection]:
        """Borrow a pooled connection: never one per thread (associations are threads)."""
        try:
            conn = self._idle.get_nowait()
        except queue.Empty:
            conn = self._connect()
        try:
            yield conn
        finally:
            if self._closed:
                conn.close()
            else:
                try:
                    self._idle.put_nowait(conn)
                except queue.Full:
                    conn.close()

    def _conn(self) -> _Reader:
        return _Reader(self)

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        with self._use() as conn:
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield conn
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            else:
                conn.execute("COMMIT")

    def close(self) -> None:
        """Close the pooled connections (idempotent); borrowed ones close when returned."""
        self._closed = True
        while True:
            try:
                conn = self._idle.get_nowait()
            except queue.Empty:
                break
            with suppress(sqlite3.Error):
                conn.close()

    def _abs(self, rel: str) -> Path:
        return self.data_dir / rel

    def _rel(self, path: Path) -> str:
        try:
            return str(Path(path).relative_to(self.data_dir))
        except ValueError:
            return str(path)

    # ------------------------------------------------------------ ingest
    def lookup(self, sop_uid: str) -> StoredRef | None:
        """The stored instance with ``sop_uid``, or None."""
        row = (
            self._conn()
            .execute(
                "SELECT sop_uid, study_uid, series_uid, path, sha256, dataset_sha256, size_bytes"
                " FROM instances WHERE sop_uid = ?",
                (sop_uid,),
            )
            .fetchone()
        )
        if row is None:
            return None
        return StoredRef(
            sop_uid=row["sop_uid"],
            study_uid=row["study_uid"],
            series_uid=row["series_uid"],
            path=self._abs(row["path"]),
            sha256=row["sha256"],
            dataset_sha256=row["dataset_sha256"],
            size_bytes=int(row["size_bytes"]),
        )

    def has_series(self, series_uid: str) -> bool:
        """True when a series with a header is already indexed."""
        row = (
            self._conn()
            .execute("SELECT header_json FROM series WHERE series_uid = ?", (series_uid,))
            .fetchone()
        )
        return row is not None and row[0] != "{}"

    def mark_prior(self, study_uid: str, *, for_study_uid: str, source: str) -> None:
        """Remember that ``study_uid`` is being retrieved as the prior of ``for_study_uid``
        (before its first instance arrives): it is stored like any study and never routed."""
        with self._write() as conn:
            conn.execute(
                "INSERT OR IGNORE INTO prior_studies(study_uid, for_study_uid, source, marked_at)"
                " VALUES (?,?,?,?)",
                (study_uid, for_study_uid, source, time.time()),
            )

    def prior_of(self, study_uid: str) -> str | None:
        """The study ``study_uid`` was retrieved as the prior of (None: not a prior)."""
        row = (
            self._conn()
            .execute("SELECT for_study_uid FROM prior_studies WHERE study_uid = ?", (study_uid,))
            .fetchone()
        )
        return None if row is None else str(row[0])

    def series_count(self, series_uid: str) -> int:
        """How many instances of a series are stored."""
        row = (
            self._conn()
            .execute("SELECT COUNT(*) FROM instances WHERE series_uid = ?", (series_uid,))
            .fetchone()
        )
        return int(row[0]) if row is not None else 0

    def last_received_at(self) -> float | None:
        """Arrival time of the most recently indexed instance (None when empty)."""
        rows = self._conn().execute("SELECT MAX(received_at) FROM instances").fetchall()
        return None if rows[0][0] is None else float(rows[0][0])

    def series_paths(self, series_uid: str) -> set[Path]:
        """Absolute paths of the indexed files of a series."""
        rows = (
            self._conn()
            .execute("SELECT path FROM instances WHERE series_uid = ?", (series_uid,))
            .fetchall()
        )
        return {self._abs(r[0]) for r in rows}

    def total_bytes(self) -> int:
        """Sum of the sizes of every stored instance file."""
        rows = self._conn().execute("SELECT COALESCE(SUM(size_bytes), 0) FROM instances").fetchall()
        return int(rows[0][0])

    def commit(self, records: Sequence[IngestRecord]) -> list[str]:
        """Write ``records`` in ONE transaction (group commit); return studies re-opened by it.

        A stored/replaced instance in a complete study re-opens it (event ``study-reopened``).
        """
        reopened: list[str] = []
        if not records:
            return reopened
        with self._write() as conn:
            for rec in records:
                inst = rec.instance
                now = rec.received_at
                detail: dict[str, Any] = {
                    "sha256": inst.sha256,
                    "dataset_sha256": rec.dataset_sha256,
                    "bytes": inst.size_bytes,
                    "source": rec.source,
                    "calling_aet": inst.calling_aet,
                }
                if rec.status == "duplicate":
                    self._event(conn, "duplicate", inst, detail, now)
                    continue
                row = conn.execute(
                    "SELECT state FROM studies WHERE study_uid = ?", (inst.study_uid,)
                ).fetchone()
                if row is None:
                    conn.execute(
                        "INSERT INTO studies(study_uid, state, generation, first_received,"
                        " last_received) VALUES (?, 'open', 0, ?, ?)",
                        (inst.study_uid, now, now),
                    )
                else:
                    conn.execute(
                        "UPDATE studies SET last_received = MAX(last_received, ?), state = 'open'"
                        " WHERE study_uid = ?",
                        (now, inst.study_uid),
                    )
                    if row["state"] == "complete":
                        reopened.append(inst.study_uid)
                        self._event(conn, "study-reopened", inst, {"sop_uid": inst.sop_uid}, now)
                header = json.dumps(rec.series_header) if rec.series_header else "{}"
                conn.execute(
                    "INSERT INTO series(series_uid, study_uid, modality, body_part,"
                    " series_description, header_json, first_received) VALUES (?,?,?,?,?,?,?)"
                    " ON CONFLICT(series_uid) DO UPDATE SET header_json = CASE"
                    " WHEN series.header_json = '{}' THEN excluded.header_json"
                    " ELSE series.header_json END",
                    (
                        inst.series_uid,
                        inst.study_uid,
                        inst.modality,
                        inst.body_part,
                        rec.series_description,
                        header,
                        now,
                    ),
                )
                conn.execute(
                    "INSERT OR REPLACE INTO instances(sop_uid, series_uid, study_uid,"
                    " sop_class_uid, transfer_syntax_uid, path, size_bytes, sha256,"
                    " dataset_sha256, modality, body_part, calling_aet, source, received_at)"
                    " VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                    (
                        inst.sop_uid,
                        inst.series_uid,
                        inst.study_uid,
                        inst.sop_class_uid,
                        inst.transfer_syntax_uid,
                        self._rel(inst.path),
                        inst.size_bytes,
                        inst.sha256,
                        rec.dataset_sha256,
                        inst.modality,
                        inst.body_part,
                        inst.calling_aet,
                        rec.source,
                        now,
                    ),
                )
                self._describe_study(conn, inst, rec.series_header)
                if rec.previous is not None:
                    detail["previous_sha256"] = rec.previous.sha256
                self._event(conn, rec.status, inst, detail, now)
        return reopened

    @staticmethod
    def _describe_study(conn: sqlite3.Connection, inst: Instance, header: DicomJson | None) -> None:
        """Fill the study's search columns from a series header (first known value wins) and
        add the instance's modality to the study's modalities."""
        if header:
            conn.execute(
                "UPDATE studies SET patient_id = COALESCE(patient_id, ?),"
                " patient_name = COALESCE(patient_name, ?), accession = COALESCE(accession, ?),"
                " study_date = COALESCE(study_date, ?), study_time = COALESCE(study_time, ?),"
                " study_description = COALESCE(study_description, ?) WHERE study_uid = ?",
                (*(_first(header, tag) for tag in _STUDY_TAGS), inst.study_uid),
            )
        if inst.modality:
            conn.execute(
                "UPDATE studies SET modalities = (SELECT group_concat(m, '\\') FROM"
                " (SELECT DISTINCT r.modality AS m FROM series r WHERE r.study_uid = ?"
                " AND r.modality IS NOT NULL ORDER BY r.modality))"
                " WHERE study_uid = ? AND (modalities IS NULL"
                " OR instr('\\' || modalities || '\\', '\\' || ? || '\\') = 0)",
                (inst.study_uid, inst.study_uid, inst.modality),
            )

    @staticmethod
    def _event(
        conn: sqlite3.Connection,
        kind: str,
        inst: Instance | None,
        detail: dict[str, Any],
        ts: float,
        *,
        study_uid: str | None = None,
    ) -> None:
        conn.execute(
            "INSERT INTO events(ts, kind, study_uid, series_uid, sop_uid, detail)"
            " VALUES (?,?,?,?,?,?)",
            (
                ts,
                kind,
                inst.study_uid if inst else study_uid,
                inst.series_uid if inst else None,
                inst.sop_uid if inst else None,
                json.dumps(detail),
            ),
        )

    def record_quarantine(
        self, *, study_uid: str | None, sop_uid: str | None, reason: str, path: Path
    ) -> None:
        """Add a ``quarantined`` event (the file and its JSON reason are under quarantine/)."""
        with self._write() as conn:
            conn.execute(
                "INSERT INTO events(ts, kind, study_uid, sop_uid, detail) VALUES (?,?,?,?,?)",
                (
                    time.time(),
                    "quarantined",
                    study_uid,
                    sop_uid,
                    json.dumps({"reason": reason, "path": self._rel(path)}),
                ),
            )

    # ------------------------------------------------------------ assembly
    def open_studies(self) -> list[tuple[str, float]]:
        """(study_uid, last_received) of every study not complete."""
        rows = (
            self._conn()
            .execute("SELECT study_uid, last_received FROM studies WHERE state = 'open'")
            .fetchall()
        )
        return [(r[0], float(r[1])) for r in rows]

    def unrouted_studies(
        self, *, completed_before: float, limit: int = 1000
    ) -> list[tuple[str, float]]:
        """(study_uid, completed_at) of complete studies whose current completion generation
        has no routing record (the job queue's ``routed_sql``), completed before
        ``completed_before``, oldest first: the router failed on them or the node stopped in
        between.  Without a routings table no study was routed."""
        has_routings = self._routed is not None and bool(
            self._conn()
            .execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'routings'")
            .fetchall()
        )
        routed = f" AND NOT ({self._routed})" if has_routings else ""
        rows = (
            self._conn()
            .execute(
                "SELECT s.study_uid, s.completed_at FROM studies s WHERE s.state = 'complete'"
                f" AND s.completed_at < ?{routed} ORDER BY s.completed_at LIMIT ?",
                (completed_before, limit),
            )
            .fetchall()
        )
        return [(r[0], float(r[1])) for r in rows]

    def study_row(self, study_uid: str) -> dict[str, Any] | None:
        """The study's summary row (as in ``list_studies``), or None."""
        rows = self._summaries("WHERE s.study_uid = ?", (study_uid,))
        return rows[0] if rows else None

    def mark_complete(
        self, study_uid: str, *, forced: bool, if_idle_since: float | None = None
    ) -> int | None:
        """Mark an open study complete; return its new generation, or None if nothing changed.

        ``if_idle_since``: only complete when no instance arrived after that time (the timer's
        check, done inside the write transaction so a just-arrived instance wins).
        """
        with self._write() as conn:
            row = conn.execute(
                "SELECT state, generation, last_received FROM studies WHERE study_uid = ?",
                (study_uid,),
            ).fetchone()
            if row is None or row["state"] != "open":
                return None
            if if_idle_since is not None and float(row["last_received"]) > if_idle_since:
                return None
            generation = int(row["generation"]) + 1
            now = time.time()
            conn.execute(
                "UPDATE studies SET state = 'complete', generation = ?, completed_at = ?"
                " WHERE study_uid = ?",
                (generation, now, study_uid),
            )
            self._event(
                conn,
                "study-completed",
                None,
                {"generation": generation, "forced": forced},
                now,
                study_uid=study_uid,
            )
        return generation

    # ------------------------------------------------------------ queries
    def _ai_status_sql(self) -> str:
        """SQL of a study's AI status (given by the job queue, its owner), or NULL when none was
        given or the jobs table does not exist yet."""
        if self._ai_status is None:
            return "NULL"
        if not self._has_jobs:
            rows = (
                self._conn()
                .execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'jobs'")
                .fetchall()
            )
            self._has_jobs = bool(rows)
        return self._ai_status if self._has_jobs else "NULL"

    def _summaries(self, where: str, params: Sequence[Any]) -> list[dict[str, Any]]:
        rows = (
            self._conn()
            .execute(
                "SELECT s.study_uid, s.state, s.generation, s.first_received, s.last_received,"
                " s.completed_at, s.patient_id, s.patient_name, s.accession, s.study_date,"
                " s.study_time, s.study_description, s.modalities,"
                " (SELECT COUNT(*) FROM instances i WHERE i.study_uid = s.study_uid) AS n_inst,"
                " (SELECT COUNT(*) FROM series r WHERE r.study_uid = s.study_uid) AS n_series,"
                " (SELECT COALESCE(SUM(size_bytes), 0) FROM instances i"
                "  WHERE i.study_uid = s.study_uid) AS n_bytes,"
                f" {self._ai_status_sql()} AS ai_status"
                f" FROM studies s {where}",
                params,
            )
            .fetchall()
        )
        return [
            {
                "study_uid": r["study_uid"],
                "state": r["state"],
                "generation": int(r["generation"]),
                "instance_count": int(r["n_inst"]),
                "series_count": int(r["n_series"]),
                "size_bytes": int(r["n_bytes"]),
                "first_received": float(r["first_received"]),
                "last_received": float(r["last_received"]),
                "completed_at": None if r["completed_at"] is None else float(r["completed_at"]),
                "patient_id": r["patient_id"],
                "patient_name": r["patient_name"],
                "accession": r["accession"],
                "study_date": r["study_date"],
                "study_time": r["study_time"],
                "study_description": r["study_description"],
                "modalities": r["modalities"].split("\\") if r["modalities"] else [],
                "ai_status": r["ai_status"],
            }
            for r in rows
        ]

    def list_studies(self, *, limit: int = 100, offset: int = 0) -> list[dict[str, Any]]:
        """Studies, most recently received first, as plain dicts.

        Keys: study_uid, state ("open"/"complete"), generation, instance_count, series_count,
        size_bytes, first_received, last_received, completed_at (epoch seconds or None),
        patient_id, patient_name, accession, study_date (DICOM DA), study_time (TM),
        study_description, modalities (list), ai_status (``AI_STATUSES`` or None without jobs).
        """
        return self.search_studies(StudyQuery(), limit=limit, offset=offset)[0]

    def search_studies(
        self, query: StudyQuery, *, limit: int = 100, offset: int = 0
    ) -> tuple[list[dict[str, Any]], int]:
        """One page of the studies matching ``query``, sorted in SQL; and how many match.

        Every value is a bound parameter; the sort column comes from a fixed whitelist.
        """
        clauses: list[str] = []
        params: list[Any] = []
        if query.patient_id is not None:
            clauses.append("s.patient_id = ?")
            params.append(query.patient_id)
        if query.accession is not None:
            clauses.append("s.accession = ?")
            params.append(query.accession)
        if query.patient_name is not None:
            clauses.append("s.patient_name LIKE ? ESCAPE '!'")
            params.append(f"%{_like(query.patient_name)}%")
        if query.description is not None:
            clauses.append("s.study_description LIKE ? ESCAPE '!'")
            params.append(f"%{_like(query.description)}%")
        if query.date_from is not None:
            clauses.append("s.study_date >= ?")
            params.append(query.date_from.strftime("%Y%m%d"))
        if query.date_to is not None:
            clauses.append("s.study_date <= ?")
            params.append(query.date_to.strftime("%Y%m%d"))
        if query.modality is not None:
            clauses.append("s.study_uid IN (SELECT study_uid FROM series WHERE modality = ?)")
            params.append(query.modality)
        if query.status in ("open", "complete"):
            clauses.append("s.state = ?")
            params.append(query.status)
        elif query.status is not None:
            clauses.append(f"({self._ai_status_sql()}) = ?")
            params.append(query.status)
        where = f"WHERE {' AND '.join(clauses)}" if clauses else ""
        column = _SORTS[query.sort]
        direction = "DESC" if query.descending else "ASC"
        order = ", ".join(f"{c} {direction}" for c in column)
        rows = self._summaries(
            f"{where} ORDER BY {order}, s.study_uid {direction} LIMIT ? OFFSET ?",
            (*params, limit, offset),
        )
        total = self._conn().execute(f"SELECT COUNT(*) FROM studies s {where}", params).fetchall()
        return rows, int(total[0][0])

    def get_study(self, study_uid: str) -> Study | None:
        """The study with its series (one DICOM JSON header each), or None if unknown."""
        conn = self._conn()
        srow = conn.execute(
            "SELECT generation FROM studies WHERE study_uid = ?", (study_uid,)
        ).fetchone()
        if srow is None:
            return None
        rows = conn.execute(
            "SELECT r.series_uid, r.modality, r.body_part, r.series_description, r.header_json,"
            " (SELECT COUNT(*) FROM instances i WHERE i.series_uid = r.series_uid) AS n"
            " FROM series r WHERE r.study_uid = ? ORDER BY r.first_received, r.series_uid",
            (study_uid,),
        ).fetchall()
        series = tuple(
            Series(
                series_uid=r["series_uid"],
                modality=r["modality"],
                body_part=r["body_part"],
                series_description=r["series_description"],
                instance_count=int(r["n"]),
                header=json.loads(r["header_json"]),
            )
            for r in rows
        )
        header = dict(series[0].header) if series else {}
        return Study(
            study_uid=study_uid,
            series=series,
            generation=int(srow["generation"]),
            header=header,
        )

    def studies_received_raw(self, since: float, until: float) -> list[ReceivedStudy]:
        """Every study whose last instance arrived in ``[since, until)``, oldest first, in one
        query (rule replay over thousands of studies), each series header still JSON text
        (``decode_received`` gives the ``Study`` of ``get_study``; replay decodes in worker
        processes): ``(study_uid, generation, last_received, series)``, series =
        ``(series_uid, modality, body_part, series_description, header_json, instances)``."""
        rows = (
            self._conn()
            .execute(
                "SELECT s.study_uid, s.generation, s.last_received, r.series_uid, r.modality,"
                " r.body_part, r.series_description, r.header_json,"
                " (SELECT COUNT(*) FROM instances i WHERE i.series_uid = r.series_uid) AS n"
                " FROM studies s LEFT JOIN series r ON r.study_uid = s.study_uid"
                " WHERE s.last_received >= ? AND s.last_received < ?"
                " ORDER BY s.last_received, s.study_uid, r.first_received, r.series_uid",
                (since, until),
            )
            .fetchall()
        )
        out: list[ReceivedStudy] = []
        for r in rows:
            if not out or out[-1][0] != r["study_uid"]:
                out.append((r["study_uid"], int(r["generation"]), float(r["last_received"]), []))
            if r["series_uid"] is not None:
                out[-1][3].append(
                    (
                        r["series_uid"],
                        r["modality"],
                        r["body_part"],
                        r["series_description"],
                        r["header_json"],
                        int(r["n"]),
                    )
                )
        return out

    def series_instances(self, series_uid: str) -> list[Instance]:
        """Every stored instance of a series (absolute paths), in arrival order."""
        rows = (
            self._conn()
            .execute(
                "SELECT * FROM instances WHERE series_uid = ? ORDER BY received_at, sop_uid",
                (series_uid,),
            )
            .fetchall()
        )
        return [self._instance(r) for r in rows]

    def study_instances(self, study_uid: str) -> list[Instance]:
        """Every stored instance of a study (absolute paths), in arrival order."""
        rows = (
            self._conn()
            .execute(
                "SELECT * FROM instances WHERE study_uid = ? ORDER BY received_at, sop_uid",
                (study_uid,),
            )
            .fetchall()
        )
        return [self._instance(r) for r in rows]

    def get_instance(self, sop_uid: str) -> Instance | None:
        """The stored instance with ``sop_uid``, or None."""
        row = (
            self._conn().execute("SELECT * FROM instances WHERE sop_uid = ?", (sop_uid,)).fetchone()
        )
        return None if row is None else self._instance(row)

    def _instance(self, r: sqlite3.Row) -> Instance:
        return Instance(
            study_uid=r["study_uid"],
            series_uid=r["series_uid"],
            sop_uid=r["sop_uid"],
            sop_class_uid=r["sop_class_uid"],
            transfer_syntax_uid=r["transfer_syntax_uid"],
            path=self._abs(r["path"]),
            size_bytes=int(r["size_bytes"]),
            sha256=r["sha256"],
            modality=r["modality"],
            body_part=r["body_part"],
            calling_aet=r["calling_aet"],
        )

    def events(self, study_uid: str) -> list[dict[str, Any]]:
        """Events of a study in order: id, ts, kind, series_uid, sop_uid, detail (dict)."""
        rows = (
            self._conn()
            .execute(
                "SELECT id, ts, kind, series_uid, sop_uid, detail FROM events"
                " WHERE study_uid = ? ORDER BY id",
                (study_uid,),
            )
            .fetchall()
        )
        return [
            {
                "id": int(r["id"]),
                "ts": float(r["ts"]),
                "kind": r["kind"],
                "study_uid": study_uid,
                "series_uid": r["series_uid"],
                "sop_uid": r["sop_uid"],
                "detail": json.loads(r["detail"]),
            }
            for r in rows
        ]

    def count_events(self, kind: str) -> int:
        """How many events of ``kind`` exist (any study)."""
        rows = (
            self._conn().execute("SELECT COUNT(*) FROM events WHERE kind = ?", (kind,)).fetchall()
        )
        return int(rows[0][0])
