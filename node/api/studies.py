"""``/api/studies``: list received studies, show one with its series and events, force completion.

Study summaries carry UIDs, counts, sizes and times only (no patient data); the detail adds the
series (modality, body part, description, instance count), the newest routing (decisions and
the rules' explanation), the study's jobs, their result objects, its deliveries and the
study's event history.
"""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request

from node.api.deliveries import present_delivery
from node.api.deps import NodeView, get_node
from node.api.jobs import present_job
from node.errors import NotFoundError

__all__ = ["router"]

router = APIRouter(tags=["studies"])

_TIME_KEYS = ("first_received", "last_received", "completed_at", "ts")


def _iso(epoch: float | None) -> str | None:
    if epoch is None:
        return None
    return dt.datetime.fromtimestamp(epoch, dt.UTC).isoformat(timespec="milliseconds")


def _present(row: dict[str, Any]) -> dict[str, Any]:
    """A row with epoch-second times as ISO 8601 UTC strings."""
    return {k: _iso(v) if k in _TIME_KEYS and v is not None else v for k, v in row.items()}


def _summary(row: dict[str, Any]) -> dict[str, Any]:
    out = _present(row)
    out["url"] = f"/api/studies/{row['study_uid']}"
    return out


@router.get("/api/studies")
def list_studies(
    request: Request,
    node: Annotated[NodeView, Depends(get_node)],
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    offset: Annotated[int, Query(ge=0)] = 0,
) -> dict[str, Any]:
    """Studies, most recently received first, one page at a time.

    Returns ``{"studies": [...], "limit", "offset", "next"}``; ``next`` is the URL of the
    following page, or null on the last page.
    """
    rows = node.index.list_studies(limit=limit + 1, offset=offset)
    has_more = len(rows) > limit
    next_url = None
    if has_more:
        next_url = str(request.url.include_query_params(limit=limit, offset=offset + limit))
    return {
        "studies": [_summary(r) for r in rows[:limit]],
        "limit": limit,
        "offset": offset,
        "next": next_url,
    }


def _detail(node: NodeView, study_uid: str, *, events_limit: int = 200) -> dict[str, Any]:
    row = node.index.study_row(study_uid)
    study = node.index.get_study(study_uid)
    if row is None or study is None:
        raise NotFoundError(f"study {study_uid} is not known to this node")
    out = _summary(row)
    out["series"] = [
        {
            "series_uid": s.series_uid,
            "modality": s.modality,
            "body_part": s.body_part,
            "series_description": s.series_description,
            "instance_count": s.instance_count,
        }
        for s in study.series
    ]
    routing = node.jobs.routing(study_uid)
    if routing is not None:
        routing = {**routing, "routed_at": _iso(routing["routed_at"])}
    out["routing"] = routing
    job_rows = [r.to_json() for r in node.jobs.list_jobs(study_uid=study_uid, limit=1000)]
    out["jobs"] = [present_job(j) for j in job_rows]
    out["results"] = [
        {"job_id": j["job_id"], "model": j["model"], **obj}
        for j in job_rows
        if j["state"] == "succeeded"
        for obj in j["outputs"].get("objects", [])
    ]
    out["deliveries"] = [
        present_delivery(d.to_json()) for d in node.outbox.list(study_uid=study_uid, limit=1000)
    ]
    events = node.index.events(study_uid)
    out["event_count"] = len(events)
    out["events"] = [_present(e) for e in events[-events_limit:]] if events_limit else []
    return out


@router.get("/api/studies/{study_uid}")
def show_study(
    study_uid: str,
    node: Annotated[NodeView, Depends(get_node)],
    events: Annotated[int, Query(ge=0, le=100_000, description="latest events to list")] = 200,
) -> dict[str, Any]:
    """One study: summary, series and its latest ``events`` events (``event_count``: all).

    Raises
    ------
    NotFoundError
        No instance of ``study_uid`` was ever received (404 problem).
    """
    return _detail(node, study_uid, events_limit=events)


@router.post("/api/studies/{study_uid}/complete")
def complete_study(study_uid: str, node: Annotated[NodeView, Depends(get_node)]) -> dict[str, Any]:
    """Force completion of a study now, without waiting for the stable window.

    Completing an already complete study changes nothing (``"changed": false``).

    Raises
    ------
    NotFoundError
        The study is unknown (404 problem).
    """
    if node.index.study_row(study_uid) is None:
        raise NotFoundError(f"study {study_uid} is not known to this node")
    generation = node.tracker.complete(study_uid)
    out = _detail(node, study_uid)
    out["changed"] = generation is not None
    return out
