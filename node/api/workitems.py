"""UPS-RS: ainode as a small Task Manager (PS3.18 section 11, PS3.4 Annex CC).

A RIS, a PACS or a rule schedules work as Unified Procedure Step workitems; performers (another
ainode, a vendor's AI) search for them, claim one with a Transaction UID, update it and complete
or cancel it.  Every route is behind the API's authentication, checked before the body is read
(``node.api.gate``); reading needs a role of ``console.phi_roles`` (workitems carry patient
name and ID), writing the ``operator`` role.

* ``POST /dicom-web/workitems{?workitem}``: Create (11.4), 201 with ``Location``;
* ``GET /dicom-web/workitems{?search keys, limit, offset}``: Search (11.9);
* ``GET /dicom-web/workitems/{uid}``: Retrieve (11.5);
* ``POST|PUT /dicom-web/workitems/{uid}{?transaction-uid}``: Update (11.6);
* ``PUT /dicom-web/workitems/{uid}/state``: Change State (11.7), the body carrying Procedure
  Step State and Transaction UID;
* ``POST /dicom-web/workitems/{uid}/cancelrequest``: Request Cancellation (11.8);
* ``POST|DELETE /dicom-web/workitems/{uid}/subscribers/{aet}``: (Un)subscribe (11.10, 11.11),
  ``uid`` a workitem or the global (``1.2.840.10008.5.1.4.34.5``) or filtered global
  (``...34.5.1``) subscription instance.

The Transaction UID query parameter is accepted as ``transaction-uid``, ``transaction`` and
``Transaction-uid``: editions of PS3.18 and servers differ.  Refusals are problem JSON whose
``Warning`` header (and ``dicom_status`` member) carries the PS3.4 CC.2 status.  Every change is
audited (``workitem.*``, identifiers only).
"""

from __future__ import annotations

import json
import logging
import re
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import JSONResponse, Response
from starlette.concurrency import run_in_threadpool

from node.api.auditing import audit
from node.api.deps import NodeView, get_node
from node.api.dicomweb import phi_reader
from node.api.media import DICOM_JSON, DicomJsonResponse
from node.api.phi import audit_phi_view
from node.api.problems import warning_header
from node.api.workitem_events import (
    CANCEL_REQUESTED,
    PROGRESS_REPORT,
    STATE_REPORT,
    EventHub,
    event_message,
    publish,
)
from node.errors import NotFoundError, WorkitemError
from node.store.ups import (
    FILTERED_SUBSCRIPTION_UID,
    GLOBAL_SUBSCRIPTION_UID,
    TAGS,
    UpsState,
    check_create,
    check_update,
    matches,
    parse_search,
    strip_transaction,
    text_value,
    validate_dataset,
)
from node.store.workitems import Workitem, WorkitemStore

__all__ = ["BODY_MAX_BYTES", "TRANSACTION_PARAMS", "router", "workitem_store"]

log = logging.getLogger(__name__)

router = APIRouter(tags=["ups-rs"])

#: Largest workitem body accepted (a workitem is a few kB; its input list can be long).
BODY_MAX_BYTES = 1 << 20
#: The spellings of the Transaction UID query parameter across editions of PS3.18.
TRANSACTION_PARAMS = ("transaction-uid", "transaction", "Transaction-uid")
_UID_RE = re.compile(r"^[0-9]+(\.[0-9]+)*$")
_PAGING = {"limit", "offset", "includefield", "fuzzymatching"}
_SUBSCRIBE_PARAMS = {"deletionlock", "filter"}


def workitem_store(request: Request) -> WorkitemStore:
    """The app's workitem store (``create_app`` opens it on the node's index file)."""
    store: WorkitemStore = request.app.state.workitems
    return store


Store = Annotated[WorkitemStore, Depends(workitem_store)]
Node = Annotated[NodeView, Depends(get_node)]


def _bad(message: str, dicom_status: int = 0xA900) -> WorkitemError:
    return WorkitemError(message, http_status=400, dicom_status=dicom_status)


def _uid(value: str, what: str) -> str:
    if not _UID_RE.match(value) or len(value) > 64:
        raise _bad(f"{what} {value[:80]!r} is not a UID (digits and dots, at most 64 characters)")
    return value


def _url(request: Request, uid: str) -> str:
    return f"{str(request.base_url).rstrip('/')}/dicom-web/workitems/{uid}"


async def _dataset(request: Request) -> dict[str, Any]:
    """The one DICOM JSON dataset of the request body (PS3.18 11.4.1.2, F.2)."""
    media = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if media not in (DICOM_JSON, "application/json"):
        raise WorkitemError(
            f"a workitem body is {DICOM_JSON}, not {media or 'untyped'}",
            http_status=415,
            dicom_status=0xA900,
        )
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > BODY_MAX_BYTES:
        raise WorkitemError(
            f"the body is larger than {BODY_MAX_BYTES} bytes",
            http_status=413,
            dicom_status=0xA700,
        )
    raw = bytearray()
    async for chunk in request.stream():
        raw += chunk
        if len(raw) > BODY_MAX_BYTES:
            raise WorkitemError(
                f"the body is larger than {BODY_MAX_BYTES} bytes",
                http_status=413,
                dicom_status=0xA700,
            )
    try:
        data = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise _bad(f"the body is not JSON: {exc}") from None
    except RecursionError:
        raise _bad("the body's JSON is nested too deeply") from None
    if isinstance(data, list):
        if len(data) != 1:
            raise _bad(f"the body holds {len(data)} datasets; a workitem request holds one")
        data = data[0]
    return validate_dataset(data)


def _transaction(request: Request) -> str | None:
    given = {request.query_params[p] for p in TRANSACTION_PARAMS if p in request.query_params}
    if len(given) > 1:
        raise _bad("the Transaction UID is given twice with different values", 0xC301)
    return next(iter(given), None)


def _no_params(request: Request, allowed: set[str]) -> None:
    unknown = [k for k in request.query_params if k not in allowed]
    if unknown:
        raise _bad(
            f"unknown query parameter {unknown[0]!r}"
            + (f"; allowed: {', '.join(sorted(allowed))}" if allowed else "")
        )


def _present(item: Workitem) -> dict[str, Any]:
    return strip_transaction(item.dataset)


@router.post("/dicom-web/workitems", status_code=201, response_class=Response)
async def create_workitem(request: Request, store: Store, node: Node) -> Response:
    """Create Workitem (PS3.18 11.4): 201 with ``Location``; 409 when the UID exists."""
    _no_params(request, {"workitem", "uid"})
    ds = await _dataset(request)
    given = {request.query_params[k] for k in ("workitem", "uid") if k in request.query_params}
    in_body = text_value(ds, "SOPInstanceUID")
    if in_body:
        given.add(in_body)
    if len(given) > 1:
        raise _bad("the workitem UID of the query and the body's SOP Instance UID differ")
    uid = _uid(next(iter(given)), "workitem UID") if given else _new_uid()
    check_create(ds)
    item = await run_in_threadpool(store.create, uid, ds, worklist_label=node.config.node.ae_title)
    log.info("workitem.created", extra={"workitem_uid": uid})
    audit(request, "workitem.created", study_uid=_study(item), workitem_uid=uid)
    await publish(request, item, STATE_REPORT)
    url = _url(request, uid)
    return Response(status_code=201, headers={"Location": url, "Content-Location": url})


def _new_uid() -> str:
    from pydicom.uid import generate_uid

    return str(generate_uid())


def _study(item: Workitem) -> str | None:
    return text_value(item.dataset, "StudyInstanceUID")


@router.get(
    "/dicom-web/workitems", response_class=DicomJsonResponse, dependencies=[Depends(phi_reader)]
)
def search_workitems(
    request: Request,
    store: Store,
    limit: Annotated[int, Query(ge=1, le=10000)] = 100,
    offset: Annotated[int, Query(ge=0)] = 0,
) -> JSONResponse:
    """Search for Workitems (PS3.18 11.9): the matching workitems, oldest first."""
    fuzzy = request.query_params.get("fuzzymatching", "false").lower()
    if fuzzy not in ("false", "true"):
        raise _bad("fuzzymatching is true or false")
    query = parse_search(
        [(k, v) for k, v in request.query_params.multi_items() if k not in _PAGING]
    )
    state = dict(query).get("ProcedureStepState")
    if state is not None and state not in {s.value for s in UpsState}:
        raise _bad(
            f"ProcedureStepState {state!r} is not one of {', '.join(s.value for s in UpsState)}"
        )
    items = store.workitems(state=UpsState(state) if state else None)
    found = [i for i in items if matches(i.dataset, query)][offset : offset + limit]
    audit_phi_view(
        request,
        sorted({s for i in found if (s := _study(i))}),
        purpose="GET /dicom-web/workitems",
    )
    # PS3.18 8.3.4.1: a server without fuzzy matching ignores the parameter and says so
    headers = {"Warning": _NO_FUZZY} if fuzzy == "true" else None
    return DicomJsonResponse([_present(i) for i in found], headers=headers)


#: The warning PS3.18 8.3.4.1 gives a search whose ``fuzzymatching=true`` the server ignores.
_NO_FUZZY = (
    '299 ainode "The fuzzymatching parameter is not supported. '
    'Only literal matching has been performed."'
)


@router.get(
    "/dicom-web/workitems/{uid}",
    response_class=DicomJsonResponse,
    dependencies=[Depends(phi_reader)],
)
def retrieve_workitem(request: Request, uid: str, store: Store) -> JSONResponse:
    """Retrieve Workitem (PS3.18 11.5): the workitem, without its Transaction UID."""
    _no_params(request, set())
    item = store.get(_uid(uid, "workitem UID"))
    study = _study(item)
    audit_phi_view(request, [study] if study else [], purpose="GET /dicom-web/workitems/{uid}")
    return DicomJsonResponse([_present(item)])


async def _update(request: Request, uid: str, store: WorkitemStore) -> Response:
    _no_params(request, set(TRANSACTION_PARAMS))
    _uid(uid, "workitem UID")
    txn = _transaction(request)
    changes = await _dataset(request)
    check_update(changes)
    item = await run_in_threadpool(store.update, uid, changes, transaction_uid=txn)
    log.info("workitem.updated", extra={"workitem_uid": uid, "state": item.state.value})
    audit(
        request,
        "workitem.updated",
        study_uid=_study(item),
        workitem_uid=uid,
        attributes=sorted(changes),
    )
    if TAGS["ProcedureStepProgressInformationSequence"] in changes:
        await publish(request, item, PROGRESS_REPORT)
    return Response(status_code=200)


@router.post("/dicom-web/workitems/{uid}", response_class=Response)
async def update_workitem(request: Request, uid: str, store: Store) -> Response:
    """Update Workitem (PS3.18 11.6; POST in current editions)."""
    return await _update(request, uid, store)


@router.put("/dicom-web/workitems/{uid}", response_class=Response)
async def update_workitem_put(request: Request, uid: str, store: Store) -> Response:
    """Update Workitem with PUT, as some clients send it (same rules as POST)."""
    return await _update(request, uid, store)


@router.put("/dicom-web/workitems/{uid}/state", response_class=Response)
async def change_state(request: Request, uid: str, store: Store) -> Response:
    """Change Workitem State (PS3.18 11.7): the body gives Procedure Step State and Transaction UID.

    200 (with a ``Warning`` when it already was in that final state); 400/409 problems with the
    PS3.4 status in ``Warning``, see ``node.store.ups.transition``.
    """
    _no_params(request, set(TRANSACTION_PARAMS))
    _uid(uid, "workitem UID")
    ds = await _dataset(request)
    extra = set(ds) - {TAGS["ProcedureStepState"], TAGS["TransactionUID"], "00080005"}
    if extra:
        raise _bad(
            "a state change body holds only Procedure Step State and Transaction UID; "
            f"found {', '.join(sorted(extra))} (update the workitem first)"
        )
    wanted = text_value(ds, "ProcedureStepState")
    if wanted is None:
        raise _bad("Procedure Step State (0074,1000) is missing from the body")
    if wanted not in {s.value for s in UpsState}:
        raise _bad(f"Procedure Step State {wanted!r} is not one of the UPS states")
    txn = text_value(ds, "TransactionUID")
    query_txn = _transaction(request)
    if txn and query_txn and txn != query_txn:
        raise _bad("the body's Transaction UID and the query's differ", 0xC301)
    try:
        item, warning = await run_in_threadpool(
            store.change_state, uid, UpsState(wanted), transaction_uid=txn or query_txn
        )
    except WorkitemError as exc:
        audit(
            request,
            "workitem.state_changed",
            outcome="failure",
            workitem_uid=uid,
            state=wanted,
            dicom_status=f"{exc.dicom_status:04X}",
        )
        raise
    headers = {"Warning": warning_header(*warning)} if warning else {}
    if warning is None:
        log.info("workitem.state_changed", extra={"workitem_uid": uid, "state": wanted})
        audit(
            request,
            "workitem.state_changed",
            study_uid=_study(item),
            workitem_uid=uid,
            state=wanted,
        )
        await publish(request, item, STATE_REPORT)
    return Response(status_code=200, headers=headers)


@router.post("/dicom-web/workitems/{uid}/cancelrequest", response_class=Response)
async def request_cancel(request: Request, uid: str, store: Store) -> Response:
    """Request Cancellation (PS3.18 11.8): 202; a SCHEDULED workitem is CANCELED at once.

    The optional body may give Reason For Cancellation (0074,1238) and Contact URI (0074,100A).
    """
    _no_params(request, set())
    _uid(uid, "workitem UID")
    reason = contact = None
    if int(request.headers.get("content-length") or 0) > 0:
        ds = await _dataset(request)
        reason = text_value(ds, "ReasonForCancellation")
        contact = text_value(ds, "0074100A")
    outcome = await run_in_threadpool(store.request_cancel, uid, reason=reason, contact_uri=contact)
    if outcome.warning is not None:
        return Response(status_code=200, headers={"Warning": warning_header(*outcome.warning)})
    log.info("workitem.cancel_requested", extra={"workitem_uid": uid, "canceled": outcome.canceled})
    audit(
        request,
        "workitem.cancel_requested",
        study_uid=_study(outcome.workitem),
        workitem_uid=uid,
        canceled=outcome.canceled,
    )
    if outcome.canceled:
        await publish(request, outcome.workitem, STATE_REPORT)
    else:
        await publish(request, outcome.workitem, CANCEL_REQUESTED, reason=reason)
    return Response(status_code=202)


def _aet(aet: str) -> str:
    if not (1 <= len(aet) <= 16) or not aet.strip() or any(c < " " or c in "\\" for c in aet):
        raise _bad(f"{aet[:40]!r} is not an AE title (1 to 16 characters, no control or backslash)")
    return aet.strip()


@router.post(
    "/dicom-web/workitems/{uid}/subscribers/{aet}", status_code=201, response_class=Response
)
def subscribe(request: Request, uid: str, aet: str, store: Store) -> Response:
    """Subscribe (PS3.18 11.10) to a workitem, or to the (filtered) global subscription.

    ``deletionlock`` (true/false) is stored; a filtered global subscription takes its filter
    from the ``filter`` parameter (search keys, ``key=value`` joined by commas).
    """
    _no_params(request, _SUBSCRIBE_PARAMS)
    aet = _aet(aet)
    _uid(uid, "workitem UID")
    lock_text = request.query_params.get("deletionlock", "false").lower()
    if lock_text not in ("true", "false"):
        raise _bad("deletionlock is true or false")
    flt = None
    if uid == FILTERED_SUBSCRIPTION_UID:
        text = request.query_params.get("filter", "")
        pairs = [p.partition("=") for p in text.split(",") if p]
        flt = parse_search([(k, v) for k, _, v in pairs])
        if not flt:
            raise _bad("a filtered global subscription needs a filter (filter=Key=value,...)")
    elif "filter" in request.query_params:
        raise _bad(
            f"only the filtered global subscription ({FILTERED_SUBSCRIPTION_UID}) takes a filter"
        )
    item = None
    if uid not in (GLOBAL_SUBSCRIPTION_UID, FILTERED_SUBSCRIPTION_UID):
        item = store.get(uid)  # 404 for an unknown workitem (PS3.4 0xC307)
    store.subscribe(aet, uid, deletion_lock=lock_text == "true", filter=flt)
    audit(request, "workitem.subscribed", workitem_uid=uid, aet=aet)
    hub: EventHub | None = getattr(request.app.state, "workitem_events", None)
    if item is not None and hub is not None:  # PS3.4 CC.2.3.2: the current state, at once
        message = event_message(item, STATE_REPORT)
        loop = getattr(request.app.state, "loop", None)  # this handler runs in a worker thread
        if loop is not None:
            loop.call_soon_threadsafe(hub.send, {aet}, message)
    return Response(status_code=201)


@router.delete("/dicom-web/workitems/{uid}/subscribers/{aet}", response_class=Response)
def unsubscribe(request: Request, uid: str, aet: str, store: Store) -> Response:
    """Unsubscribe (PS3.18 11.11): 200; 404 when ``aet`` has no such subscription."""
    _no_params(request, set())
    aet = _aet(aet)
    _uid(uid, "workitem UID")
    if not store.unsubscribe(aet, uid):
        raise NotFoundError(f"AE {aet} has no subscription to {uid}")
    audit(request, "workitem.unsubscribed", workitem_uid=uid, aet=aet)
    return Response(status_code=200)


@router.post(
    "/dicom-web/workitems/{uid}/subscribers/{aet}/suspend",
    status_code=200,
    response_class=Response,
)
def suspend_subscription(request: Request, uid: str, aet: str, store: Store) -> Response:
    """Suspend Global Subscription (PS3.18 11.12, PS3.4 CC.2.3.3): the AE stays subscribed
    to the workitems that exist, not to later ones.  404 when it has no such subscription."""
    _no_params(request, set())
    aet = _aet(aet)
    if uid not in (GLOBAL_SUBSCRIPTION_UID, FILTERED_SUBSCRIPTION_UID):
        raise _bad(
            f"only a global subscription ({GLOBAL_SUBSCRIPTION_UID} or "
            f"{FILTERED_SUBSCRIPTION_UID}) is suspended; unsubscribe from a workitem instead",
            0xC314,
        )
    if not store.suspend(aet, uid):
        raise NotFoundError(f"AE {aet} has no subscription to {uid}")
    audit(request, "workitem.subscription_suspended", workitem_uid=uid, aet=aet)
    return Response(status_code=200)
