"""Retention: remove finished studies (originals, results, their jobs and deliveries) so the disk
never fills.

A study is *finished* when it is complete (its stable window closed), its newest completion was
routed, none of its jobs is queued or running and none of its deliveries is pending.  Its *end*
is the latest of: completion, last arrival, job end and delivery update.  Two rules remove
finished studies, oldest end first:

- **age**: ``retention.days`` after its end;
- **space**: while the headroom — free disk under ``data_dir``, or what is left of
  ``node.quota_bytes``, whichever is smaller — is below ``retention.low_watermark_bytes``,
  until it reaches ``retention.free_target_bytes`` (default: the low watermark).

Ingest itself refuses new instances with 0xA700 at the *high* watermark (``node.quota_bytes``
reached or less than ``node.min_free_bytes`` free), so a full disk is never written to; retention
makes room again.  A study with pending work is never removed.

Files refused at ingest (``data_dir/quarantine``, each with a JSON reason) are removed
``retention.quarantine_days`` (default: ``retention.days``) after they arrived, each with a
``quarantine_removed`` event; without an age rule they are kept for the administrator.

Removal of one study is one SQLite transaction: the eligibility check, the deletion of its
instance, series and study rows, its jobs (and their events), routings and outbox rows, and a
``removed`` event (reason, bytes, counts) in the index's ``events`` table.  The files are
unlinked after the commit; a crash in between leaves unreferenced files only.  The removed
study can be received again and is then treated as new.

Retention owns none of the job or outbox tables: the components that do are handed in as
``study_rows`` (``StudyRows``: ``node.jobs.queries.JOB_ROWS`` and
``node.delivery.queries.DELIVERY_ROWS``), each answering "may this study go, and when was its
last activity?" and deleting its own rows inside retention's transaction.
"""

from __future__ import annotations

import json
import logging
import shutil
import sqlite3
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from node.config import RetentionConfig

__all__ = [
    "FinalWorkitems",
    "Purged",
    "Removal",
    "Retention",
    "StudyHold",
    "StudyRows",
    "study_candidates",
]

log = logging.getLogger(__name__)

_DAY = 86400.0


@dataclass(frozen=True, slots=True)
class Removal:
    """One removed study."""

    study_uid: str
    reason: str  # "age" or "space"
    bytes_freed: int
    instances: int
    result_objects: int
    ended_at: float


@dataclass(frozen=True, slots=True)
class StudyHold:
    """What one owner of study rows says about a study."""

    keep: bool
    """Work is not finished (not routed yet, a job queued or running, a delivery pending)."""
    last_activity: float | None = None
    """When the owner's rows of the study last changed."""


@dataclass(frozen=True, slots=True)
class Purged:
    """What one owner deleted of a study."""

    job_ids: list[str] = field(default_factory=list)
    """Jobs removed; their result folders ``data_dir/results/<job_id>`` go too."""
    result_objects: int = 0


class FinalWorkitems(Protocol):
    """What retention needs of the workitems table (``node.store.workitems.WorkitemStore``)."""

    def prune_final(self, before: float) -> list[str]:
        """Delete the final workitems last changed before ``before``; their UIDs."""
        ...


class StudyRows(Protocol):
    """A component that keeps rows of a study in the index (the job queue, the outbox)."""

    def hold(self, conn: sqlite3.Connection, study_uid: str, generation: int) -> StudyHold:
        """Whether the study (at completion ``generation``) must stay, and its last activity."""
        ...

    def purge(self, conn: sqlite3.Connection, study_uid: str) -> Purged:
        """Delete the study's rows inside the caller's transaction."""
        ...


def study_candidates(
    conn: sqlite3.Connection, study_rows: Sequence[StudyRows] = ()
) -> list[tuple[str, float]]:
    """Finished studies as (study_uid, ended_at), oldest end first (see the module doc)."""
    out: list[tuple[str, float]] = []
    rows = conn.execute(
        "SELECT study_uid, generation, last_received, COALESCE(completed_at, 0) FROM studies"
        " WHERE state = 'complete'"
    ).fetchall()
    for study_uid, generation, last_received, completed_at in rows:
        ended = max(float(last_received), float(completed_at))
        keep = False
        for owner in study_rows:
            hold = owner.hold(conn, str(study_uid), int(generation))
            if hold.keep:
                keep = True
                break
            ended = max(ended, float(hold.last_activity or 0.0))
        if not keep:
            out.append((str(study_uid), ended))
    out.sort(key=lambda c: (c[1], c[0]))
    return out


class Retention:
    """Applies the retention policy to the node's data directory.

    Parameters
    ----------
    data_dir:
        The node's data directory (``index.sqlite`` and stored files).
    config:
        The ``retention`` section.
    quota_bytes:
        ``node.quota_bytes``: the headroom is also limited by what is left of it.
    clock:
        Seconds since the epoch; injectable for tests.
    free_bytes:
        Free bytes of the file system holding ``data_dir``; injectable for tests.
    on_removed:
        Called after each removal (the node refreshes the spool's usage counter).
    study_rows:
        The owners of the other tables holding rows of a study (job queue, outbox); a study is
        removed only when none of them holds it, and each deletes its own rows.
    workitems:
        The owner of the UPS workitems table: final workitems older than
        ``retention.workitems_days`` (default ``retention.days``) are deleted through it.
    on_workitems_removed:
        Called with the UIDs of the workitems each pass deleted (the node audits them).
    """

    def __init__(
        self,
        data_dir: Path,
        config: RetentionConfig,
        *,
        quota_bytes: int | None = None,
        clock: Callable[[], float] = time.time,
        free_bytes: Callable[[Path], int] | None = None,
        on_removed: Callable[[Removal], None] | None = None,
        study_rows: Sequence[StudyRows],
        workitems: FinalWorkitems | None = None,
        on_workitems_removed: Callable[[list[str]], None] | None = None,
    ) -> None:
        self._data_dir = Path(data_dir)
        self._workitems = workitems
        self._on_workitems_removed = on_workitems_removed
        self._study_rows = tuple(study_rows)
        self._db = self._data_dir / "index.sqlite"
        self._config = config
        self._quota = quota_bytes
        self._clock = clock
        self._free = free_bytes or (lambda p: shutil.disk_usage(p).free)
        self._on_removed = on_removed
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    # ------------------------------------------------------------------ measuring
    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self._db, timeout=30, isolation_level=None)
        conn.execute("PRAGMA busy_timeout=30000")
        return conn

    def used_bytes(self) -> int:
        """Bytes of stored originals plus result files."""
        conn = self._connect()
        try:
            originals = int(
                conn.execute("SELECT COALESCE(SUM(size_bytes), 0) FROM instances").fetchone()[0]
            )
        finally:
            conn.close()
        results = self._data_dir / "results"
        extra = sum(p.stat().st_size for p in results.rglob("*") if p.is_file())
        return originals + extra

    def headroom_bytes(self) -> int:
        """Free disk under ``data_dir``, or what is left of the quota, whichever is smaller."""
        free = self._free(self._data_dir)
        if self._quota is not None:
            free = min(free, self._quota - self.used_bytes())
        return free

    # ------------------------------------------------------------------ one pass
    def run_once(self) -> list[Removal]:
        """Apply both rules once; return what was removed."""
        with self._lock:
            removed: list[Removal] = []
            conn = self._connect()
            try:
                now = self._clock()
                candidates = study_candidates(conn, self._study_rows)
                if self._config.days is not None:
                    limit = now - self._config.days * _DAY
                    for uid, ended in candidates:
                        if ended <= limit:
                            r = self._remove(conn, uid, "age", now)
                            if r is not None:
                                removed.append(r)
                self._expire_quarantine(conn, now)
                self._expire_workitems(now)
                low = self._config.low_watermark_bytes
                if low is not None and self.headroom_bytes() < low:
                    target = max(self._config.free_target_bytes or low, low)
                    gone = {r.study_uid for r in removed}
                    for uid, _ended in study_candidates(conn, self._study_rows):
                        if uid in gone:
                            continue
                        if self.headroom_bytes() >= target:
                            break
                        r = self._remove(conn, uid, "space", now)
                        if r is not None:
                            removed.append(r)
                    if self.headroom_bytes() < low:
                        log.warning(
                            "retention.still_low",
                            extra={"headroom_bytes": self.headroom_bytes(), "low_watermark": low},
                        )
            finally:
                conn.close()
        return removed

    def _remove(
        self, conn: sqlite3.Connection, study_uid: str, reason: str, now: float
    ) -> Removal | None:
        conn.execute("BEGIN IMMEDIATE")
        try:
            # check again inside the write lock: work may have arrived since the listing
            ended = dict(study_candidates(conn, self._study_rows)).get(study_uid)
            if ended is None:
                conn.execute("ROLLBACK")
                return None
            files = [
                (str(p), int(s))
                for p, s in conn.execute(
                    "SELECT path, size_bytes FROM instances WHERE study_uid=?", (study_uid,)
                )
            ]
            job_ids: list[str] = []
            objects = 0
            for owner in self._study_rows:
                purged = owner.purge(conn, study_uid)
                job_ids.extend(purged.job_ids)
                objects += purged.result_objects
            for table in ("instances", "series", "studies", "prior_studies"):
                conn.execute(f"DELETE FROM {table} WHERE study_uid=?", (study_uid,))  # noqa: S608
            result_dirs = [self._data_dir / "results" / j for j in job_ids]
            result_bytes = sum(
                p.stat().st_size for d in result_dirs if d.is_dir() for p in d.iterdir()
            )
            freed = sum(s for _, s in files) + result_bytes
            detail = {
                "reason": reason,
                "bytes": freed,
                "instances": len(files),
                "jobs": len(job_ids),
                "result_objects": objects,
                "ended_at": ended,
            }
            conn.execute(
                "INSERT INTO events(ts, kind, study_uid, detail) VALUES (?,?,?,?)",
                (now, "removed", study_uid, json.dumps(detail)),
            )
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        for rel, _size in files:
            path = Path(rel) if Path(rel).is_absolute() else self._data_dir / rel
            path.unlink(missing_ok=True)
            self._prune(path.parent)
        for d in result_dirs:
            shutil.rmtree(d, ignore_errors=True)
        removal = Removal(study_uid, reason, freed, len(files), objects, ended)
        log.info(
            "retention.removed",
            extra={"study_uid": study_uid, "reason": reason, "bytes": freed},
        )
        if self._on_removed is not None:
            self._on_removed(removal)
        return removal

    def _workitems_days(self) -> float | None:
        days = self._config.workitems_days
        return self._config.days if days is None else days

    def _expire_workitems(self, now: float) -> list[str]:
        """Delete final workitems older than the workitem retention (none when it is unset)."""
        days = self._workitems_days()
        if self._workitems is None or days is None:
            return []
        uids = self._workitems.prune_final(now - days * _DAY)
        if uids:
            log.info("retention.workitems_removed", extra={"workitems": len(uids)})
            if self._on_workitems_removed is not None:
                self._on_workitems_removed(uids)
        return uids

    def _expire_quarantine(self, conn: sqlite3.Connection, now: float) -> int:
        """Remove quarantined files older than the quarantine age; return how many."""
        days = self._config.quarantine_days
        if days is None:
            days = self._config.days
        folder = self._data_dir / "quarantine"
        if days is None or not folder.is_dir():
            return 0
        limit = now - days * _DAY
        removed = 0
        for path in sorted(folder.glob("*.dcm")):
            reason_file = path.with_suffix(".json")
            try:
                reason = json.loads(reason_file.read_text())
                arrived = float(reason["received_at"])
            except (OSError, ValueError, KeyError, TypeError):
                reason, arrived = {}, path.stat().st_mtime  # a reason file lost or damaged
            if arrived > limit:
                continue
            size = path.stat().st_size
            conn.execute(
                "INSERT INTO events(ts, kind, study_uid, sop_uid, detail) VALUES (?,?,?,?,?)",
                (
                    now,
                    "quarantine_removed",
                    reason.get("study_uid"),
                    reason.get("sop_uid"),
                    json.dumps({"file": path.name, "bytes": size, "quarantined_at": arrived}),
                ),
            )
            path.unlink(missing_ok=True)
            reason_file.unlink(missing_ok=True)
            removed += 1
        if removed:
            log.info("retention.quarantine_removed", extra={"files": removed})
        return removed

    def _prune(self, folder: Path) -> None:
        """Remove empty folders up to (not including) the data directory's top level."""
        top = {self._data_dir, self._data_dir / "studies"}
        while folder not in top and self._data_dir in folder.parents:
            try:
                folder.rmdir()
            except OSError:
                return
            folder = folder.parent

    # ------------------------------------------------------------------ background
    def start(self) -> None:
        """Run ``run_once`` every ``retention.interval_seconds`` in a daemon thread."""
        if self._thread is not None or not self.enabled:
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._loop, name="retention", daemon=True)
        self._thread.start()

    @property
    def enabled(self) -> bool:
        """True when a rule is configured."""
        return (
            self._config.days is not None
            or self._config.low_watermark_bytes is not None
            or (self._workitems is not None and self._workitems_days() is not None)
        )

    def stop(self) -> None:
        """Stop the background thread."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
            self._thread = None

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self.run_once()
            except Exception:  # noqa: BLE001 - retention must never take the node down
                log.exception("retention.failed")
            self._stop.wait(self._config.interval_seconds)
