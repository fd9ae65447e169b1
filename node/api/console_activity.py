"""Console pages about activity: the dashboard, the deliveries list and result previews.

- ``/console/dashboard``: studies and jobs per hour (last 24 h, SVG bars), queue depth,
  failures (dead jobs, dead deliveries per destination).
- ``/console/deliveries``: outbox rows filtered by state/destination with retry buttons
  (operator; the button posts to ``/console/deliveries/{id}/retry``).
- ``/console/jobs/{job_id}/objects/{n}/preview.png``: SEG overlay or heat-map SC preview.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, HTTPException, Query, Request
from fastapi.responses import HTMLResponse, Response

from node.api.console import Session, page
from node.api.dashboard import bar_chart_svg, read_activity
from node.api.deliveries import present_delivery
from node.api.deps import NodeView, get_node
from node.api.lifecycle import stuck_studies
from node.api.previews import PreviewError, render_preview
from node.errors import NotFoundError
from node.types import DeliveryState

__all__ = ["router"]

router = APIRouter(prefix="/console", include_in_schema=False)

Node = Annotated[NodeView, Depends(get_node)]

_CHARTS = (
    ("studies_received", "#3b6fd8"),
    ("studies_completed", "#2f9e6b"),
    ("jobs_succeeded", "#7a4dd8"),
    ("jobs_failed", "#c94040"),
    ("deliveries_delivered", "#d08a1c"),
)


@router.get("/dashboard", dependencies=[Session])
def dashboard_page(request: Request, node: Node) -> HTMLResponse:
    """Activity per hour over the last 24 hours, queue depth and failures."""
    activity = read_activity(node.config.node.data_dir / "index.sqlite", hours=24)
    charts = [
        {
            "name": name,
            "total": sum(activity.series[name]),
            "svg": bar_chart_svg(
                activity.series[name], activity.hours, title=activity.labels[name], colour=colour
            ),
        }
        for name, colour in _CHARTS
    ]
    return page(
        request,
        "dashboard.html",
        charts=charts,
        jobs=activity.jobs_by_state,
        deliveries=activity.deliveries_by_state,
        dead_by_destination=activity.dead_deliveries_by_destination,
        edge_warnings=list(getattr(node, "edge_warnings", [])),
        stuck=stuck_studies(node, threshold_seconds=node.config.console.stuck_minutes * 60),
        stuck_minutes=node.config.console.stuck_minutes,
    )


@router.get("/deliveries", dependencies=[Session])
def deliveries_page(
    request: Request,
    node: Node,
    state: Annotated[str, Query()] = "",
    destination: Annotated[str, Query()] = "",
) -> HTMLResponse:
    """Outbox rows, newest first (at most 200), with retry buttons."""
    try:
        chosen = DeliveryState(state) if state else None
    except ValueError as exc:
        raise HTTPException(422, f"unknown delivery state {state!r}") from exc
    rows = node.outbox.list(state=chosen, destination=destination or None, limit=200)
    return page(
        request,
        "deliveries.html",
        deliveries=[present_delivery(r.to_json()) for r in rows],
        state=state,
        destination=destination,
        states=[s.value for s in DeliveryState],
        destinations=sorted(node.config.destinations),
        counts=node.outbox.counts(),
    )


@router.get("/jobs/{job_id}/objects/{number}/preview.png", dependencies=[Session])
def result_preview(job_id: str, number: int, node: Node) -> Response:
    """A PNG preview of a job's result object ``number`` (SEG overlay or heat-map SC).

    Raises
    ------
    HTTPException
        404 for an unknown job or object, or an object without a preview (SR, derived).
    """
    try:
        record = node.jobs.get(job_id)
    except NotFoundError as exc:
        raise HTTPException(404, str(exc)) from exc
    objects = list(record.outputs.get("objects", []))
    if not 0 <= number < len(objects):
        raise HTTPException(404, f"job {job_id} has no result object {number}")
    data_dir = node.config.node.data_dir.resolve()
    path = (data_dir / str(objects[number]["path"])).resolve()
    if not path.is_relative_to(data_dir) or not path.is_file():
        raise HTTPException(404, f"result object {number} of job {job_id} is not stored")
    try:
        png = render_preview(path, node.index.series_instances)
    except (PreviewError, ValueError) as exc:  # ValueError: not DICOM, pixel data unreadable
        raise HTTPException(404, str(exc)) from exc
    return Response(png, media_type="image/png", headers={"Cache-Control": "private, max-age=300"})
