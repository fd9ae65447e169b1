"""ainode as a UPS Task Performer for a UPS-RS or UPS DIMSE Task Manager (issue 23 section 1).

For each ``ups-rs`` or ``ups-dimse`` source a ``Performer`` thread runs while the node runs,
talking to the manager through a ``node.ingest.ups_transport.UpsTransport`` (UPS-RS requests,
or C-FIND, N-GET, N-SET and N-ACTION):

1. it searches the manager (PS3.18 11.9) for SCHEDULED workitems with one of the configured
   Scheduled Workitem Code values and, when set, the Scheduled Station Name code value, whose
   Input Readiness State is READY;
2. it claims each with a new Transaction UID (PS3.18 11.7, PS3.4 CC.2.1.3): the UID is stored in
   the index (``node.store.performed``) before the manager is asked; ``409`` means another
   performer won, and the workitem is left to it;
3. it reads the Input Information Sequence (0040,4021): each study, fetched with WADO-RS from its
   Retrieve URL (WADO-RS Retrieval Sequence) when that lies under the source's ``url``, else
   from ``fetch_from`` (or ``url``); for ``ups-dimse``, with C-GET or C-MOVE from its Retrieve
   AE Title (DICOM Retrieval Sequence: the manager, or a ``dimse`` source with that AE title),
   through the node's own ingest spool (``node.ingest.pull``); progress is reported in the
   Procedure Step Progress Information Sequence (0074,1002) as it fetches, runs and delivers;
4. the study is completed at once, so the node's rules route it (models, forwards), and when
   its jobs and deliveries have finished the performer sets the Unified Procedure Step Performed
   Procedure Sequence with the Output Information Sequence (every delivered object's UIDs and
   where it went) and moves the workitem to COMPLETED;
5. a workitem that cannot run (no input, an input that cannot be fetched, a failed job or
   delivery, no result in time) is moved to CANCELED with Reason For Cancellation and a
   Procedure Step Discontinuation Reason Code (DCM, CID 9300) in its Procedure Step Progress
   Information Sequence (PS3.4 CC.2.5.1.3).

The Transaction UID query parameter is sent as ``transaction-uid`` (PS3.18 2019+).  A restarted
node first finishes the workitems its index says it holds, with their stored Transaction UIDs.
Logs carry workitem and study UIDs only.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from pydicom.sr.codedict import codes
from pydicom.uid import generate_uid

from node.config import DicomwebSource, DimseSource, UpsDimseSource, UpsRsSource
from node.errors import AinodeError, IngestError
from node.ingest.pull import InstanceSink, PullQuery, pull
from node.ingest.ups_datasets import (
    ResultRef,
    attr,
    code_item,
    dicom_datetime,
    first_value,
    input_locations,
    items,
    output_items,
)
from node.ingest.ups_events import UpsEventListener
from node.ingest.ups_inputs import InputLocationError, retrieve_ae_input, wado_input, where
from node.ingest.ups_transport import Answer, ManagerUnavailable, UpsTransport, make_transport
from node.store.performed import PerformedState, PerformedStore, PerformedWorkitem

__all__ = ["Performer", "ResultRef", "StudyOutcome"]

log = logging.getLogger(__name__)

#: PS3.16 CID 9300 Procedure Discontinuation Reasons, from pydicom's code dictionary
_INPUT_UNAVAILABLE = codes.DCM.ObjectSetIncomplete  # (110523, DCM)
_NOT_PERFORMED = codes.DCM.DiscontinuedForUnspecifiedReason  # (110513, DCM)
_MANAGER_REQUEST = codes.DCM.DiscontinuedForUnspecifiedReason  # the request's reason is the text
_STATION_SCHEME = "99AINODE"  # a private coding scheme (PS3.16 8.2): our AE title as a code
#: Procedure Step Progress (0074,1004) reported at each stage (percent, description)
_FETCHING = (10, "fetching the input")
_RUNNING = (40, "input fetched; running the models")
_DELIVERED = (90, "results delivered; completing")


@dataclass(frozen=True, slots=True)
class StudyOutcome:
    """What the node did with a fetched study once nothing is left to run or deliver."""

    results: list[ResultRef]
    failures: list[str]


class _Cancel(Exception):
    """The workitem cannot be performed; carries the reason and its CID 9300 code."""

    def __init__(self, reason: str, code: Any = _NOT_PERFORMED) -> None:
        super().__init__(reason)
        self.reason = reason
        self.code = code


class Performer:
    """Performs the workitems of one ``ups-rs`` or ``ups-dimse`` source while the node runs.

    Parameters
    ----------
    name:
        The source's name in ``sources``.
    source:
        Its configuration.
    store:
        The index's record of claimed workitems.
    sink:
        The node's ingest spool.
    sources:
        The node's other sources (``fetch_from`` names one).
    node_ae_title:
        This node's AE title (the performed station's code when the workitem names none).
    on_study_pulled:
        Completes (and so routes) a fetched study.
    study_outcome:
        What the node did with a study: None while jobs run or deliveries are pending.
    transport:
        How to talk to the manager (default: the source's, ``ups_transport.make_transport``).
    """

    def __init__(
        self,
        name: str,
        source: UpsRsSource | UpsDimseSource,
        *,
        store: PerformedStore,
        sink: InstanceSink,
        sources: Mapping[str, Any],
        node_ae_title: str,
        on_study_pulled: Callable[[str], bool],
        study_outcome: Callable[[str], StudyOutcome | None],
        transport: UpsTransport | None = None,
    ) -> None:
        self.name = name
        self._source = source
        self._store = store
        self._sink = sink
        self._sources = sources
        self._fetch_from = (
            sources.get(source.fetch_from)
            if isinstance(source, UpsRsSource) and source.fetch_from
            else None
        )
        self._node_ae_title = node_ae_title
        self._on_study_pulled = on_study_pulled
        self._study_outcome = study_outcome
        self._transport = transport or make_transport(source, ae_title=node_ae_title)
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        #: cancel requests the manager sent for workitems (UID -> reason), from the channel
        self._cancel_requests: dict[str, str | None] = {}
        self._subscribed = False
        self._events = (
            UpsEventListener(
                source,
                ae_title=node_ae_title,
                on_scheduled=self._wake.set,
                on_cancel_requested=self._cancel_requested,
            )
            if isinstance(source, UpsRsSource) and source.events
            else None
        )

    # ------------------------------------------------------------ life cycle
    def start(self) -> None:
        """Start the performer's thread (resume, then poll every ``poll_seconds``)."""
        self._stop.clear()
        self._thread = threading.Thread(target=self._loop, name=f"ups-{self.name}", daemon=True)
        self._thread.start()
        if self._events is not None:
            self._events.start()

    def stop(self, timeout: float = 30.0) -> None:
        """Stop polling; a workitem being performed is resumed at the next start."""
        self._stop.set()
        self._wake.set()
        if self._events is not None:
            self._events.stop()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None
        self._transport.close()

    @property
    def event_aet(self) -> str | None:
        """The manager's AE title when this performer takes its UPS DIMSE event reports."""
        s = self._source
        return s.ae_title if isinstance(s, UpsDimseSource) and s.events else None

    def event_report(self, event_type: int, *, uid: str, info: Mapping[str, Any]) -> None:
        """A UPS event report (N-EVENT-REPORT) from the manager (PS3.4 Table CC.2.4-1): a State
        Report of a SCHEDULED workitem starts a search at once; a Cancel Requested is honoured
        for a workitem this node holds."""
        if event_type == 1 and first_value(info, "00741000") == "SCHEDULED":
            self._wake.set()
        elif event_type == 2:
            reason = first_value(info, "00741238")
            self._cancel_requested(uid, reason if isinstance(reason, str) else None)

    def _subscribe(self) -> None:
        """Subscribe to the UPS DIMSE manager's global subscription, once per start; a refusal
        (e.g. 0xC308: the manager does not know our AE title) leaves polling alone."""
        subscribe = getattr(self._transport, "subscribe", None)
        if self.event_aet is None or self._subscribed or subscribe is None:
            return
        try:
            answer = subscribe(self._node_ae_title)
        except ManagerUnavailable:
            return  # asked again next round
        self._subscribed = True
        if answer.is_ok:
            log.info("performer.subscribed", extra={"source": self.name})
        else:
            log.warning(
                "performer.subscribe_refused", extra={"source": self.name, "status": answer.text}
            )

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self._subscribe()
                self.resume()
                self.poll_once()
            except Exception:  # noqa: BLE001 - a bug must not end the performer
                log.exception("performer.failed", extra={"source": self.name})
            # the next round: after poll_seconds, or at once when the event channel says a
            # workitem was scheduled
            self._wake.wait(self._source.poll_seconds)
            self._wake.clear()

    def _cancel_requested(self, uid: str, reason: str | None) -> None:
        with self._lock:
            self._cancel_requests[uid] = reason

    def _check_cancel_request(self, uid: str) -> None:
        with self._lock:
            if uid not in self._cancel_requests:
                return
            reason = self._cancel_requests.pop(uid)
        raise _Cancel(
            "canceled on the manager's request" + (f": {reason}" if reason else ""),
            _MANAGER_REQUEST,
        )

    # ------------------------------------------------------------ one round
    def resume(self) -> None:
        """Finish the workitems the index says this node holds (after a restart)."""
        for record in self._store.unfinished(self.name):
            if self._stop.is_set():
                return
            self._resume_one(record)

    def poll_once(self) -> int:
        """Search, claim and perform every matching SCHEDULED workitem; return how many this
        node claimed."""
        claimed = 0
        for ds in self.search():
            if self._stop.is_set():
                break
            uid = first_value(ds, "00080018")
            if not isinstance(uid, str):
                continue
            txn = self.claim(uid)
            if txn is None:
                continue
            claimed += 1
            self._perform(uid, ds, txn)
        return claimed

    def search(self) -> list[dict[str, Any]]:
        """SCHEDULED, READY workitems of the configured codes and station, oldest first."""
        found: dict[str, dict[str, Any]] = {}
        wanted: list[str | None] = [*self._source.codes] or [None]
        for code in wanted:
            try:
                answers = self._transport.search(code=code, station=self._source.station)
            except ManagerUnavailable as exc:
                log.warning(
                    "performer.search_failed", extra={"source": self.name, "error": str(exc)}
                )
                return []
            for ds in answers:
                uid = first_value(ds, "00080018")
                ready = first_value(ds, "00404041")
                if isinstance(uid, str) and ready in (None, "READY"):
                    found.setdefault(uid, ds)
        return list(found.values())

    def claim(self, uid: str) -> str | None:
        """Claim ``uid`` with a new Transaction UID; return it, or None when another performer
        holds the workitem (409) or the manager did not answer."""
        txn = generate_uid()
        self._store.begin(source=self.name, uid=uid, transaction_uid=txn)
        try:
            answer = self._transport.change_state(uid, "IN PROGRESS", transaction_uid=txn)
        except ManagerUnavailable as exc:
            # unknown whether the manager took it: kept as 'claiming', checked at resume
            log.warning("workitem.claim_unanswered", extra={"workitem_uid": uid, "error": str(exc)})
            return None
        if answer.is_ok:
            self._store.set_state(source=self.name, uid=uid, state=PerformedState.IN_PROGRESS)
            log.info("workitem.claimed", extra={"workitem_uid": uid, "source": self.name})
            return txn
        reason = f"claim refused: {answer.text}"
        self._store.set_state(
            source=self.name, uid=uid, state=PerformedState.LOST, reason=reason.strip()[:300]
        )
        log.info("workitem.claim_lost", extra={"workitem_uid": uid, "status": answer.text[:40]})
        return None

    # ------------------------------------------------------------ performing
    def _resume_one(self, record: PerformedWorkitem) -> None:
        """Resume one recorded workitem; a manager that is away or answers 5xx is asked again
        next round (the workitem is never given up on a transient failure)."""
        uid, txn = record.uid, record.transaction_uid
        try:
            ds = self._transport.get(uid)
            if ds is None:
                self._lose(uid, "the manager no longer has the workitem (404 / 0xC307)")
                return
            state = first_value(ds, "00741000")
            if state == "SCHEDULED" and record.state is PerformedState.CLAIMING:
                answer = self._transport.change_state(uid, "IN PROGRESS", transaction_uid=txn)
                if answer.is_refused:
                    self._lose(uid, f"claim refused on resume: {answer.text}")
                if not answer.is_ok:
                    return
            elif state != "IN PROGRESS":
                self._lose(uid, f"the workitem is {state} at the manager")
                return
            # IN PROGRESS: ours only if the manager accepts our Transaction UID
            probe = self._transport.update(uid, transaction_uid=txn, changes={})
        except ManagerUnavailable:
            return  # away, or not a workitem answer: next round
        if probe.is_refused:
            self._lose(uid, f"another performer holds the workitem ({probe.text})")
            return
        if not probe.is_ok:
            return
        self._store.set_state(source=self.name, uid=uid, state=PerformedState.IN_PROGRESS)
        log.info("workitem.resumed", extra={"workitem_uid": uid})
        self._perform(uid, ds, txn)

    def _perform(self, uid: str, ds: Mapping[str, Any], txn: str) -> None:
        started = time.time()
        try:
            self._check_cancel_request(uid)
            self._progress(uid, txn, _FETCHING)
            studies = self._fetch_inputs(uid, ds)
            self._progress(uid, txn, _RUNNING)
            results = self._wait_for_results(uid, studies)
            self._progress(uid, txn, _DELIVERED)
        except _Cancel as cancel:
            self._cancel(uid, txn, cancel)
            return
        except _Stopping:
            return  # resumed at the next start, with the stored Transaction UID
        except AinodeError as exc:  # e.g. the fetched study was removed before it ran
            self._cancel(uid, txn, _Cancel(f"not performed: {exc}"[:1000]))
            return
        self._complete(uid, ds, txn, started=started, results=results)

    def _fetch_inputs(self, uid: str, ds: Mapping[str, Any]) -> list[str]:
        inputs = input_locations(ds)
        if not inputs:
            raise _Cancel("the Input Information Sequence names no study", _INPUT_UNAVAILABLE)
        for study_uid, url, aet in inputs:
            source = self._source_for(url, aet)
            try:
                result = pull(
                    source,
                    PullQuery(study_uid=study_uid),
                    sink=_StoppableSink(self._sink, self._stop),
                    node_ae_title=self._node_ae_title,
                )
            except AinodeError as exc:
                if self._stop.is_set():
                    raise _Stopping from exc
                raise _Cancel(
                    f"input study {study_uid} could not be fetched: {exc}"[:1000],
                    _INPUT_UNAVAILABLE,
                ) from exc
            if self._stop.is_set():
                raise _Stopping  # cut short by the node stopping: fetched again at the next start
            if not result.received or not result.is_complete:
                why = "; ".join(result.errors[:3]) or "no instance of it at the source"
                raise _Cancel(
                    f"input study {study_uid} could not be fetched from {where(source)}: "
                    f"{result.received} of {result.expected or 0} instances ({why})"[:1000],
                    _INPUT_UNAVAILABLE,
                )
            self._on_study_pulled(study_uid)
            log.info(
                "workitem.input_fetched",
                extra={"workitem_uid": uid, "study_uid": study_uid, "received": result.received},
            )
        studies = [s for s, _, _ in inputs]
        self._store.set_state(
            source=self.name, uid=uid, state=PerformedState.IN_PROGRESS, study_uids=studies
        )
        return studies

    def _source_for(self, url: str | None, aet: str | None) -> DicomwebSource | DimseSource:
        """Where to fetch an input from (``node.ingest.ups_inputs``)."""
        try:
            if isinstance(self._source, UpsRsSource):
                return wado_input(
                    self._source, url, fetch_from=self._fetch_from, source_name=self.name
                )
            return retrieve_ae_input(self._source, aet, sources=self._sources)
        except InputLocationError as exc:
            raise _Cancel(str(exc), _INPUT_UNAVAILABLE) from exc

    def _wait_for_results(self, uid: str, studies: list[str]) -> list[ResultRef]:
        deadline = time.monotonic() + self._source.result_timeout_seconds
        results: list[ResultRef] = []
        for study_uid in studies:
            while True:
                self._check_cancel_request(uid)
                outcome = self._study_outcome(study_uid)
                if outcome is not None:
                    break
                if time.monotonic() > deadline:
                    raise _Cancel(
                        f"study {study_uid}: no result within "
                        f"{self._source.result_timeout_seconds:g} s"
                    )
                if self._stop.wait(0.5):
                    raise _Stopping
            if outcome.failures:
                raise _Cancel(f"study {study_uid}: " + "; ".join(outcome.failures)[:900])
            results.extend(outcome.results)
        return results

    # ------------------------------------------------------------ talking to the manager
    def _progress(self, uid: str, txn: str, stage: tuple[int, str]) -> None:
        """Report progress (PS3.4 CC.2.6: Procedure Step Progress and its description); a
        refused or unanswered report is logged and the work goes on."""
        percent, text = stage
        progress = {"00741004": attr("DS", percent), "00741006": attr("ST", text)}
        try:
            answer = self._transport.update(
                uid, transaction_uid=txn, changes={"00741002": attr("SQ", progress)}
            )
        except ManagerUnavailable as exc:
            log.warning("workitem.progress_failed", extra={"workitem_uid": uid, "error": str(exc)})
            return
        if not answer.is_ok:
            log.warning(
                "workitem.progress_refused", extra={"workitem_uid": uid, "status": answer.text[:40]}
            )

    def _finish(self, uid: str, txn: str, changes: dict[str, Any], state: str) -> Answer | None:
        """Update, then change the state; return the refusing answer, or None when done.
        ``ManagerUnavailable`` is raised (the workitem is finished at a later round)."""
        update = self._transport.update(uid, transaction_uid=txn, changes=changes)
        if not update.is_ok:
            log.warning(
                "workitem.update_refused", extra={"workitem_uid": uid, "status": update.text[:40]}
            )
            return update
        answer = self._transport.change_state(uid, state, transaction_uid=txn)
        if not answer.is_ok:
            log.warning(
                "workitem.finish_refused", extra={"workitem_uid": uid, "status": answer.text[:40]}
            )
            return answer
        return None

    def _complete(
        self,
        uid: str,
        ds: Mapping[str, Any],
        txn: str,
        *,
        started: float,
        results: list[ResultRef],
    ) -> None:
        station = items(ds, "00404025") or [
            code_item(self._node_ae_title, _STATION_SCHEME, f"ainode {self._node_ae_title}")
        ]
        performed = {
            "00404028": attr("SQ", *station[:1]),
            "00404050": attr("DT", dicom_datetime(started)),
            "00404051": attr("DT", dicom_datetime(time.time())),
            "00404019": attr("SQ", *items(ds, "00404018")[:1]),
            "00404033": attr("SQ", *output_items(results)),
        }
        try:
            refused = self._finish(uid, txn, {"00741216": attr("SQ", performed)}, "COMPLETED")
        except ManagerUnavailable as exc:
            log.warning("workitem.finish_failed", extra={"workitem_uid": uid, "error": str(exc)})
            return  # still IN PROGRESS here and there: completed at a later round
        if refused is None:
            self._store.set_state(source=self.name, uid=uid, state=PerformedState.COMPLETED)
            log.info("workitem.completed", extra={"workitem_uid": uid, "outputs": len(results)})
        elif refused.is_refused:
            # the manager will not take this completion: say why rather than hold it for ever
            self._cancel(
                uid, txn, _Cancel(f"the manager refused the completion: {refused.text}"[:1000])
            )

    def _cancel(self, uid: str, txn: str, cancel: _Cancel) -> None:
        code = cancel.code
        progress = {
            "00404052": attr("DT", dicom_datetime(time.time())),
            "00741238": attr("LT", cancel.reason),
            "0074100E": attr("SQ", code_item(code.value, code.scheme_designator, code.meaning)),
        }
        try:
            refused = self._finish(uid, txn, {"00741002": attr("SQ", progress)}, "CANCELED")
        except ManagerUnavailable as exc:
            log.warning("workitem.finish_failed", extra={"workitem_uid": uid, "error": str(exc)})
            return  # canceled at a later round
        if refused is not None and refused.is_refused:
            # e.g. the manager canceled or completed it meanwhile: nothing more we can do
            self._lose(uid, f"the manager refused the cancellation: {refused.text}"[:300])
        elif refused is None:
            self._store.set_state(
                source=self.name, uid=uid, state=PerformedState.CANCELED, reason=cancel.reason
            )
            log.info("workitem.canceled", extra={"workitem_uid": uid, "code": code.value})

    def _lose(self, uid: str, reason: str) -> None:
        self._store.set_state(source=self.name, uid=uid, state=PerformedState.LOST, reason=reason)
        log.info("workitem.lost", extra={"workitem_uid": uid})


class _Stopping(Exception):
    """The node is stopping while a workitem is fetched or waits for its results."""


class _StoppableSink:
    """The spool, refusing instances once the node is stopping (the fetch then ends quickly)."""

    def __init__(self, sink: InstanceSink, stop: threading.Event) -> None:
        self._sink = sink
        self._stop = stop

    def store(self, data: bytes, *, calling_aet: str | None, source: str) -> object:
        if self._stop.is_set():
            raise IngestError("the node is stopping; instance not stored")
        return self._sink.store(data, calling_aet=calling_aet, source=source)
