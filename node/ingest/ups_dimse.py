"""UPS over DIMSE as a Task Manager: the SCP's handlers and the event reports they cause.

``UpsDimse`` joins :class:`node.ingest.ups_scp.UpsService` (served by the DICOM listener) and
:class:`node.ingest.ups_reports.UpsEventReporter` (N-EVENT-REPORTs to subscribed AEs).  A change
made over DIMSE is reported to the DIMSE subscribers here and handed to the listeners (the HTTP
API audits it and forwards it to its UPS-RS event channels); a change made over UPS-RS, or a
workitem a routing rule schedules, is reported to the DIMSE subscribers through :meth:`report`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from node.config import UpsDimseConfig
from node.ingest.ups_reports import UpsEventReporter
from node.ingest.ups_scp import UpsChange, UpsService
from node.store.ups import event_information
from node.store.workitems import Workitem, WorkitemStore

__all__ = ["UpsDimse"]

log = logging.getLogger(__name__)


class UpsDimse:
    """The UPS DIMSE Task Manager of a node (``node.ups_dimse``).

    Parameters
    ----------
    store:
        The node's workitem table (shared with UPS-RS).
    config:
        ``node.ups_dimse``.
    ae_title:
        ``node.ae_title``: Worklist Label of new workitems, calling AE title of reports.
    timeout_seconds:
        Network time-out of the report associations.
    """

    def __init__(
        self,
        store: WorkitemStore,
        *,
        config: UpsDimseConfig,
        ae_title: str,
        timeout_seconds: float,
    ) -> None:
        self._store = store
        self.reporter = UpsEventReporter(
            ae_title=ae_title,
            peers={aet: (p.host, p.port) for aet, p in config.event_aets.items()},
            timeout_seconds=timeout_seconds,
        )
        self.service = UpsService(
            store,
            worklist_label=ae_title,
            event_aets=self.reporter.aets,
            on_change=self._changed,
        )
        self._listeners: list[Callable[[UpsChange], None]] = []

    def add_listener(self, callback: Callable[[UpsChange], None]) -> None:
        """Call ``callback(change)`` for each change made over DIMSE (audit, UPS-RS events)."""
        self._listeners.append(callback)

    def start(self) -> None:
        """Start sending event reports."""
        self.reporter.start()

    def stop(self) -> None:
        """Stop sending event reports (those queued are sent first, for a few seconds)."""
        self.reporter.stop()

    def report(
        self,
        item: Workitem,
        event_type: int,
        *,
        reason: str | None = None,
        only_to: str | None = None,
    ) -> None:
        """Send one event report about ``item`` to its DIMSE subscribers (or ``only_to``)."""
        aets = {only_to} if only_to else self._store.subscribers(item)
        aets &= self.reporter.aets
        if not aets:
            return
        info = event_information(
            state=item.state, dataset=item.dataset, event_type=event_type, reason=reason
        )
        self.reporter.send(aets, workitem_uid=item.uid, event_type=event_type, information=info)

    def _changed(self, change: UpsChange) -> None:
        if change.item is not None and change.event_type is not None:
            self.report(
                change.item, change.event_type, reason=change.reason, only_to=change.only_to
            )
        for callback in self._listeners:
            try:
                callback(change)
            except Exception:  # noqa: BLE001 - one consumer must not stop the others
                log.exception("ups.listener_failed")
