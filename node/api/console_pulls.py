"""Console page of pulls: start one from a configured source and follow its progress.

- ``/console/pulls``: the configured sources, a form to pull a study (Study Instance UID) or a
  query (patient ID, study dates, modality), and every pull this node ran since it started with
  its state and progress (studies completed of those found, instances received of those
  expected).
  While a pull is queued or running the page refreshes itself every two seconds.
- ``POST /console/pulls`` (operator, CSRF): starts a pull as ``POST /api/pull`` does, audited as
  ``pull.requested``, then shows the list again.
"""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from pydantic import ValidationError

from node.api.auditing import audit
from node.api.auth import Role
from node.api.console import Session, check_csrf, need, page
from node.api.deps import NodeView, get_node
from node.api.pulls import PullRequest
from node.config import WORKLIST_SOURCE_TYPES
from node.errors import NotFoundError

__all__ = ["router"]

router = APIRouter(prefix="/console", include_in_schema=False)

Node = Annotated[NodeView, Depends(get_node)]


def _rows(node: NodeView) -> list[dict[str, Any]]:
    pulls = getattr(node, "pulls", None)
    if pulls is None:
        return []
    rows = []
    for record in pulls.records():
        row = record.to_json()
        row["finished"] = record.is_finished
        rows.append(row)
    return rows


def _show(
    request: Request, node: NodeView, *, error: str | None = None, status_code: int = 200
) -> HTMLResponse:
    rows = _rows(node)
    response = page(
        request,
        "pulls.html",
        sources=sorted(
            n for n, s in node.config.sources.items() if s.type not in WORKLIST_SOURCE_TYPES
        ),
        pulls=rows,
        running=any(not r["finished"] for r in rows),
        error=error,
    )
    response.status_code = status_code
    return response


@router.get("/pulls", dependencies=[Session])
def pulls_page(request: Request, node: Node) -> HTMLResponse:
    """The sources, the pull form and every pull with its progress."""
    return _show(request, node)


def _date(text: str) -> dt.date | None:
    return dt.date.fromisoformat(text) if text else None


@router.post("/pulls", dependencies=[Session])
def start_pull(
    request: Request,
    node: Node,
    csrf: Annotated[str, Form()],
    source: Annotated[str, Form()] = "",
    study_uid: Annotated[str, Form()] = "",
    patient_id: Annotated[str, Form()] = "",
    date_from: Annotated[str, Form()] = "",
    date_to: Annotated[str, Form()] = "",
    modality: Annotated[str, Form()] = "",
) -> Response:
    """Start a pull (operator); a bad form shows the list again with the reason (422)."""
    need(request, Role.OPERATOR)
    check_csrf(request, csrf)
    try:
        body = PullRequest(
            source=source,
            study_uid=study_uid.strip() or None,
            patient_id=patient_id.strip() or None,
            date_from=_date(date_from),
            date_to=_date(date_to),
            modality=modality.strip() or None,
        )
    except (ValidationError, ValueError) as exc:
        errors = exc.errors() if isinstance(exc, ValidationError) else [{"msg": str(exc)}]
        reason = "; ".join(str(e.get("msg", "")).removeprefix("Value error, ") for e in errors)
        return _show(request, node, error=f"not started: {reason}", status_code=422)
    pulls = getattr(node, "pulls", None)
    if pulls is None:
        return _show(request, node, error="this node runs no pulls", status_code=404)
    try:
        record = pulls.submit(body.source, body.query())
    except NotFoundError as exc:
        return _show(request, node, error=f"not started: {exc}", status_code=404)
    audit(request, "pull.requested", study_uid=body.study_uid, pull_id=record.id, source=source)
    return RedirectResponse("/console/pulls", status_code=303)
