"""UPS over DIMSE: the DICOM listener as a small Task Manager (PS3.4 Annex CC, issue 23).

With ``node.ups_dimse.enabled`` the node's DICOM listener (``node.ingest.scp``) also accepts the
UPS Push, Pull and Watch SOP Classes and serves their operations on the **same** workitem table
and rules as UPS-RS (``node.store.workitems``, ``node.store.ups``), so a workitem created over
DIMSE is seen over UPS-RS and the other way round:

* N-CREATE (Push): a new SCHEDULED workitem, checked by ``ups.check_create``;
* C-FIND (Pull, Watch): the workitems matching the identifier's keys (``ups.SEARCH_KEYS``,
  PS3.4 C.2.2.2 matching), each answered with the identifier's attributes;
* N-GET: the workitem's attributes (those asked for, or all), never its Transaction UID;
* N-SET (Pull): an update, checked by ``ups.check_update``; an IN PROGRESS workitem needs the
  Transaction UID it was claimed with, in the modification list (PS3.4 CC.2.6);
* N-ACTION (PS3.4 Table CC.2.2-1): 1 Change UPS State (``ups.transition``), 2 Request UPS
  Cancel, 3 Subscribe, 4 Unsubscribe, 5 Suspend Global Subscription.

Every operation is accepted under any of the three SOP Classes (peers differ in which one they
propose for N-GET and C-FIND).  Refusals carry the PS3.4 CC.2 status of the shared rules (the
texts of pynetdicom's UPS status table) and an Error Comment (0000,0902) saying why.  Each
change is reported to ``on_change`` (``node.app`` audits it and sends the event reports: UPS
Event N-EVENT-REPORTs to subscribed AEs and UPS-RS event channel messages).  Logs carry
workitem UIDs and AE titles only.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Collection, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from pydicom.dataset import Dataset
from pynetdicom import evt

from node.errors import NotFoundError, WorkitemError
from node.ingest.ups_messages import (
    find_answer,
    from_json,
    identifier_query,
    status,
    to_json,
    vr_of,
)
from node.store.ups import (
    CANCEL_REQUESTED,
    FILTERED_SUBSCRIPTION_UID,
    GLOBAL_SUBSCRIPTION_UID,
    PROGRESS_REPORT,
    STATE_REPORT,
    TAGS,
    UpsState,
    check_create,
    check_update,
    matches,
    strip_transaction,
    text_value,
)
from node.store.workitems import Workitem, WorkitemStore

__all__ = [
    "UPS_EVENT",
    "UPS_PULL",
    "UPS_PUSH",
    "UPS_SCP_SOP_CLASSES",
    "UPS_WATCH",
    "UpsChange",
    "UpsService",
    "identifier_query",
]

log = logging.getLogger(__name__)

#: PS3.4 Table CC.3.1-1 (PS3.6 Annex A) SOP Classes of the UPS service.
UPS_PUSH = "1.2.840.10008.5.1.4.34.6.1"
UPS_WATCH = "1.2.840.10008.5.1.4.34.6.2"
UPS_PULL = "1.2.840.10008.5.1.4.34.6.3"
UPS_EVENT = "1.2.840.10008.5.1.4.34.6.4"
#: The SOP Classes the listener serves as SCP.
UPS_SCP_SOP_CLASSES = (UPS_PUSH, UPS_WATCH, UPS_PULL)

#: N-ACTION Action Type IDs (PS3.4 Table CC.2.2-1 and CC.2.3-1).
_CHANGE_STATE, _REQUEST_CANCEL, _SUBSCRIBE, _UNSUBSCRIBE, _SUSPEND = 1, 2, 3, 4, 5
_NO_SUCH_INSTANCE = 0xC307  # "Specified SOP Instance UID does not exist ..." (PS3.4 CC.2)
_UNKNOWN_AE = 0xC308  # "Receiving AE-TITLE is unknown to this SCP"
_NOT_APPROPRIATE = 0xC314  # "Specified action is not appropriate for specified instance"
_PROCESSING_FAILURE = 0x0110
_NO_SUCH_ACTION = 0x0123
_CLASS_NOT_SUPPORTED = 0x0122
_PENDING, _PENDING_OPTIONAL = 0xFF00, 0xFF01
_TXN = TAGS["TransactionUID"]


@dataclass(frozen=True, slots=True)
class UpsChange:
    """One workitem change (or refused change) made over DIMSE, for audit and event reports.

    ``event`` is the audit event name (``workitem.created``, ``workitem.state_changed``...);
    ``item`` and ``event_type`` (PS3.4 Table CC.2.4-1) are set when subscribers get a report.
    """

    event: str
    calling_aet: str
    peer: str | None
    workitem_uid: str | None
    outcome: str = "success"
    item: Workitem | None = None
    event_type: int | None = None
    reason: str | None = None
    #: send the report to this AE only (the current state to a new subscriber)
    only_to: str | None = None
    detail: dict[str, Any] = field(default_factory=dict)


def _request(event: evt.Event) -> Any:
    """The event's DIMSE request primitive (N-CREATE, N-GET, N-SET or N-ACTION here)."""
    return event.request


def _refusal(exc: Exception) -> Dataset:
    if isinstance(exc, WorkitemError):
        return status(exc.dicom_status or _PROCESSING_FAILURE, str(exc))
    if isinstance(exc, NotFoundError):
        return status(_NO_SUCH_INSTANCE, "no such workitem on this node")
    raise exc


class UpsService:
    """The handlers of the UPS SOP Classes on the node's DICOM listener.

    Parameters
    ----------
    store:
        The node's workitem table (shared with UPS-RS).
    worklist_label:
        Worklist Label (0074,1202) of workitems created without one (``node.ae_title``).
    event_aets:
        AE titles this node can send event reports to (``node.ups_dimse.event_aets``); a
        subscription for another AE is refused with 0xC308 (PS3.4 CC.2.3.1).
    on_change:
        Called with each :class:`UpsChange`; it must not raise.
    """

    def __init__(
        self,
        store: WorkitemStore,
        *,
        worklist_label: str,
        event_aets: Collection[str],
        on_change: Callable[[UpsChange], None] | None = None,
    ) -> None:
        self.store = store
        self._label = worklist_label
        self._event_aets = {a.strip() for a in event_aets}
        self._on_change = on_change

    def handlers(self) -> list[tuple[Any, Callable[..., Any]]]:
        """``(event, handler)`` pairs for ``AE.start_server``."""
        return [
            (evt.EVT_N_CREATE, self._guarded(self.on_n_create)),
            (evt.EVT_N_GET, self._guarded(self.on_n_get)),
            (evt.EVT_N_SET, self._guarded(self.on_n_set)),
            (evt.EVT_N_ACTION, self._guarded(self.on_n_action)),
            (evt.EVT_C_FIND, self.on_c_find),
        ]

    # ------------------------------------------------------------ plumbing
    @staticmethod
    def _guarded(
        handler: Callable[[evt.Event], tuple[Dataset, Dataset | None]],
    ) -> Callable[[evt.Event], tuple[Dataset | int, Dataset | None]]:
        """A handler that answers 0x0122 outside a UPS context, a PS3.4 status for a refused
        request, and 0x0110 (logged) for anything unexpected: it never kills the SCP."""

        def run(event: evt.Event) -> tuple[Dataset | int, Dataset | None]:
            if str(event.context.abstract_syntax) not in UPS_SCP_SOP_CLASSES:
                return status(_CLASS_NOT_SUPPORTED, "not a UPS SOP Class"), None
            try:
                return handler(event)
            except (WorkitemError, NotFoundError) as exc:
                return _refusal(exc), None
            except Exception:  # noqa: BLE001 - a failing handler answers a failure status
                log.exception("ups.handler_failed")
                return status(_PROCESSING_FAILURE, "internal error; see the node's log"), None

        return run

    def _report(self, event: evt.Event, name: str, uid: str | None, **kwargs: Any) -> None:
        if self._on_change is None:
            return
        assoc = event.assoc
        change = UpsChange(
            event=name,
            calling_aet=assoc.requestor.ae_title.strip(),
            peer=assoc.requestor.address,
            workitem_uid=uid,
            **kwargs,
        )
        try:
            self._on_change(change)
        except Exception:  # noqa: BLE001 - audit and events must never break the SCP
            log.exception("ups.change_listener_failed")

    def _viewed(self, event: evt.Event, items: list[Workitem], purpose: str) -> None:
        """Workitems carry patient name and ID: reading them is audited (``phi.viewed``, like
        UPS-RS reads), with their Study Instance UIDs."""
        studies = sorted({s for i in items if (s := text_value(i.dataset, "StudyInstanceUID"))})
        if not studies:
            return
        one = {"study_uid": studies[0]} if len(studies) == 1 else {"study_uids": studies}
        self._report(event, "phi.viewed", None, detail={"purpose": purpose, **one})

    # ------------------------------------------------------------ N-CREATE
    def on_n_create(self, event: evt.Event) -> tuple[Dataset, Dataset | None]:
        """N-CREATE (PS3.4 CC.2.5): store a SCHEDULED workitem; 0x0111 when it exists."""
        uid = _request(event).AffectedSOPInstanceUID
        if not uid:
            return status(0xA900, "Affected SOP Instance UID missing (PS3.4 CC.2.5.1.1)"), None
        uid = str(uid)
        ds = to_json(event.attribute_list)
        in_body = text_value(ds, "SOPInstanceUID")
        if in_body and in_body != uid:
            return status(0xA900, "SOP Instance UID differs from the request's"), None
        check_create(ds)
        item = self.store.create(uid, ds, worklist_label=self._label)
        log.info("workitem.created", extra={"workitem_uid": uid, "via": "dimse"})
        self._report(event, "workitem.created", uid, item=item, event_type=STATE_REPORT)
        return status(0x0000), from_json(strip_transaction(item.dataset))

    # ------------------------------------------------------------ N-GET
    def on_n_get(self, event: evt.Event) -> tuple[Dataset, Dataset | None]:
        """N-GET (PS3.4 CC.2.7): the workitem's attributes, without its Transaction UID."""
        uid = str(_request(event).RequestedSOPInstanceUID)
        item = self.store.get(uid)
        self._viewed(event, [item], "N-GET UPS")
        stored = strip_transaction(item.dataset)
        wanted = [f"{tag:08X}" for tag in event.attribute_identifiers or []]
        if wanted:
            stored = {t: stored.get(t) or {"vr": vr_of(t)} for t in wanted if t != _TXN}
        return status(0x0000), from_json(stored)

    # ------------------------------------------------------------ N-SET
    def on_n_set(self, event: evt.Event) -> tuple[Dataset, Dataset | None]:
        """N-SET (PS3.4 CC.2.6): merge the modification list; the Transaction UID it carries
        must be the claim's when the workitem is IN PROGRESS."""
        uid = str(_request(event).RequestedSOPInstanceUID)
        changes = to_json(event.modification_list)
        txn = text_value(changes, "TransactionUID")
        changes = strip_transaction(changes)
        check_update(changes)
        item = self.store.update(uid, changes, transaction_uid=txn)
        log.info("workitem.updated", extra={"workitem_uid": uid, "via": "dimse"})
        progress = TAGS["ProcedureStepProgressInformationSequence"] in changes
        self._report(
            event,
            "workitem.updated",
            uid,
            item=item,
            event_type=PROGRESS_REPORT if progress else None,
            detail={"attributes": sorted(changes)},
        )
        return status(0x0000), None

    # ------------------------------------------------------------ C-FIND
    def on_c_find(self, event: evt.Event) -> Iterator[tuple[int | Dataset, Dataset | None]]:
        """C-FIND (PS3.4 CC.2.8): one pending answer per matching workitem, oldest first."""
        if str(event.context.abstract_syntax) not in UPS_SCP_SOP_CLASSES:
            yield status(_CLASS_NOT_SUPPORTED, "not a UPS SOP Class"), None
            return
        try:
            identifier = event.identifier
            query, unsupported = identifier_query(identifier)
            state = dict(query).get("ProcedureStepState")
            if state is not None and state not in {s.value for s in UpsState}:
                yield status(0xA900, f"ProcedureStepState {state[:20]!r} is not a UPS state"), None
                return
            items = self.store.workitems(state=UpsState(state) if state else None)
            found = [i for i in items if matches(i.dataset, query)]
        except Exception:  # noqa: BLE001 - a failing handler answers a failure status
            log.exception("ups.find_failed")
            yield status(0xC000, "cannot read the query; see the node's log"), None
            return
        log.debug("workitem.searched", extra={"via": "dimse", "found": len(found)})
        self._viewed(event, found, "C-FIND UPS")
        pending = _PENDING_OPTIONAL if unsupported else _PENDING
        for item in found:
            if event.is_cancelled:
                yield 0xFE00, None
                return
            yield pending, find_answer(item, identifier)
        yield 0x0000, None

    # ------------------------------------------------------------ N-ACTION
    def on_n_action(self, event: evt.Event) -> tuple[Dataset, Dataset | None]:
        """N-ACTION (PS3.4 CC.2.1 - CC.2.3): change state, request cancel, (un)subscribe."""
        action = int(_request(event).ActionTypeID)
        uid = str(_request(event).RequestedSOPInstanceUID)
        info = to_json(event.action_information)
        if action == _CHANGE_STATE:
            return self._change_state(event, uid, info)
        if action == _REQUEST_CANCEL:
            return self._request_cancel(event, uid, info)
        if action in (_SUBSCRIBE, _UNSUBSCRIBE, _SUSPEND):
            return self._subscription(event, action, uid, info)
        return status(_NO_SUCH_ACTION, f"no UPS action {action} (PS3.4 CC.2.2)"), None

    def _change_state(
        self, event: evt.Event, uid: str, info: Mapping[str, Any]
    ) -> tuple[Dataset, Dataset | None]:
        wanted = text_value(info, "ProcedureStepState")
        if wanted not in {s.value for s in UpsState}:
            return status(0xA900, "Procedure Step State missing or not a UPS state"), None
        assert wanted is not None
        try:
            item, warning = self.store.change_state(
                uid, UpsState(wanted), transaction_uid=text_value(info, "TransactionUID")
            )
        except WorkitemError as exc:
            self._report(
                event,
                "workitem.state_changed",
                uid,
                outcome="failure",
                detail={"state": wanted, "dicom_status": f"{exc.dicom_status:04X}"},
            )
            raise
        if warning is not None:
            return status(*warning), None
        log.info("workitem.state_changed", extra={"workitem_uid": uid, "state": wanted})
        self._report(
            event,
            "workitem.state_changed",
            uid,
            item=item,
            event_type=STATE_REPORT,
            detail={"state": wanted},
        )
        reply = {TAGS["ProcedureStepState"]: {"vr": "CS", "Value": [wanted]}}
        return status(0x0000), from_json(reply)

    def _request_cancel(
        self, event: evt.Event, uid: str, info: Mapping[str, Any]
    ) -> tuple[Dataset, Dataset | None]:
        reason = text_value(info, "ReasonForCancellation")
        outcome = self.store.request_cancel(
            uid, reason=reason, contact_uri=text_value(info, "0074100A")
        )
        if outcome.warning is not None:
            return status(*outcome.warning), None
        log.info("workitem.cancel_requested", extra={"workitem_uid": uid, "via": "dimse"})
        self._report(
            event,
            "workitem.cancel_requested",
            uid,
            item=outcome.workitem,
            event_type=STATE_REPORT if outcome.canceled else CANCEL_REQUESTED,
            reason=reason,
            detail={"canceled": outcome.canceled},
        )
        return status(0x0000), None

    def _subscription(
        self, event: evt.Event, action: int, uid: str, info: Mapping[str, Any]
    ) -> tuple[Dataset, Dataset | None]:
        aet = (text_value(info, "00741234") or "").strip()  # Receiving AE
        if not aet:
            return status(0x0120, "Receiving AE (0074,1234) missing"), None
        is_global = uid in (GLOBAL_SUBSCRIPTION_UID, FILTERED_SUBSCRIPTION_UID)
        if action == _UNSUBSCRIBE:
            if self.store.unsubscribe(aet, uid):
                self._report(event, "workitem.unsubscribed", uid, detail={"aet": aet})
            return status(0x0000), None
        if action == _SUSPEND:
            if not is_global:
                return status(_NOT_APPROPRIATE, "only a global subscription is suspended"), None
            if self.store.suspend(aet, uid):
                self._report(event, "workitem.subscription_suspended", uid, detail={"aet": aet})
            return status(0x0000), None
        if aet not in self._event_aets:
            return status(_UNKNOWN_AE, f"AE {aet} not in node.ups_dimse.event_aets"), None
        lock = (text_value(info, "00741230") or "FALSE").upper()  # Deletion Lock
        if lock not in ("TRUE", "FALSE"):
            return status(0xA900, "Deletion Lock (0074,1230) is TRUE or FALSE"), None
        flt = None
        if uid == FILTERED_SUBSCRIPTION_UID:
            keys = {t: a for t, a in info.items() if t not in ("00741234", "00741230")}
            flt, _ = identifier_query(from_json(keys))
            if not flt:
                return status(0xA900, "a filtered subscription needs matching keys"), None
        item = None if is_global else self.store.get(uid)
        self.store.subscribe(aet, uid, deletion_lock=lock == "TRUE", filter=flt)
        # PS3.4 CC.2.3.2: a subscriber to one workitem gets its current state at once
        self._report(
            event,
            "workitem.subscribed",
            uid,
            item=item,
            event_type=STATE_REPORT if item is not None else None,
            only_to=aet,
            detail={"aet": aet},
        )
        return status(0x0000), None
