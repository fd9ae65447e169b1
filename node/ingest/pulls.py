"""Pulls run by a node in the background (``POST /api/pull``), with their progress and outcome.

A ``PullRunner`` takes a source name and a ``PullQuery``, answers at once with a ``PullRecord``
(state ``queued``) and runs ``node.ingest.pull.pull`` on a small thread pool: C-GET and WADO-RS
instances go through the node's own ingest spool, C-MOVE sends them to the node's SCP, so pulled
instances take the same durable path as pushed ones.  When a pull ends, each study it brought in
is handed to ``on_study_pulled`` (the node completes it at once, so it is routed without waiting
for the stable window).

Records live in memory (the last ``keep`` of them); a restarted node forgets them, not the
instances, which are in the store.  Logs carry the pull id, source name, counts and study UIDs
only; the query's patient ID is never logged.
"""

from __future__ import annotations

import enum
import logging
import threading
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from node.config import DicomwebSource, DimseSource
from node.errors import AinodeError, IngestError, NotFoundError
from node.ingest.pull import InstanceSink, PullQuery, pull

__all__ = ["PullRecord", "PullRunner", "PullState"]

log = logging.getLogger(__name__)


class PullState(enum.StrEnum):
    """Where a background pull is."""

    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"  # every expected instance arrived
    FAILED = "failed"  # the source failed, or some instances did not arrive


@dataclass(slots=True)
class PullRecord:
    """One background pull: what was asked, how far it got, how it ended."""

    id: str
    source: str
    query: PullQuery
    state: PullState = PullState.QUEUED
    created_at: float = field(default_factory=time.time)
    started_at: float | None = None
    finished_at: float | None = None
    studies: list[str] = field(default_factory=list)
    done: int = 0
    total: int | None = None
    expected: int | None = None
    received: int = 0
    failed: int = 0
    errors: list[str] = field(default_factory=list)
    completed: list[str] = field(default_factory=list)

    @property
    def is_finished(self) -> bool:
        """True once the pull succeeded or failed."""
        return self.state in (PullState.SUCCEEDED, PullState.FAILED)

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict (dates as ISO strings)."""
        q = self.query
        return {
            "id": self.id,
            "source": self.source,
            "query": {
                "study_uid": q.study_uid,
                "patient_id": q.patient_id,
                "date_from": q.date_from.isoformat() if q.date_from else None,
                "date_to": q.date_to.isoformat() if q.date_to else None,
                "modality": q.modality,
            },
            "state": self.state.value,
            "created_at": self.created_at,
            "started_at": self.started_at,
            "finished_at": self.finished_at,
            "progress": {"done": self.done, "total": self.total},
            "studies": list(self.studies),
            "expected": self.expected,
            "received": self.received,
            "failed": self.failed,
            "errors": list(self.errors),
            "completed": list(self.completed),
        }


class PullRunner:
    """Runs pulls from the configured ``sources`` in the background.

    Parameters
    ----------
    sources:
        Source name -> config (``sources`` in the config).
    sink:
        The node's ingest spool.
    node_ae_title:
        Calling AE title and C-MOVE destination.
    on_study_pulled:
        Called with each Study Instance UID a pull brought instances of; returns True when that
        completed the study (False: it was complete already).
    timeout_seconds:
        DIMSE network timeout.
    workers:
        Pulls run at the same time; more wait in the queue.
    keep:
        Finished records kept for ``GET /api/pulls/{id}``.
    """

    def __init__(
        self,
        sources: Mapping[str, DimseSource | DicomwebSource],
        *,
        sink: InstanceSink,
        node_ae_title: str,
        on_study_pulled: Callable[[str], bool] | None = None,
        timeout_seconds: float = 60.0,
        workers: int = 2,
        keep: int = 200,
    ) -> None:
        self._sources = dict(sources)
        self._sink = sink
        self._node_ae_title = node_ae_title
        self._on_study_pulled = on_study_pulled
        self._timeout_seconds = timeout_seconds
        self._workers = workers
        self._keep = keep
        self._records: OrderedDict[str, PullRecord] = OrderedDict()
        self._lock = threading.Lock()
        self._pool: ThreadPoolExecutor | None = None
        self._is_stopping = False

    def submit(self, source: str, query: PullQuery) -> PullRecord:
        """Queue a pull and return its record at once.

        Raises
        ------
        NotFoundError
            ``source`` is not configured.
        ValueError
            The query names no study, patient or date (pulling a whole archive is refused).
        """
        if source not in self._sources:
            raise NotFoundError(
                f"unknown source '{source}'; configured: {', '.join(self._sources) or 'none'} "
                "(see 'sources' in the config)"
            )
        if query.is_empty():
            raise ValueError("a pull needs a study UID, a patient ID or a date range")
        record = PullRecord(id=uuid.uuid4().hex[:16], source=source, query=query)
        with self._lock:
            if self._is_stopping:
                raise AinodeError("the node is stopping; pull again once it runs")
            if self._pool is None:
                self._pool = ThreadPoolExecutor(self._workers, thread_name_prefix="pull")
            self._records[record.id] = record
            self._trim()
            self._pool.submit(self._run, record)
        log.info("pull.queued", extra={"pull_id": record.id, "source": source})
        return record

    def get(self, pull_id: str) -> PullRecord:
        """A snapshot of one pull's record.

        Raises
        ------
        NotFoundError
            No such pull (or it is older than the records kept).
        """
        with self._lock:
            record = self._records.get(pull_id)
            if record is None:
                raise NotFoundError(
                    f"no pull with id '{pull_id}' (records are kept in memory until restart)"
                )
            return _copy(record)

    def records(self) -> list[PullRecord]:
        """Snapshots of the kept records, newest first."""
        with self._lock:
            return [_copy(r) for r in reversed(self._records.values())]

    def stop(self) -> None:
        """Refuse new pulls, drop queued ones, cut running ones short and wait for them."""
        with self._lock:
            self._is_stopping = True
            pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)

    # ------------------------------------------------------------ worker
    def _trim(self) -> None:
        finished = [k for k, r in self._records.items() if r.is_finished]
        for key in finished[: max(len(self._records) - self._keep, 0)]:
            del self._records[key]

    def _run(self, record: PullRecord) -> None:
        with self._lock:
            record.state = PullState.RUNNING
            record.started_at = time.time()

        def progress(done: int, total: int | None) -> None:
            if self._is_stopping:
                raise AinodeError("pull cancelled: the node is stopping")
            with self._lock:
                record.done, record.total = done, total

        try:
            result = pull(
                self._sources[record.source],
                record.query,
                sink=_StoppableSink(self._sink, lambda: self._is_stopping),
                node_ae_title=self._node_ae_title,
                progress=progress,
                timeout_seconds=self._timeout_seconds,
            )
        except AinodeError as exc:
            self._finish(record, PullState.FAILED, errors=[str(exc)])
            return
        except Exception as exc:  # a bug must not vanish in the pool: record and log it
            log.exception("pull.crashed", extra={"pull_id": record.id})
            self._finish(record, PullState.FAILED, errors=[f"internal error: {exc!r}"])
            return
        completed: list[str] = []
        errors = list(result.errors)
        if result.received and self._on_study_pulled is not None:
            for study_uid in result.studies:
                try:
                    if self._on_study_pulled(study_uid):
                        completed.append(study_uid)
                except NotFoundError:
                    continue  # nothing of that study arrived
                except AinodeError as exc:
                    errors.append(f"study {study_uid}: {exc}")
        with self._lock:
            record.studies = list(result.studies)
            record.expected, record.received = result.expected, result.received
            record.failed = result.failed
            record.completed = completed
        state = PullState.SUCCEEDED if result.is_complete else PullState.FAILED
        if state is PullState.FAILED and not errors:
            errors.append(f"{result.received} of {result.expected} instances arrived")
        self._finish(record, state, errors=errors)

    def _finish(self, record: PullRecord, state: PullState, *, errors: list[str]) -> None:
        with self._lock:
            record.state = state
            record.errors = errors
            record.finished_at = time.time()
        log.info(
            "pull.finished",
            extra={
                "pull_id": record.id,
                "source": record.source,
                "state": state.value,
                "studies": len(record.studies),
                "received": record.received,
                "failed": record.failed,
            },
        )


class _StoppableSink:
    """The spool, refusing instances once the node is stopping (the pull then ends quickly)."""

    def __init__(self, sink: InstanceSink, is_stopping: Callable[[], bool]) -> None:
        self._sink = sink
        self._is_stopping = is_stopping

    def store(self, data: bytes, *, calling_aet: str | None, source: str) -> object:
        if self._is_stopping():
            raise IngestError("the node is stopping; instance not stored")
        return self._sink.store(data, calling_aet=calling_aet, source=source)


def _copy(r: PullRecord) -> PullRecord:
    return PullRecord(
        id=r.id,
        source=r.source,
        query=r.query,
        state=r.state,
        created_at=r.created_at,
        started_at=r.started_at,
        finished_at=r.finished_at,
        studies=list(r.studies),
        done=r.done,
        total=r.total,
        expected=r.expected,
        received=r.received,
        failed=r.failed,
        errors=list(r.errors),
        completed=list(r.completed),
    )
