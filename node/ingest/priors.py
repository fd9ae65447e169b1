"""Fetch the prior study of a completed study for a rule's ``priors`` (docs/followup.md).

A ``PriorRequest`` names the current study, the rule, the source and what a prior must be.  The
``PriorFetcher`` runs each request on a thread:

1. study-level query of the source by Patient ID (and Issuer of Patient ID when the study has
   one), restricted to the ``within_days`` window before the current study's date (C-FIND,
   PS3.4 C.4.1, or QIDO-RS, PS3.18 10.6); the current study itself is never its own prior;
2. series-level query of each candidate study, newest first; a series qualifies when the rule's
   ``match`` holds on its header and its body part is the current study's (``is_match``, built
   by the node from ``dicom_rules.match_prior``); of a study's qualifying series the one with
   the most instances is taken, up to ``max`` studies;
3. each chosen series is retrieved with the existing pull code (C-MOVE, C-GET or WADO-RS,
   ``node.ingest.pull``) into the node's ingest, after its study is marked as a prior in the
   index (``Index.mark_prior``) so that it is stored like any instance but never routed.  A
   series the node already holds every instance of (as many as the source counts) is not
   retrieved again; a partly stored one is retrieved again (the spool keeps one copy).

The outcome (``PriorOutcome``: fetched series, "no prior available", or "prior could not be
retrieved: reason") goes to ``on_resolved``.  While the source cannot be reached the fetch is
retried every ``retry_seconds`` until the request's deadline, then resolved as failed with the
last reason.  Nothing here is durable by itself: the waiting jobs are (``JobStore``), and the
node resubmits their requests when it starts again.

Logs carry study/series UIDs, the rule and the source name, never the Patient ID.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import date, timedelta
from typing import Any, Protocol

from node.config import DicomwebSource, DimseSource
from node.errors import AinodeError
from node.ingest.pull import InstanceSink, PullQuery, find_series, pull, query_studies
from node.types import NO_PRIOR, PRIOR_FAILED, DicomJson, PriorOutcome, PriorSeries, PriorState

__all__ = [
    "PriorFetcher",
    "PriorIndex",
    "PriorRequest",
    "choose_priors",
    "dicom_date",
    "study_filters",
]

log = logging.getLogger(__name__)

#: ``is_match(series_header) -> (matches, reason, body_part)``
SeriesMatcher = Callable[[DicomJson], tuple[bool, str, str | None]]


class PriorIndex(Protocol):
    """What the fetcher asks the node's index (``node.store.index.Index`` satisfies it)."""

    def mark_prior(self, study_uid: str, *, for_study_uid: str, source: str) -> None: ...

    def study_row(self, study_uid: str) -> dict[str, Any] | None: ...

    def series_count(self, series_uid: str) -> int: ...


@dataclass(frozen=True, slots=True)
class PriorRequest:
    """Find and retrieve the prior of ``study_uid`` for the jobs of ``rule``."""

    study_uid: str
    rule: str
    source: str
    patient_id: str | None
    issuer: str | None
    study_date: date | None
    max_studies: int
    within_days: int | None
    deadline: float
    is_match: SeriesMatcher


def _text(header: Mapping[str, Any], tag: str) -> str | None:
    elem = header.get(tag)
    if not isinstance(elem, Mapping):
        return None
    values = elem.get("Value")
    if isinstance(values, list) and values and isinstance(values[0], (str, int, float)):
        text = str(values[0]).strip()
        return text or None
    return None


def dicom_date(text: str | None) -> date | None:
    """A DICOM DA value (``YYYYMMDD``) as a date; None when absent or malformed."""
    if not text or len(text) < 8 or not text[:8].isdigit():
        return None
    try:
        return date(int(text[:4]), int(text[4:6]), int(text[6:8]))
    except ValueError:
        return None


def study_filters(request: PriorRequest) -> dict[str, str]:
    """The matching keys of the study-level query (PS3.4 C.2.2.2.5 date range)."""
    filters = {"PatientID": request.patient_id or ""}
    if request.issuer:
        filters["IssuerOfPatientID"] = request.issuer
    if request.study_date is not None:
        hi = request.study_date
        lo = hi - timedelta(days=request.within_days) if request.within_days else None
        filters["StudyDate"] = f"{lo.strftime('%Y%m%d') if lo else ''}-{hi.strftime('%Y%m%d')}"
    return filters


def choose_priors(
    request: PriorRequest,
    studies: list[DicomJson],
    series_of: Callable[[str], list[DicomJson]],
) -> tuple[list[tuple[PriorSeries, int]], list[str]]:
    """The prior series to retrieve, newest study first, each with its number of instances as
    the source answered it (0: not answered), and why candidates were passed over.

    ``studies`` are the study-level answers; ``series_of(study_uid)`` queries a study's series.
    """
    dated = []
    for s in studies:
        uid = _text(s, "0020000D")
        if not uid or uid == request.study_uid:
            continue
        issuer = _text(s, "00100021")
        if request.issuer and issuer and issuer != request.issuer:
            continue  # the same Patient ID in another issuer's domain: another patient
        when = dicom_date(_text(s, "00080020"))
        if request.study_date is not None and when is not None:
            if when > request.study_date:
                continue  # a later study is not a prior
            if request.within_days and (request.study_date - when).days > request.within_days:
                continue
        dated.append((when or date.min, _text(s, "00080030") or "", uid, _text(s, "00080020")))
    dated.sort(reverse=True)
    chosen: list[tuple[PriorSeries, int]] = []
    passed: list[str] = []
    for _, _, uid, study_date in dated:
        best: tuple[int, str, str | None] | None = None
        for header in series_of(uid):
            series_uid = _text(header, "0020000E")
            if not series_uid:
                continue
            ok, reason, body_part = request.is_match(header)
            if not ok:
                passed.append(f"series {series_uid}: {reason}")
                continue
            count = _text(header, "00201209")
            n = int(count) if count and count.isdigit() else 0
            if best is None or n > best[0]:
                best = (n, series_uid, body_part)
        if best is not None:
            chosen.append((PriorSeries(uid, best[1], study_date, best[2]), best[0]))
            if len(chosen) >= request.max_studies:
                break
    return chosen, passed


class PriorFetcher:
    """Runs ``PriorRequest``s in the background (see the module docstring).

    Parameters
    ----------
    sources:
        Source name -> config (``sources`` in the config).
    index:
        The node's index (marks priors; says what is stored already).
    sink:
        The node's ingest spool (C-GET and WADO-RS store through it; C-MOVE goes to the SCP).
    node_ae_title:
        Calling AE title and C-MOVE destination.
    on_resolved:
        Called with ``(study_uid, rule, outcome)`` once per request.
    on_failure:
        Called with ``(study_uid, rule, reason)`` after each failed attempt (the node keeps the
        reason with the waiting jobs, in case the timeout ends their wait first).
    on_study_pulled:
        Called with each prior study retrieved (the node completes it at once, as after a
        pull; being a prior, it is then recorded as not routed).
    retry_seconds:
        Pause between attempts while the source fails.
    timeout_seconds:
        DIMSE network timeout of one query or retrieve.
    """

    def __init__(
        self,
        sources: Mapping[str, DimseSource | DicomwebSource],
        *,
        index: PriorIndex,
        sink: InstanceSink,
        node_ae_title: str,
        on_resolved: Callable[[str, str, PriorOutcome], None],
        on_failure: Callable[[str, str, str], None] | None = None,
        on_study_pulled: Callable[[str], object] | None = None,
        retry_seconds: float = 10.0,
        timeout_seconds: float = 60.0,
        workers: int = 2,
    ) -> None:
        self._sources = dict(sources)
        self._index = index
        self._sink = sink
        self._node_ae_title = node_ae_title
        self._on_resolved = on_resolved
        self._on_study_pulled = on_study_pulled
        self._on_failure = on_failure
        self._retry_seconds = retry_seconds
        self._timeout_seconds = timeout_seconds
        self._workers = workers
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._pool: ThreadPoolExecutor | None = None
        self._running: set[tuple[str, str]] = set()

    def submit(self, request: PriorRequest) -> bool:
        """Start fetching (False: the same study and rule is being fetched already, or the
        node is stopping)."""
        key = (request.study_uid, request.rule)
        with self._lock:
            if self._stop.is_set() or key in self._running:
                return False
            if self._pool is None:
                self._pool = ThreadPoolExecutor(self._workers, thread_name_prefix="prior")
            self._running.add(key)
            self._pool.submit(self._run, request)
        log.info(
            "prior.requested",
            extra={"study_uid": request.study_uid, "rule": request.rule, "source": request.source},
        )
        return True

    def stop(self) -> None:
        """Stop retrying, drop queued requests and wait for running ones (their jobs stay
        waiting in the job store and are resumed at the next start)."""
        with self._lock:
            self._stop.set()
            pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)

    # ------------------------------------------------------------ worker
    def _run(self, request: PriorRequest) -> None:
        try:
            outcome = self._fetch(request)
            if outcome is not None:
                self._resolve(request, outcome)
        except Exception as exc:  # a bug must not leave the jobs waiting silently
            log.exception("prior.crashed", extra={"study_uid": request.study_uid})
            self._resolve(
                request, PriorOutcome(PriorState.FAILED, reason=f"{PRIOR_FAILED}: {exc!r}")
            )
        finally:
            with self._lock:
                self._running.discard((request.study_uid, request.rule))

    def _resolve(self, request: PriorRequest, outcome: PriorOutcome) -> None:
        log.info(
            "prior.resolved",
            extra={
                "study_uid": request.study_uid,
                "rule": request.rule,
                "state": outcome.state.value,
                "prior_series": [s.series_uid for s in outcome.series],
            },
        )
        self._on_resolved(request.study_uid, request.rule, outcome)

    def _fetch(self, request: PriorRequest) -> PriorOutcome | None:
        """The outcome, or None when the node is stopping (the jobs stay waiting)."""
        source = self._sources.get(request.source)
        if source is None:
            return PriorOutcome(
                PriorState.FAILED,
                reason=f"{PRIOR_FAILED}: source '{request.source}' is not configured",
            )
        if not request.patient_id:
            return PriorOutcome(PriorState.NONE, reason=f"{NO_PRIOR} (the study has no Patient ID)")
        while True:
            try:
                return self._attempt(request, source)
            except AinodeError as exc:
                last = str(exc)
            if self._on_failure is not None:
                self._on_failure(request.study_uid, request.rule, f"{PRIOR_FAILED}: {last}")
            left = request.deadline - time.time()
            log.info(
                "prior.attempt_failed",
                extra={"study_uid": request.study_uid, "rule": request.rule, "left_seconds": left},
            )
            if left <= 0:
                return PriorOutcome(PriorState.FAILED, reason=f"{PRIOR_FAILED}: {last}")
            if self._stop.wait(min(self._retry_seconds, left)):
                return None

    def _attempt(
        self, request: PriorRequest, source: DimseSource | DicomwebSource
    ) -> PriorOutcome | None:
        ae = self._node_ae_title
        studies = query_studies(source, study_filters(request), node_ae_title=ae)
        chosen, passed = choose_priors(
            request, studies, lambda uid: find_series(source, uid, node_ae_title=ae)
        )
        if not chosen:
            log.info(
                "prior.none",
                extra={
                    "study_uid": request.study_uid,
                    "rule": request.rule,
                    "candidate_studies": len(studies),
                    "series_passed_over": len(passed),
                },
            )
            return PriorOutcome(PriorState.NONE, reason=NO_PRIOR)
        for prior, expected in chosen:
            if self._stop.is_set():
                return None
            if expected and self._index.series_count(prior.series_uid) >= expected:
                continue  # stored here already (received before, or fetched for another rule)
            if self._index.study_row(prior.study_uid) is None:
                self._index.mark_prior(
                    prior.study_uid, for_study_uid=request.study_uid, source=request.source
                )
            result = pull(
                source,
                PullQuery(study_uid=prior.study_uid, series_uid=prior.series_uid),
                sink=self._sink,
                node_ae_title=ae,
                timeout_seconds=self._timeout_seconds,
            )
            if not result.received or not result.is_complete:
                why = "; ".join(result.errors) or (
                    f"{result.received} of {result.expected} instances arrived"
                )
                raise AinodeError(f"retrieving series {prior.series_uid}: {why}")
            self._wait_indexed(prior.series_uid, result.received)
            if self._on_study_pulled is not None:
                self._on_study_pulled(prior.study_uid)
        return PriorOutcome(PriorState.FETCHED, series=tuple(p for p, _ in chosen))

    def _wait_indexed(self, series_uid: str, count: int, timeout: float = 30.0) -> None:
        """C-MOVE returns when the source has sent; wait until the SCP's instances are indexed."""
        deadline = time.monotonic() + timeout
        while self._index.series_count(series_uid) < count:
            if time.monotonic() > deadline or self._stop.wait(0.05):
                raise AinodeError(
                    f"series {series_uid}: {self._index.series_count(series_uid)} of {count} "
                    "retrieved instances reached the index"
                )
