"""Workitems that routing rules schedule (``then: {workitem: ...}``, issue 23 §2).

A rule may, instead of or beside running a local model, put a UPS workitem on the node's own
worklist (``node.store.workitems``) so that an external performer — another ainode, a vendor's
AI — claims the work through UPS-RS.  One workitem per (study, rule, series, code): its UID is
derived from them, so routing the study again (a late instance, a replay of the same rules)
finds it and creates no second one.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from typing import Any

from pydicom.uid import generate_uid

from node.errors import WorkitemError
from node.store.ups import scheduled_workitem
from node.store.workitems import Workitem, WorkitemStore
from node.types import Instance, Study

__all__ = ["Worklist", "workitem_uid"]

log = logging.getLogger(__name__)


def workitem_uid(*, study_uid: str, rule: str, series_uid: str, code: str) -> str:
    """The workitem UID of a rule's workitem for one series (stable across routings)."""
    return str(generate_uid(entropy_srcs=["ainode-workitem", study_uid, rule, series_uid, code]))


class Worklist:
    """Schedules the workitems of a routing plan.

    Parameters
    ----------
    store:
        The node's workitem table.
    worklist_label:
        Worklist Label (0074,1202) of the workitems (``node.ae_title``).
    retrieve_ae_title:
        The AE title a performer retrieves the input from by C-MOVE/C-GET (``node.ae_title``).
    public_url:
        The node's HTTP base URL as performers reach it (``node.public_url``): each input series
        gets its WADO-RS URL, ``{public_url}/dicom-web/studies/{study}/series/{series}``.  None:
        no Retrieve URL (a performer cannot know where to fetch by DICOMweb).
    """

    def __init__(
        self,
        store: WorkitemStore,
        *,
        worklist_label: str,
        retrieve_ae_title: str | None = None,
        public_url: str | None = None,
    ) -> None:
        self._store = store
        self._label = worklist_label
        self._retrieve_ae = retrieve_ae_title
        self._public_url = public_url.rstrip("/") if public_url else None
        self._listeners: list[Callable[[Workitem, str], None]] = []

    @property
    def store(self) -> WorkitemStore:
        """The workitem table."""
        return self._store

    def add_listener(self, callback: Callable[[Workitem, str], None]) -> None:
        """Call ``callback(workitem, rule)`` for each workitem scheduled (audit, events)."""
        self._listeners.append(callback)

    def schedule(
        self,
        study: Study,
        requests: Sequence[tuple[str, str, Any]],
        *,
        series_instances: Callable[[str], list[Instance]],
        now: float | None = None,
    ) -> list[Workitem]:
        """Create the workitems ``(rule, series_uid, WorkitemRequest)`` asks for; return the new
        ones (a workitem scheduled by an earlier routing is left as it is)."""
        ts = time.time() if now is None else now
        start = time.strftime("%Y%m%d%H%M%S", time.gmtime(ts)) + "+0000"
        headers = {s.series_uid: s.header for s in study.series}
        created: list[Workitem] = []
        for rule, series_uid, request in requests:
            uid = workitem_uid(
                study_uid=study.study_uid, rule=rule, series_uid=series_uid, code=request.code
            )
            dataset = scheduled_workitem(
                code=request.code,
                scheme=request.scheme,
                meaning=request.meaning,
                station=request.station,
                priority=request.priority,
                label=f"{rule}: {request.meaning or request.code}",
                header=headers.get(series_uid) or study.header or {},
                study_uid=study.study_uid,
                series_uid=series_uid,
                instances=[(i.sop_class_uid, i.sop_uid) for i in series_instances(series_uid)],
                start=start,
                retrieve_ae_title=self._retrieve_ae,
                retrieve_url=(
                    f"{self._public_url}/dicom-web/studies/{study.study_uid}/series/{series_uid}"
                    if self._public_url
                    else None
                ),
            )
            try:
                item = self._store.create(uid, dataset, worklist_label=self._label, now=ts)
            except WorkitemError:  # scheduled by an earlier routing of this study
                log.debug("workitem.exists", extra={"workitem_uid": uid})
                continue
            log.info(
                "workitem.scheduled",
                extra={"workitem_uid": uid, "study_uid": study.study_uid, "rule": rule},
            )
            created.append(item)
            for callback in self._listeners:
                try:
                    callback(item, rule)
                except Exception:  # noqa: BLE001 - one consumer must not stop the others
                    log.exception("workitem.listener_failed", extra={"workitem_uid": uid})
        return created
