"""``/api/studies``: list received studies, show one with its series and events, force completion.

Study summaries carry UIDs, counts, sizes and times only (no patient data); the detail adds the
series (modality, body part, description, instance count), the newest routing (decisions and
the rules' explanation), the study's jobs, their result objects, its deliveries and the
study's event history.
"""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, HTTPException, Query, Request

from node.api.auditing import audit
from node.api.deliveries import present_delivery
from node.api.deps import NodeView, get_node
from node.api.jobs import present_job
from node.api.lifecycle import lifecycle, stuck_studies
from node.api.phi import (
    PHI_FIELDS,
    audit_phi_view,
    mask,
    phi_allowed,
    phi_filters,
    refuse_phi_search,
)
from node.errors import NotFoundError
from node.store.index import StudyQuery

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


StatusParam = Literal[
    "open", "complete", "none", "queued", "running", "failed", "succeeded", "cancelled"
]
SortParam = Literal[
    "received", "study_date", "patient_id", "patient_name", "accession", "study_uid"
]


def study_query(
    request: Request,
    patient_id: Annotated[str | None, Query(min_length=1, max_length=64)] = None,
    patient_name: Annotated[
        str | None, Query(min_length=1, max_length=64, description="substring, any case")
    ] = None,
    accession: Annotated[str | None, Query(min_length=1, max_length=64)] = None,
    description: Annotated[
        str | None, Query(min_length=1, max_length=64, description="substring, any case")
    ] = None,
    modality: Annotated[str | None, Query(min_length=1, max_length=16)] = None,
    date_from: Annotated[
        dt.date | None, Query(alias="from", description="Study Date on or after (YYYY-MM-DD)")
    ] = None,
    date_to: Annotated[
        dt.date | None, Query(alias="to", description="Study Date on or before (YYYY-MM-DD)")
    ] = None,
    status: Annotated[
        StatusParam | None, Query(description="study state or AI status (its jobs)")
    ] = None,
    sort: SortParam = "received",
    order: Literal["asc", "desc"] = "desc",
) -> StudyQuery:
    """The search of ``GET /api/studies`` (and the console's list) from the query string.

    Raises
    ------
    HTTPException
        403 when a role without PHI rights searches by a PHI field (``console.phi_roles``).
    """
    query = StudyQuery(
        patient_id=patient_id,
        patient_name=patient_name,
        accession=accession,
        description=description,
        modality=modality.upper() if modality else None,
        date_from=date_from,
        date_to=date_to,
        status=status,
        sort=sort,
        descending=order == "desc",
    )
    refuse_phi_search(request, phi_filters(query))
    if sort in PHI_FIELDS:
        refuse_phi_search(request, [f"sort={sort}"])
    return query


def present_studies(
    request: Request, rows: list[dict[str, Any]], *, purpose: str, query: StudyQuery
) -> tuple[list[dict[str, Any]], bool]:
    """Summaries of ``rows``, masked or shown (and audited) per the caller's role."""
    shown = phi_allowed(request)
    out = [_summary(r if shown else mask(r)) for r in rows]
    if shown:
        audit_phi_view(
            request, [r["study_uid"] for r in rows], purpose=purpose, filters=phi_filters(query)
        )
    return out, shown


@router.get("/api/studies")
def list_studies(
    request: Request,
    node: Annotated[NodeView, Depends(get_node)],
    query: Annotated[StudyQuery, Depends(study_query)],
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    offset: Annotated[int, Query(ge=0)] = 0,
) -> dict[str, Any]:
    """Studies matching the filters, sorted and paged in SQL (newest received first).

    Returns ``{"studies": [...], "limit", "offset", "next", "total", "phi"}``; ``next`` is the
    URL of the following page (same filters), or null on the last page; ``total`` counts every
    match; ``phi`` is ``shown`` or ``masked`` (``console.phi_roles``).  Dates are validated
    (422 problem JSON).
    """
    if query.date_from and query.date_to and query.date_from > query.date_to:
        raise HTTPException(422, "'from' is after 'to'")
    rows, total = node.index.search_studies(query, limit=limit, offset=offset)
    next_url = None
    if offset + limit < total:
        next_url = str(request.url.include_query_params(limit=limit, offset=offset + limit))
    studies, shown = present_studies(request, rows, purpose="GET /api/studies", query=query)
    return {
        "studies": studies,
        "limit": limit,
        "offset": offset,
        "next": next_url,
        "total": total,
        "phi": "shown" if shown else "masked",
    }


@router.get("/api/stuck-studies")
def list_stuck(
    node: Annotated[NodeView, Depends(get_node)],
    minutes: Annotated[
        float | None, Query(gt=0, description="threshold (default console.stuck_minutes)")
    ] = None,
) -> dict[str, Any]:
    """Studies in one state longer than the threshold, longest first (``stuck_studies``).

    Returns ``{"minutes", "studies": [{"study_uid", "state", "since", "detail", "url"}]}``;
    ``state`` is ``open``, ``not routed``, ``job queued``, ``job running`` or ``delivery
    pending``; ``detail``
    the model or destination.  No patient data.
    """
    threshold = minutes if minutes is not None else node.config.console.stuck_minutes
    rows = stuck_studies(node, threshold_seconds=threshold * 60)
    return {
        "minutes": threshold,
        "studies": [
            {**r, "since": _iso(r["since"]), "url": f"/api/studies/{r['study_uid']}"} for r in rows
        ],
    }


def _detail(node: NodeView, study_uid: str, *, events_limit: int = 200) -> dict[str, Any]:
    row = node.index.study_row(study_uid)
    study = node.index.get_study(study_uid)
    if row is None or study is None:
        raise NotFoundError(f"study {study_uid} is not known to this node")
    out = _summary(row)
    # retrieved as the prior of that study (a rule's priors, docs/followup.md): never routed
    out["prior_of"] = node.index.prior_of(study_uid)
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
    raw_deliveries = [d.to_json() for d in node.outbox.list(study_uid=study_uid, limit=1000)]
    job_json = [r.to_json() for r in node.jobs.list_jobs(study_uid=study_uid, limit=1000)]
    out["lifecycle"] = [
        {**step, "at": _iso(step["at"])} if step.get("at") is not None else step
        for step in lifecycle(row, routing, job_json, raw_deliveries)
    ]
    if routing is not None:
        routing = {**routing, "routed_at": _iso(routing["routed_at"])}
    out["routing"] = routing
    job_rows = job_json
    out["jobs"] = [present_job(j) for j in job_rows]
    out["results"] = [
        {"job_id": j["job_id"], "model": j["model"], **obj}
        for j in job_rows
        if j["state"] == "succeeded"
        for obj in j["outputs"].get("objects", [])
    ]
    out["deliveries"] = [present_delivery(d) for d in raw_deliveries]
    # superseded and retracted result sets (docs/results.md "Lifecycle")
    out["rejections"] = [r.to_json() for r in node.rejections.list(study_uid=study_uid)]
    events = node.index.events(study_uid)
    out["event_count"] = len(events)
    out["events"] = [_present(e) for e in events[-events_limit:]] if events_limit else []
    return out


@router.get("/api/studies/{study_uid}")
def show_study(
    request: Request,
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
    return _guarded(
        request, _detail(node, study_uid, events_limit=events), "GET /api/studies/{uid}"
    )


@router.post("/api/studies/{study_uid}/complete")
def complete_study(
    request: Request, study_uid: str, node: Annotated[NodeView, Depends(get_node)]
) -> dict[str, Any]:
    """Force completion of a study now, without waiting for the stable window.

    Completing an already complete study changes nothing (``"changed": false``).  The
    completion is durable when this answers; routing follows in the background (the study's
    ``lifecycle`` shows it once done).

    Raises
    ------
    NotFoundError
        The study is unknown (404 problem).
    """
    if node.index.study_row(study_uid) is None:
        raise NotFoundError(f"study {study_uid} is not known to this node")
    generation = node.tracker.complete(study_uid, background=True)
    out = _detail(node, study_uid)
    out["changed"] = generation is not None
    return _guarded(request, out, "POST /api/studies/{uid}/complete")


@router.post("/api/studies/{study_uid}/reroute")
def reroute_study(
    request: Request, study_uid: str, node: Annotated[NodeView, Depends(get_node)]
) -> dict[str, Any]:
    """Route a complete study again now, with the active rules and the models as they are.

    Jobs the routing asks for run (new ones, and finished ones whose model version, combined
    result set or rule parameters changed); the study's earlier results that it no longer
    produces are rejected (docs/results.md, "Lifecycle").  Answers ``study_uid``, ``jobs``,
    ``new_jobs`` and ``rejection`` (note id or null): identifiers only.

    Raises
    ------
    NotFoundError
        The study is unknown (404 problem).
    ConflictError
        The study is not complete yet (409 problem).
    """
    out = node.reroute(study_uid)
    audit(
        request,
        "study.rerouted",
        study_uid=study_uid,
        new_jobs=list(out["new_jobs"]),
        rejection=out["rejection"],
    )
    return out


def _guarded(request: Request, detail: dict[str, Any], purpose: str) -> dict[str, Any]:
    """``detail`` with its PHI masked, or shown and audited, per the caller's role."""
    if phi_allowed(request):
        audit_phi_view(request, [detail["study_uid"]], purpose=purpose)
        return {**detail, "phi": "shown"}
    return {**mask(detail), "phi": "masked"}
