"""``/api/jobs``: list jobs (filters, paging), show one with its transitions, retry, cancel."""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request

from node.api.auditing import audit
from node.api.deps import NodeView, get_node
from node.types import JobState

__all__ = ["router"]

router = APIRouter(tags=["jobs"])

_TIME_KEYS = ("created_at", "updated_at", "started_at", "finished_at", "ts")


def iso(epoch: float | None) -> str | None:
    """Epoch seconds as an ISO 8601 UTC string (None stays None)."""
    if epoch is None:
        return None
    return dt.datetime.fromtimestamp(epoch, dt.UTC).isoformat(timespec="milliseconds")


def present_job(row: dict[str, Any]) -> dict[str, Any]:
    """A job's JSON with ISO times, its URL and its run time."""
    out = {k: iso(v) if k in _TIME_KEYS else v for k, v in row.items()}
    started, finished = row.get("started_at"), row.get("finished_at")
    out["run_seconds"] = (
        round(finished - started, 3) if started is not None and finished is not None else None
    )
    out["url"] = f"/api/jobs/{row['job_id']}"
    # an unreadable input is the sender's problem, not the model's (issue 24)
    reason = str(row.get("reason") or "")
    out["problem"] = (
        "source" if reason.startswith("input:") else "model" if row.get("state") == "dead" else None
    )
    return out


@router.get("/api/jobs")
def list_jobs(
    request: Request,
    node: Annotated[NodeView, Depends(get_node)],
    state: Annotated[list[JobState] | None, Query(description="keep these states")] = None,
    study_uid: Annotated[str | None, Query()] = None,
    model: Annotated[str | None, Query()] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    offset: Annotated[int, Query(ge=0)] = 0,
) -> dict[str, Any]:
    """Jobs, newest first, filtered by state(s), study and model, one page at a time.

    Returns ``{"jobs": [...], "limit", "offset", "next"}`` (``next``: the following page's URL).
    """
    fetch = 1_000_000 if model else offset + limit + 1  # the store filters no model
    records = node.jobs.list_jobs(study_uid=study_uid, states=tuple(state or ()), limit=fetch)
    rows = [r.to_json() for r in records if model is None or r.job.model == model]
    page = rows[offset : offset + limit]
    has_more = len(rows) > offset + limit
    next_url = (
        str(request.url.include_query_params(limit=limit, offset=offset + limit))
        if has_more
        else None
    )
    return {
        "jobs": [present_job(r) for r in page],
        "limit": limit,
        "offset": offset,
        "next": next_url,
    }


@router.get("/api/jobs/{job_id}")
def show_job(job_id: str, node: Annotated[NodeView, Depends(get_node)]) -> dict[str, Any]:
    """One job with every state transition (``events``, oldest first).

    Raises
    ------
    NotFoundError
        No such job (404 problem).
    """
    out = present_job(node.jobs.get(job_id).to_json())
    out["events"] = [{**e, "ts": iso(e["ts"])} for e in node.jobs.events(job_id)]
    return out


@router.post("/api/jobs/{job_id}/retry")
def retry_job(
    job_id: str, request: Request, node: Annotated[NodeView, Depends(get_node)]
) -> dict[str, Any]:
    """Queue a failed, dead or cancelled job again with fresh attempts (active jobs: no change).

    Raises
    ------
    NotFoundError
        No such job (404 problem).
    """
    node.jobs.retry(job_id)
    audit(request, "job.retry", job_id=job_id)
    return show_job(job_id, node)


@router.post("/api/jobs/{job_id}/cancel")
def cancel_job(
    job_id: str, request: Request, node: Annotated[NodeView, Depends(get_node)]
) -> dict[str, Any]:
    """Cancel a queued or running job (finished jobs: no change).

    Raises
    ------
    NotFoundError
        No such job (404 problem).
    """
    node.jobs.cancel(job_id)
    audit(request, "job.cancel", job_id=job_id)
    return show_job(job_id, node)
