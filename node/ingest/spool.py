"""Durable storage of received instances, with group commit and quarantine.

``Spool.store`` returns only when the instance and its name are durable and it is indexed: the
caller writes the bytes to a temporary file and gets them to the device (``fdatasync``, or in
journal mode ``sync_file_range``: see ``node.ingest.durable``) in its own thread, so concurrent
associations' writes overlap; then one caller (the leader) takes every instance waiting at that
moment (from all associations and STOW requests), renames each into place, makes the names
durable once (directory ``fsync``s, or in journal mode ONE ``fsync`` that commits the journal
transaction holding every rename) and writes all index rows in ONE SQLite transaction, and only
then releases the callers.  Concurrent callers therefore share the sync and the index commit.

Layout under ``data_dir``::

    studies/<study_uid>/<series_uid>/<sop_uid>.dcm   stored PS3.10 files, bytes exactly as received
    tmp/                                             files being written (cleared on start)
    quarantine/<stamp>-<id>.dcm + .json              what could not be stored, with the reason
"""

from __future__ import annotations

import errno
import hashlib
import logging
import os
import shutil
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from node.errors import IngestError, OutOfResourcesError
from node.imaging.dicom_json import header_from_dataset
from node.ingest.durable import SyncMode, fsync_dir, fsync_path, resolve_mode, write_back
from node.ingest.header import (
    Header,
    dataset_offset,
    parse_received,
    parse_received_file,
)
from node.ingest.quarantine import quarantine
from node.ingest.receive import ReceivedFile
from node.ingest.reconcile import reconcile
from node.store.index import Index, IngestRecord, StoredRef
from node.types import DicomJson, Instance

__all__ = ["Spool", "StoreOutcome"]

log = logging.getLogger(__name__)

_FOLDER_RACE_TRIES = 8  # retention pruning a folder while it is being filled again
_MAX_BATCH = 512


@dataclass(frozen=True, slots=True)
class StoreOutcome:
    """What ``Spool.store`` did with one instance."""

    instance: Instance
    status: Literal["stored", "duplicate", "replaced"]


@dataclass(eq=False)
class _Job:
    header: Header
    tmp: Path | None
    size: int
    sha256: str
    dataset_sha256: str
    calling_aet: str | None
    source: str
    series_header: DicomJson | None
    received_at: float
    done: threading.Event = field(default_factory=threading.Event)
    promoted: bool = False
    outcome: StoreOutcome | None = None
    error: BaseException | None = None


def _is_full(exc: OSError) -> bool:
    return exc.errno in (errno.ENOSPC, errno.EDQUOT)


@dataclass
class _Batch:
    """What one group commit has put in place so far."""

    #: instances of this batch by SOP Instance UID (a UID sent twice in one batch)
    pending: dict[str, StoredRef] = field(default_factory=dict)
    records: list[IngestRecord] = field(default_factory=list)
    placed: list[tuple[_Job, IngestRecord]] = field(default_factory=list)
    #: folders whose entries changed: fsynced (full mode)
    to_sync: set[Path] = field(default_factory=set)
    #: the last file renamed: one fsync commits the journal (journal mode)
    last_renamed: Path | None = None
    #: files of replaced instances, removed once the index no longer names them
    obsolete: list[Path] = field(default_factory=list)

    def add(self, job: _Job, rec: IngestRecord) -> None:
        self.records.append(rec)
        self.placed.append((job, rec))


class Spool:
    """Durable, deduplicating store of PS3.10 files under ``data_dir`` (see module docstring).

    Parameters
    ----------
    data_dir:
        Root of the node's data.
    index:
        The SQLite index every stored instance is recorded in.
    quota_bytes:
        Refuse (0xA700) an instance that would bring the stored total above this.
    min_free_bytes:
        Refuse (0xA700) an instance when the file system would have less free space than this.
    sync:
        ``auto``: one journal commit per batch on ext4/XFS, else POSIX; ``full``: always POSIX
        (see ``node.ingest.durable``).
    """

    def __init__(
        self,
        data_dir: Path,
        index: Index,
        *,
        quota_bytes: int | None = None,
        min_free_bytes: int = 0,
        sync: Literal["auto", "full"] = "auto",
    ) -> None:
        self.data_dir = Path(data_dir)
        self.index = index
        self.quota_bytes = quota_bytes
        self.min_free_bytes = min_free_bytes
        self.studies_dir = self.data_dir / "studies"
        self.tmp_dir = self.data_dir / "tmp"
        self.quarantine_dir = self.data_dir / "quarantine"
        for d in (self.studies_dir, self.tmp_dir, self.quarantine_dir):
            d.mkdir(parents=True, exist_ok=True)
        for stale in self.tmp_dir.iterdir():  # never acknowledged: a crash hit mid-write
            stale.unlink(missing_ok=True)
        fsync_dir(self.data_dir)
        self.sync_mode: SyncMode = resolve_mode(self.data_dir, sync)
        self._clean_marker = self.data_dir / ".clean-shutdown"
        if not self._clean_marker.exists():
            reconcile(self.studies_dir, index)  # power loss may have cost index transactions
        self._clean_marker.unlink(missing_ok=True)
        self._lock = threading.Lock()
        self._used = index.total_bytes()
        self._reserved = 0
        self._series_seen: set[str] = set()
        self._pending: list[_Job] = []  # written to tmp/, waiting for a group commit
        self._pending_lock = threading.Lock()
        self._leading = False  # one caller at a time commits for everyone (see _submit)
        self._stopped = False
        self._listeners: list[Callable[[StoreOutcome], None]] = []
        self._durable_dirs: set[Path] = set()

    # ------------------------------------------------------------ life cycle
    def start(self) -> None:
        """Accept ``store`` calls (a new spool accepts them already)."""
        self._stopped = False
        self._clean_marker.unlink(missing_ok=True)

    def stop(self) -> None:
        """Refuse further ``store`` calls, let running commits finish, mark a clean shutdown."""
        self._stopped = True
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            with self._pending_lock:
                if not self._leading:
                    break
            time.sleep(0.01)
        else:
            return  # still committing: leave no marker, the next start reconciles
        self._clean_marker.touch()

    def add_listener(self, callback: Callable[[StoreOutcome], None]) -> None:
        """Call ``callback(outcome)`` after every committed stored/replaced instance."""
        self._listeners.append(callback)

    # ------------------------------------------------------------ storing
    def store(self, data: bytes, *, calling_aet: str | None, source: str) -> StoreOutcome:
        """Store one PS3.10 file durably; return only once it is fsync'd and indexed.

        Parameters
        ----------
        data:
            The complete file (preamble, ``DICM``, file meta, data set); stored byte for byte.
        calling_aet:
            The sender's AE title (C-STORE) or None (STOW-RS).
        source:
            Where it came from, for the events table (``"dimse"``, ``"stow"``...).

        Returns
        -------
        StoreOutcome
            ``stored`` (new), ``duplicate`` (same SOP Instance UID and identical data set: no
            second copy) or ``replaced`` (same SOP Instance UID, different data set: the newest
            is kept and the replacement recorded).

        Raises
        ------
        MalformedInstanceError, MissingAttributeError
            The file was moved to ``quarantine/`` with a JSON reason (PS3.4 B.2.3 0xC000/0xA900).
        OutOfResourcesError
            Disk or quota full (0xA700); nothing was written.
        IngestError
            The file could not be written for another reason; nothing was kept.
        """
        received_at = time.time()
        try:
            header = parse_received(data)
            offset = dataset_offset(data)
        except IngestError as exc:
            quarantine(
                self.quarantine_dir,
                self.index,
                data,
                exc,
                calling_aet=calling_aet,
                source=source,
                min_free_bytes=self.min_free_bytes,
            )
            raise
        view = memoryview(data)
        dataset_sha = hashlib.sha256(view[offset:]).hexdigest()
        file_sha = hashlib.sha256(view).hexdigest()
        size = len(data)
        prev = self.index.lookup(header.sop_uid)
        if prev is not None and prev.dataset_sha256 == dataset_sha and prev.path.is_file():
            job = self._job(header, None, size, file_sha, dataset_sha, calling_aet, source)
            job.received_at = received_at
            return self._submit(job)
        self._reserve(size)
        try:
            tmp = self._write_tmp(data)
            series_header = None
            if header.series_uid not in self._series_seen and not self.index.has_series(
                header.series_uid
            ):
                series_header = header_from_dataset(header.dataset)
            job = self._job(header, tmp, size, file_sha, dataset_sha, calling_aet, source)
            job.series_header = series_header
            job.received_at = received_at
            return self._submit(job)
        finally:
            with self._lock:
                self._reserved -= size

    def store_received(
        self, received: ReceivedFile, fd: int | None, *, calling_aet: str | None, source: str
    ) -> StoreOutcome:
        """``store`` for an instance already written to ``tmp/`` as it arrived (C-STORE).

        The file (file meta + data set, ``node.ingest.receive``) is synced here through ``fd``
        (still open; closed by the caller), its header parsed from the file, and it is renamed
        into place by the group commit: no copy.  The file is gone from ``tmp/`` when this
        returns or raises (stored, deduplicated, quarantined or removed).

        Raises
        ------
        As ``store``.
        """
        received_at = time.time()
        path, size = received.path, received.size
        try:
            try:
                header = parse_received_file(path, size)
            except IngestError as exc:
                quarantine(
                    self.quarantine_dir,
                    self.index,
                    path,
                    exc,
                    calling_aet=calling_aet,
                    source=source,
                    min_free_bytes=self.min_free_bytes,
                )
                raise
            prev = self.index.lookup(header.sop_uid)
            dataset_sha = received.dataset_sha256
            if prev is not None and prev.dataset_sha256 == dataset_sha and prev.path.is_file():
                path.unlink(missing_ok=True)
                job = self._job(
                    header, None, size, received.sha256, dataset_sha, calling_aet, source
                )
                job.received_at = received_at
                return self._submit(job)
            self._reserve(size, free_before=received.free_before)
            try:
                self._sync_received(path, fd)
                series_header = None
                if header.series_uid not in self._series_seen and not self.index.has_series(
                    header.series_uid
                ):
                    series_header = header_from_dataset(header.dataset)
                job = self._job(
                    header, path, size, received.sha256, dataset_sha, calling_aet, source
                )
                job.series_header = series_header
                job.received_at = received_at
                return self._submit(job)
            finally:
                with self._lock:
                    self._reserved -= size
        finally:
            path.unlink(missing_ok=True)  # still in tmp/: refused or failed (renamed if stored)

    def commit_received(
        self,
        header: Header,
        received: ReceivedFile,
        *,
        series_header: DicomJson | None,
        calling_aet: str | None,
        source: str,
    ) -> StoreOutcome:
        """The main process's half of ``store_received`` for a receiver process
        (``node.ingest.receivers``): the receiver parsed the header, hashed the file and synced
        its data; this deduplicates, reserves space and group-commits it.  The file is gone
        from ``tmp/`` when this returns or raises."""
        received_at = time.time()
        path, size = received.path, received.size
        try:
            prev = self.index.lookup(header.sop_uid)
            dataset_sha = received.dataset_sha256
            if prev is not None and prev.dataset_sha256 == dataset_sha and prev.path.is_file():
                path.unlink(missing_ok=True)
                job = self._job(
                    header, None, size, received.sha256, dataset_sha, calling_aet, source
                )
                job.received_at = received_at
                return self._submit(job)
            if not path.is_file():
                raise IngestError("the received file is gone; send the instance again")
            self._reserve(size, free_before=received.free_before)
            try:
                job = self._job(
                    header, path, size, received.sha256, dataset_sha, calling_aet, source
                )
                if header.series_uid not in self._series_seen and not self.index.has_series(
                    header.series_uid
                ):
                    job.series_header = series_header
                job.received_at = received_at
                return self._submit(job)
            finally:
                with self._lock:
                    self._reserved -= size
        finally:
            path.unlink(missing_ok=True)

    def _sync_received(self, path: Path, fd: int | None) -> None:
        own = fd is None
        try:
            if own:
                fd = os.open(path, os.O_RDONLY)
            assert fd is not None
            try:
                if self.sync_mode == "journal":
                    write_back(fd)
                else:
                    os.fdatasync(fd)
            finally:
                if own:
                    os.close(fd)
        except OSError as exc:
            if _is_full(exc):
                raise OutOfResourcesError("disk full while writing the instance") from exc
            raise IngestError(f"cannot write the instance: {exc.strerror}") from exc

    @staticmethod
    def _job(
        header: Header,
        tmp: Path | None,
        size: int,
        sha: str,
        dataset_sha: str,
        calling_aet: str | None,
        source: str,
    ) -> _Job:
        return _Job(
            header=header,
            tmp=tmp,
            size=size,
            sha256=sha,
            dataset_sha256=dataset_sha,
            calling_aet=calling_aet,
            source=source,
            series_header=None,
            received_at=time.time(),
        )

    def refresh_usage(self) -> None:
        """After retention removed studies: re-read usage, forget cached folders and series."""
        with self._lock:
            self._used = self.index.total_bytes()
            self._durable_dirs = set()
            self._series_seen = set()

    def _reserve(self, size: int, *, free_before: int | None = None) -> None:
        """Count ``size`` bytes against the quota and free space (``free_before``: the file is
        already on disk; the free space when it was started, before it used any)."""
        with self._lock:
            if self.quota_bytes is not None and (
                self._used + self._reserved + size > self.quota_bytes
            ):
                raise OutOfResourcesError(
                    f"storage quota of {self.quota_bytes} bytes reached; free space or raise "
                    "node.quota_bytes"
                )
            free = shutil.disk_usage(self.data_dir).free
            if free_before is not None:
                free = min(free_before, free + size)
            if free - self._reserved - size < self.min_free_bytes:
                raise OutOfResourcesError(
                    f"only {free} bytes free under the data directory (node.min_free_bytes = "
                    f"{self.min_free_bytes}); free disk space"
                )
            self._reserved += size

    def _write_tmp(self, data: bytes) -> Path:
        tmp = self.tmp_dir / f"{uuid.uuid4().hex}.part"
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o640)
            try:
                view = memoryview(data)
                while view:
                    written = os.write(fd, view)
                    view = view[written:]
                if self.sync_mode == "journal":
                    write_back(fd)  # on the device; the batch's one commit makes it durable
                else:
                    # the data and the size that reads it back; the inode's other metadata
                    # (times) need not be durable, the name is made durable by the directory fsync
                    os.fdatasync(fd)
            finally:
                os.close(fd)
        except OSError as exc:
            tmp.unlink(missing_ok=True)
            if _is_full(exc):
                raise OutOfResourcesError("disk full while writing the instance") from exc
            raise IngestError(f"cannot write the instance: {exc.strerror}") from exc
        return tmp

    def _submit(self, job: _Job) -> StoreOutcome:
        """Group commit, leader/follower style.

        The caller that finds nobody committing becomes the leader: it commits every waiting job
        (its own and those of other associations) in one batch, repeats until its own job is
        done, then hands leadership to the oldest waiting job's caller.  Followers just wait.
        A lone association thus commits in its own thread (no hand-off latency), while
        concurrent ones share directory fsyncs and one index transaction per batch.
        """
        if self._stopped:
            if job.tmp is not None:
                job.tmp.unlink(missing_ok=True)
            raise IngestError("the node is shutting down; send the instance again")
        with self._pending_lock:
            self._pending.append(job)
            lead = not self._leading
            self._leading = True
        if not lead:
            job.done.wait()
            if job.promoted:  # woken to lead, not finished
                job.promoted = False
                job.done.clear()
                lead = True
        if lead:
            self._lead(job)
        if job.error is not None:
            raise job.error
        assert job.outcome is not None
        return job.outcome

    def _lead(self, own: _Job) -> None:
        while not own.done.is_set():
            with self._pending_lock:
                batch = self._pending[:_MAX_BATCH]
                del self._pending[: len(batch)]
            if not batch:  # cannot happen while own is pending; never spin
                break
            try:
                self._commit(batch)
            except BaseException as exc:  # noqa: BLE001 - every waiting caller must be released
                log.exception("spool.commit_failed", extra={"batch": len(batch)})
                for j in batch:
                    if not j.done.is_set():
                        j.error = (
                            exc
                            if isinstance(exc, IngestError)
                            else IngestError(f"cannot commit the instance: {exc}")
                        )
                        j.done.set()
        with self._pending_lock:
            if self._pending:
                successor = self._pending[0]
                successor.promoted = True
                successor.done.set()
            else:
                self._leading = False

    def _final_dir(self, header: Header) -> Path:
        # UIDs were validated by parse_received: digits and dots only, never a separator or '..'
        return self.studies_dir / header.study_uid / header.series_uid

    def _make_dirs(self, final_dir: Path, to_sync: set[Path]) -> None:
        """Make the study and series folders.  Retention prunes empty folders of studies it
        removed without holding the spool's lock, so a folder seen here may go before the
        next one is made inside it: make the levels again, a bounded number of times."""
        if final_dir in self._durable_dirs:
            return
        for attempt in range(_FOLDER_RACE_TRIES):
            try:
                for d in (final_dir.parent, final_dir):
                    if not d.is_dir():
                        d.mkdir(exist_ok=True)
                        to_sync.add(d.parent)
                break
            except FileNotFoundError:
                if attempt == _FOLDER_RACE_TRIES - 1:
                    raise
        self._durable_dirs.add(final_dir)

    def _place(self, tmp: Path, path: Path, to_sync: set[Path]) -> None:
        """Rename a received file into its series folder.  Retention removes the folders of a
        study it removed (after its commit), so a folder known here may have gone when the
        same study is sent again, or go between making it and the rename: make it again and
        rename once more.  A folder holding a file is never pruned, so this ends."""
        for attempt in range(_FOLDER_RACE_TRIES):
            try:
                os.replace(tmp, path)
                return
            except FileNotFoundError:
                if not tmp.exists() or attempt == _FOLDER_RACE_TRIES - 1:
                    raise
                self._durable_dirs.discard(path.parent)
                self._make_dirs(path.parent, to_sync)

    def _commit(self, batch: list[_Job]) -> None:
        """Put a batch in place, make it durable with one index transaction, then release its
        callers.  Nothing of a batch that fails is acknowledged or left behind."""
        done = _Batch()
        try:
            for job in batch:
                self._put(job, done)
            self._make_durable(done)
            self.index.commit(done.records)
        except BaseException as exc:
            self._undo(batch, done)
            if isinstance(exc, OSError) and _is_full(exc):
                raise OutOfResourcesError("disk full while committing the instance") from exc
            if isinstance(exc, Exception) and "full" in str(exc).lower():
                raise OutOfResourcesError(f"index full: {exc}") from exc
            raise
        self._committed(done)

    def _put(self, job: _Job, done: _Batch) -> None:
        """Rename one received file into its series folder (or find it a duplicate)."""
        h = job.header
        prev = done.pending.get(h.sop_uid) or self.index.lookup(h.sop_uid)
        if prev is not None and prev.dataset_sha256 == job.dataset_sha256 and prev.path.is_file():
            if job.tmp is not None:
                job.tmp.unlink(missing_ok=True)
            inst = self._instance(h, prev.path, prev.size_bytes, prev.sha256, job)
            done.add(
                job,
                IngestRecord(inst, "duplicate", job.dataset_sha256, job.source, job.received_at),
            )
            return
        if job.tmp is None:  # was a duplicate when checked, no longer: resend needed
            job.error = IngestError("instance changed while being stored; send it again")
            job.done.set()
            return
        final_dir = self._final_dir(h)
        self._make_dirs(final_dir, done.to_sync)
        path = final_dir / f"{h.sop_uid}.dcm"
        if prev is not None and prev.path == path:
            path = final_dir / f"{h.sop_uid}.{job.sha256[:12]}.dcm"
        self._place(job.tmp, path, done.to_sync)
        done.last_renamed = path
        job.tmp = None
        done.to_sync.add(final_dir)
        inst = self._instance(h, path, job.size, job.sha256, job)
        status: Literal["stored", "replaced"] = "stored" if prev is None else "replaced"
        if prev is not None and prev.path != path:
            done.obsolete.append(prev.path)
        rec = IngestRecord(
            inst,
            status,
            job.dataset_sha256,
            job.source,
            job.received_at,
            series_description=h.series_description,
            series_header=job.series_header,
            previous=prev,
        )
        done.add(job, rec)
        done.pending[h.sop_uid] = StoredRef(
            h.sop_uid, h.study_uid, h.series_uid, path, job.sha256, job.dataset_sha256, job.size
        )

    def _make_durable(self, done: _Batch) -> None:
        if self.sync_mode == "journal":
            if done.last_renamed is not None:  # commits every rename and mkdir before it
                fsync_path(done.last_renamed)
        else:
            for d in sorted(done.to_sync, key=lambda p: len(p.parts), reverse=True):
                fsync_dir(d)

    @staticmethod
    def _undo(batch: list[_Job], done: _Batch) -> None:
        """Nothing of a failed batch is acknowledged: remove what was put in place."""
        for _job, rec in done.placed:
            if rec.status != "duplicate":
                rec.instance.path.unlink(missing_ok=True)
        for job in batch:
            if job.tmp is not None:
                job.tmp.unlink(missing_ok=True)

    def _committed(self, done: _Batch) -> None:
        """After the index commit: drop replaced files, count usage, release and notify."""
        kept = {r.instance.path for _, r in done.placed}
        for old in done.obsolete:
            if old not in kept:
                old.unlink(missing_ok=True)
        with self._lock:
            for _, rec in done.placed:
                if rec.status == "stored":
                    self._used += rec.instance.size_bytes
                elif rec.status == "replaced" and rec.previous is not None:
                    self._used += rec.instance.size_bytes - rec.previous.size_bytes
                self._series_seen.add(rec.instance.series_uid)
        for job, rec in done.placed:
            job.outcome = StoreOutcome(rec.instance, rec.status)
            job.done.set()
            log.debug(
                f"instance.{rec.status}",
                extra={
                    "study_uid": rec.instance.study_uid,
                    "sop_uid": rec.instance.sop_uid,
                    "bytes": rec.instance.size_bytes,
                },
            )
        for _, rec in done.placed:
            if rec.status == "duplicate":
                continue
            for listener in self._listeners:
                try:
                    listener(StoreOutcome(rec.instance, rec.status))
                except Exception:  # noqa: BLE001 - a listener must not break ingest
                    log.exception("spool.listener_failed")

    @staticmethod
    def _instance(h: Header, path: Path, size: int, sha: str, job: _Job) -> Instance:
        return Instance(
            study_uid=h.study_uid,
            series_uid=h.series_uid,
            sop_uid=h.sop_uid,
            sop_class_uid=h.sop_class_uid,
            transfer_syntax_uid=h.transfer_syntax_uid,
            path=path,
            size_bytes=size,
            sha256=sha,
            modality=h.modality,
            body_part=h.body_part,
            calling_aet=job.calling_aet,
        )
