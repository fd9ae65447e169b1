"""UPS Event SCU: N-EVENT-REPORTs to the AEs subscribed over UPS DIMSE (PS3.4 CC.2.4).

A subscriber names only its AE title (Receiving AE, 0074,1234); where it listens comes from the
config (``node.ups_dimse.event_aets``).  Reports are queued and sent by one thread, one
association per AE and batch, under the UPS Event SOP Class with UPS Push as Affected SOP Class
(PS3.4 CC.2.4.2).  A report that cannot be delivered (the AE is away, refuses, times out) is
logged and dropped, as on the UPS-RS event channel: the subscriber searches after reconnecting.
The queue is bounded (``QUEUE_MAX``) so an unreachable AE never holds the node's memory.
"""

from __future__ import annotations

import contextlib
import logging
import queue
import threading
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from typing import Any

from pydicom.dataset import Dataset
from pynetdicom import AE

from node.ingest.ups_scp import UPS_EVENT, UPS_PUSH

__all__ = ["QUEUE_MAX", "EventReport", "UpsEventReporter"]

log = logging.getLogger(__name__)

#: Reports waiting before new ones are dropped (and logged).
QUEUE_MAX = 10_000


@dataclass(frozen=True, slots=True)
class EventReport:
    """One N-EVENT-REPORT: to ``aet``, about ``workitem_uid``, Event Information as DICOM JSON."""

    aet: str
    workitem_uid: str
    event_type: int
    information: dict[str, Any]


class UpsEventReporter:
    """Sends UPS event reports as N-EVENT-REPORT requests (UPS Event SOP Class, SCU role).

    Parameters
    ----------
    ae_title:
        Our calling AE title (``node.ae_title``).
    peers:
        AE title -> ``(host, port)`` of each AE that may subscribe.
    timeout_seconds:
        Association, DIMSE and network time-out.
    """

    def __init__(
        self,
        *,
        ae_title: str,
        peers: Mapping[str, tuple[str, int]],
        timeout_seconds: float,
    ) -> None:
        self._ae_title = ae_title
        self._peers = dict(peers)
        self._timeout = timeout_seconds
        self._queue: queue.Queue[EventReport | None] = queue.Queue(maxsize=QUEUE_MAX)
        self._thread: threading.Thread | None = None

    @property
    def aets(self) -> set[str]:
        """AE titles reports can be sent to."""
        return set(self._peers)

    def start(self) -> None:
        """Start the sending thread."""
        self._thread = threading.Thread(target=self._run, name="ups-event-reports", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        """Stop after the reports queued so far (waits at most ``timeout`` seconds)."""
        if self._thread is None:
            return
        with contextlib.suppress(queue.Full):
            self._queue.put(None, timeout=timeout)
        self._thread.join(timeout)
        self._thread = None

    def send(
        self,
        aets: Collection[str],
        *,
        workitem_uid: str,
        event_type: int,
        information: dict[str, Any],
    ) -> None:
        """Queue one report for each of ``aets`` that has an address (others are skipped)."""
        for aet in sorted(set(aets) & set(self._peers)):
            try:
                self._queue.put_nowait(EventReport(aet, workitem_uid, event_type, information))
            except queue.Full:
                log.warning("ups.event_report_dropped", extra={"aet": aet, "reason": "queue full"})

    def _run(self) -> None:
        while True:
            first = self._queue.get()
            if first is None:
                return
            batch = [first]
            while True:  # what else is waiting, sent over the same associations
                try:
                    more = self._queue.get_nowait()
                except queue.Empty:
                    break
                if more is None:
                    self._deliver(batch)
                    return
                batch.append(more)
            self._deliver(batch)

    def _deliver(self, batch: list[EventReport]) -> None:
        by_aet: dict[str, list[EventReport]] = {}
        for report in batch:
            by_aet.setdefault(report.aet, []).append(report)
        for aet, reports in by_aet.items():
            try:
                self._send_to(aet, reports)
            except Exception:  # noqa: BLE001 - one failing peer must not stop the others
                log.exception("ups.event_report_failed", extra={"aet": aet})

    def _send_to(self, aet: str, reports: list[EventReport]) -> None:
        host, port = self._peers[aet]
        ae = AE(ae_title=self._ae_title)
        ae.add_requested_context(UPS_EVENT)
        ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = self._timeout
        assoc = ae.associate(host, port, ae_title=aet)
        if not assoc.is_established:
            log.warning(
                "ups.event_report_failed",
                extra={"aet": aet, "reason": "association refused or unreachable"},
            )
            return
        try:
            for n, report in enumerate(reports, start=1):
                status, _ = assoc.send_n_event_report(
                    Dataset.from_json(report.information),
                    report.event_type,
                    UPS_PUSH,
                    report.workitem_uid,
                    msg_id=n % 65536,
                )
                code = getattr(status, "Status", None)
                log.info(
                    "ups.event_reported",
                    extra={
                        "aet": aet,
                        "workitem_uid": report.workitem_uid,
                        "event_type": report.event_type,
                        "status": f"{code:04X}" if isinstance(code, int) else "no answer",
                    },
                )
        finally:
            assoc.release()
