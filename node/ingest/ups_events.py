"""The performer's side of a UPS-RS event channel (PS3.18 11.10 Subscribe, 11.12 event channel).

With ``events: true`` on an ``ups-rs`` source, an ``UpsEventListener`` thread subscribes this
node's AE title to the manager's global subscription (PS3.4 CC.2.3: every workitem) and keeps a
WebSocket open on ``ws(s)://MANAGER/.../subscribers/{aet}``.  Each message is a DICOM JSON
event report (PS3.4 Table CC.2.4-1):

* a UPS State Report (Event Type ID 1) with Procedure Step State SCHEDULED wakes the performer,
  which then searches at once instead of waiting for its next poll (triggered pull);
* a UPS Cancel Requested (2) is handed to the performer with its Reason For Cancellation; the
  performer cancels that workitem if it holds it (PS3.4 CC.2.4.3: the performer decides).

Polling stays the fallback: a lost channel is reopened after ``poll_seconds``, and events sent
while it was closed are found by the next search.  Logs carry workitem UIDs only.
"""

from __future__ import annotations

import base64
import json
import logging
import ssl
import threading
from collections.abc import Callable
from typing import Any

import requests
import websockets.exceptions
import websockets.sync.client

from node.config import UpsRsSource
from node.web.peers import make_session

__all__ = ["GLOBAL_SUBSCRIPTION_UID", "UpsEventListener"]

log = logging.getLogger(__name__)

#: The UPS Global Subscription SOP Instance (PS3.4 CC.3.1).
GLOBAL_SUBSCRIPTION_UID = "1.2.840.10008.5.1.4.34.5"
_STATE_REPORT = 1
_CANCEL_REQUESTED = 2


def _value(ds: dict[str, Any], tag: str) -> Any:
    values = (ds.get(tag) or {}).get("Value") or []
    return values[0] if values else None


class UpsEventListener:
    """Listens on a manager's UPS-RS event channel for one ``ups-rs`` source.

    Parameters
    ----------
    source:
        The source's configuration (URL, authentication, TLS trust, ``poll_seconds``).
    ae_title:
        The subscriber AE title (this node's ``node.ae_title``).
    on_scheduled:
        Called when a workitem became (or was created) SCHEDULED.
    on_cancel_requested:
        Called with the workitem UID and the Reason For Cancellation (or None).
    """

    def __init__(
        self,
        source: UpsRsSource,
        *,
        ae_title: str,
        on_scheduled: Callable[[], None],
        on_cancel_requested: Callable[[str, str | None], None],
    ) -> None:
        self._source = source
        self._ae_title = ae_title
        self._on_scheduled = on_scheduled
        self._on_cancel_requested = on_cancel_requested
        self._base = source.url.rstrip("/")
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._conn: websockets.sync.client.ClientConnection | None = None

    def start(self) -> None:
        """Subscribe and listen on a thread of its own."""
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="ups-events", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        """Close the channel (the subscription stays: the manager keeps it for the next start)."""
        self._stop.set()
        with self._lock:
            conn = self._conn
        if conn is not None:
            conn.close()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None

    # ------------------------------------------------------------ the channel
    def _headers(self) -> dict[str, str]:
        s = self._source
        if s.auth == "bearer":
            return {"Authorization": f"Bearer {s.token or ''}"}
        if s.auth == "basic":
            pair = f"{s.username or ''}:{s.password or ''}".encode()
            return {"Authorization": "Basic " + base64.b64encode(pair).decode()}
        return {}

    def _ws_url(self) -> str:
        scheme, _, rest = self._base.partition("://")
        return f"{'wss' if scheme == 'https' else 'ws'}://{rest}/subscribers/{self._ae_title}"

    def _ssl(self) -> ssl.SSLContext | None:
        if not self._base.startswith("https://"):
            return None
        s = self._source
        ctx = ssl.create_default_context(cafile=str(s.ca) if s.ca else None)
        if not s.verify_tls:
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
        return ctx

    def _subscribe(self) -> bool:
        url = f"{self._base}/workitems/{GLOBAL_SUBSCRIPTION_UID}/subscribers/{self._ae_title}"
        with make_session(self._source) as session:
            try:
                resp = session.post(url, params={"deletionlock": "false"}, timeout=30)
            except requests.RequestException as exc:
                log.warning("performer.subscribe_failed", extra={"error": str(exc)[:200]})
                return False
        if resp.status_code not in (200, 201):
            log.warning("performer.subscribe_failed", extra={"status": resp.status_code})
            return False
        return True

    def _run(self) -> None:
        while not self._stop.is_set():
            # connect first, then subscribe: events between the two are not lost (the manager
            # sends only to open channels), and the performer searches after each wake-up
            try:
                conn = websockets.sync.client.connect(
                    self._ws_url(),
                    additional_headers=self._headers(),
                    ssl=self._ssl(),
                    open_timeout=30,
                )
            except (OSError, websockets.exceptions.WebSocketException) as exc:
                log.warning("performer.events_unavailable", extra={"error": str(exc)[:200]})
                self._stop.wait(self._source.poll_seconds)
                continue
            with self._lock:
                self._conn = conn
            try:
                if self._subscribe():
                    log.info("performer.events_connected", extra={"aet": self._ae_title})
                    self._on_scheduled()  # catch up on what happened while we were away
                    for message in conn:
                        self._handle(message)
            except websockets.exceptions.WebSocketException as exc:
                log.info("performer.events_closed", extra={"error": str(exc)[:200]})
            finally:
                conn.close()
                with self._lock:
                    self._conn = None
            self._stop.wait(self._source.poll_seconds)

    def _handle(self, message: str | bytes) -> None:
        try:
            ds = json.loads(message)
        except ValueError:
            log.warning("performer.event_unreadable")
            return
        if not isinstance(ds, dict):
            return
        uid = _value(ds, "00001000")
        kind = _value(ds, "00001002")
        if kind == _STATE_REPORT and _value(ds, "00741000") == "SCHEDULED":
            self._on_scheduled()
        elif kind == _CANCEL_REQUESTED and isinstance(uid, str):
            reason = _value(ds, "00741238")
            log.info("workitem.cancel_requested", extra={"workitem_uid": uid})
            self._on_cancel_requested(uid, reason if isinstance(reason, str) else None)
