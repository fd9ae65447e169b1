"""Console page of UPS workitems: every workitem this node manages, with its state.

- ``/console/workitems`` (any signed-in role): the counts per Procedure Step State and one row
  per workitem (newest first): its UID, Procedure Step Label, state, priority, scheduled start,
  the scheduled workitem and station codes, when it changed, and whether a cancellation was
  requested.  Patient name and ID are not shown: the page is a work queue, not a patient list.
  ``?state=`` shows one state only.
"""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import HTMLResponse

from node.api.console import Session, page
from node.api.workitems import workitem_store
from node.store.ups import UpsState, text_value
from node.store.workitems import Workitem

__all__ = ["router"]

router = APIRouter(prefix="/console", include_in_schema=False)

#: Most rows one page shows.
PAGE_ROWS = 500


def _codes(item: Workitem, tag: str) -> str:
    out = []
    for code in (item.dataset.get(tag) or {}).get("Value") or []:
        if isinstance(code, dict):
            value = text_value(code, "00080100") or ""
            meaning = text_value(code, "00080104")
            out.append(f"{value} ({meaning})" if meaning else value)
    return ", ".join(out)


def _iso(ts: float | None) -> str | None:
    if ts is None:
        return None
    return dt.datetime.fromtimestamp(ts, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _row(item: Workitem) -> dict[str, Any]:
    return {
        "uid": item.uid,
        "label": item.label or "",
        "state": item.state.value,
        "state_class": item.state.value.lower().replace(" ", "-"),
        "priority": text_value(item.dataset, "ScheduledProcedureStepPriority") or "",
        "start": text_value(item.dataset, "ScheduledProcedureStepStartDateTime") or "",
        "work": _codes(item, "00404018"),
        "station": _codes(item, "00404025"),
        "updated": _iso(item.updated_at),
        "cancel_requested": _iso(item.cancel_requested_at),
    }


@router.get("/workitems", dependencies=[Session])
def workitems_page(request: Request, state: Annotated[str | None, Query()] = None) -> HTMLResponse:
    """The workitems with their state (``?state=SCHEDULED`` etc. filters)."""
    store = workitem_store(request)
    states = [s.value for s in UpsState]
    chosen = UpsState(state) if state in states else None
    items = store.workitems(state=chosen)
    items.sort(key=lambda i: (i.created_at, i.uid), reverse=True)
    counts = store.counts()
    response = page(
        request,
        "workitems.html",
        rows=[_row(i) for i in items[:PAGE_ROWS]],
        shown=min(len(items), PAGE_ROWS),
        total=len(items),
        counts=[(s, counts.get(s, 0)) for s in states],
        state=chosen.value if chosen else None,
        bad_state=state if state and chosen is None else None,
    )
    return response
