"""The UPS-RS event channel (PS3.18 11.12 Open Event Channel, PS3.4 CC.2.4 event reports).

A subscriber AE opens ``ws(s)://NODE:PORT/dicom-web/subscribers/{aet}`` (WebSocket, with the
API's bearer token) and receives one text message per event, a DICOM JSON dataset:

* Affected SOP Instance UID (0000,1000): the workitem;
* Event Type ID (0000,1002): 1 UPS State Report (Procedure Step State, Input Readiness State),
  2 UPS Cancel Requested (Reason For Cancellation, Contact URI when given), 3 UPS Progress
  Report (the Procedure Step Progress Information Sequence).

Events go to the AEs subscribed (``node.store.workitems``) to that workitem, to the global
subscription, or to the filtered global subscription when the workitem matches the filter;
a subscription to a workitem answers at once with a State Report of its current state.  Only
open channels receive events: nothing is queued for an AE that is not connected (poll with a
search after connecting).  A channel that cannot keep up (``QUEUE_MAX`` events waiting) is
closed, so one slow subscriber never holds the node's memory.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from typing import Any, cast

from fastapi import APIRouter, Request, WebSocket, WebSocketDisconnect
from starlette.concurrency import run_in_threadpool

from node.api.auth import Authenticator
from node.store.ups import (
    CANCEL_REQUESTED,
    PROGRESS_REPORT,
    STATE_REPORT,
    event_information,
)
from node.store.workitems import Workitem, WorkitemStore

__all__ = [
    "CANCEL_REQUESTED",
    "PROGRESS_REPORT",
    "QUEUE_MAX",
    "STATE_REPORT",
    "EventHub",
    "event_message",
    "publish",
    "router",
]

log = logging.getLogger(__name__)

router = APIRouter(include_in_schema=False)

#: Events waiting on one channel before it is closed as too slow.
QUEUE_MAX = 1000


def _attr(vr: str, *values: Any) -> dict[str, Any]:
    return {"vr": vr, "Value": list(values)} if values else {"vr": vr}


def event_message(item: Workitem, event_type: int, *, reason: str | None = None) -> dict[str, Any]:
    """The DICOM JSON of one event report about ``item`` (PS3.4 CC.2.4, PS3.18 11.12)."""
    msg: dict[str, Any] = {
        "00001000": _attr("UI", item.uid),
        "00001002": _attr("US", event_type),
    }
    msg.update(
        event_information(
            state=item.state, dataset=item.dataset, event_type=event_type, reason=reason
        )
    )
    return msg


class EventHub:
    """The open event channels of this process, per subscriber AE title.

    ``open``, ``close`` and ``send`` run on the event loop (the queues are asyncio's); other
    threads call ``connected`` and ``recipients`` only, and hand ``send`` to the loop.
    """

    def __init__(self) -> None:
        self._channels: dict[str, set[asyncio.Queue[dict[str, Any] | None]]] = {}
        self._lock = threading.Lock()

    def open(self, aet: str) -> asyncio.Queue[dict[str, Any] | None]:
        """A new channel for ``aet`` (call from the event loop)."""
        queue: asyncio.Queue[dict[str, Any] | None] = asyncio.Queue(maxsize=QUEUE_MAX)
        with self._lock:
            self._channels.setdefault(aet, set()).add(queue)
        return queue

    def close(self, aet: str, queue: asyncio.Queue[dict[str, Any] | None]) -> None:
        """Forget a channel."""
        with self._lock:
            queues = self._channels.get(aet)
            if queues is not None:
                queues.discard(queue)
                if not queues:
                    del self._channels[aet]

    def connected(self) -> set[str]:
        """AE titles with an open channel."""
        with self._lock:
            return set(self._channels)

    def send(self, aets: set[str], message: dict[str, Any]) -> int:
        """Queue ``message`` on every channel of ``aets``; returns how many channels got it."""
        sent = 0
        for aet in aets:
            with self._lock:
                queues = list(self._channels.get(aet, ()))
            for queue in queues:
                try:
                    queue.put_nowait(message)
                    sent += 1
                except asyncio.QueueFull:
                    log.warning("workitem.event_channel_full", extra={"aet": aet})
                    self.close(aet, queue)
                    with contextlib.suppress(asyncio.QueueFull):
                        queue.get_nowait()
                        queue.put_nowait(None)  # tells the channel to close
        return sent

    def recipients(self, store: WorkitemStore, item: Workitem) -> set[str]:
        """The connected AEs subscribed to ``item`` (directly, globally, or by a filter)."""
        online = self.connected()
        if not online:
            return set()
        return store.subscribers(item) & online


async def publish(request: Request, item: Workitem, event_type: int, **kwargs: Any) -> None:
    """Send one event about ``item`` to its subscribers: the connected UPS-RS event channels,
    and the UPS DIMSE subscribers when the node serves UPS over DIMSE (``node.ups_dimse``)."""
    ups_dimse = getattr(getattr(request.app.state, "node", None), "ups_dimse", None)
    if ups_dimse is not None:
        await run_in_threadpool(ups_dimse.report, item, event_type, reason=kwargs.get("reason"))
    hub: EventHub | None = getattr(request.app.state, "workitem_events", None)
    if hub is None or not hub.connected():
        return
    store: WorkitemStore = request.app.state.workitems
    aets = await run_in_threadpool(hub.recipients, store, item)
    if aets:
        hub.send(aets, event_message(item, event_type, **kwargs))


@router.websocket("/dicom-web/subscribers/{aet}")
async def event_channel(websocket: WebSocket, aet: str) -> None:
    """Open Event Channel (PS3.18 11.12): authenticated before the handshake is accepted.

    Without valid credentials the handshake is refused (HTTP 403, close code 1008).
    """
    authenticator: Authenticator = websocket.app.state.auth
    # resolve() reads headers, cookies and the peer address: a WebSocket has all of them
    principal = authenticator.resolve(cast(Request, websocket))
    name = aet.strip()
    if principal is None or not (1 <= len(name) <= 16) or "\\" in name:
        log.info("workitem.event_channel_refused", extra={"authenticated": principal is not None})
        await websocket.close(code=1008)
        return
    hub: EventHub = websocket.app.state.workitem_events
    queue = hub.open(name)
    await websocket.accept()
    log.info("workitem.event_channel_opened", extra={"aet": name})
    receiver = asyncio.ensure_future(websocket.receive())
    try:
        while True:
            getter = asyncio.ensure_future(queue.get())
            done, _ = await asyncio.wait({getter, receiver}, return_when=asyncio.FIRST_COMPLETED)
            if receiver in done:  # the client closed, or sent something (ignored)
                getter.cancel()
                if receiver.exception() is not None:
                    break
                if receiver.result().get("type") == "websocket.disconnect":
                    break
                receiver = asyncio.ensure_future(websocket.receive())
                continue
            message = getter.result()
            if message is None:
                await websocket.close(code=1013)
                break
            await websocket.send_json(message)
    except WebSocketDisconnect:
        pass
    finally:
        receiver.cancel()
        hub.close(name, queue)
        log.info("workitem.event_channel_closed", extra={"aet": name})
