"""Result lifecycle: ``POST /api/results/retract``, ``GET /api/results/rejections`` and the
console's retract form (issue 18 §4, docs/results.md "Lifecycle").

A retraction names a result by its job id, or the SOP Instance UID or Series Instance UID of
any object the job delivered or queued; the job's whole result set is rejected with an IOCM
rejection note (``node.delivery.rejections``).  Retracting needs the ``operator`` role, checked
by the gate before the body is read; it is audited as ``results.retracted`` (identifiers and
the kind only: the reason is free text and stays out of the audit trail, like feedback
comments).
"""

from __future__ import annotations

import logging
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Form, HTTPException, Query, Request
from fastapi.responses import RedirectResponse, Response
from pydantic import BaseModel, ConfigDict, Field

from node.api.auditing import actor_of, audit
from node.api.auth import Role
from node.api.console import Session, check_csrf, need
from node.api.deps import NodeView, get_node
from node.delivery.rejections import REASON_MAX, Rejection

__all__ = ["RetractIn", "console_router", "router"]

log = logging.getLogger(__name__)

router = APIRouter(tags=["results"])
console_router = APIRouter(prefix="/console", include_in_schema=False)

Node = Annotated[NodeView, Depends(get_node)]


class RetractIn(BaseModel):
    """The body of ``POST /api/results/retract``."""

    model_config = ConfigDict(extra="forbid")

    uid: str = Field(
        min_length=1,
        max_length=128,
        description="a job id, or the SOP Instance UID or Series Instance UID of a result object",
    )
    reason: str = Field(min_length=1, max_length=REASON_MAX, description="why it is withdrawn")


def present_rejection(r: Rejection) -> dict[str, Any]:
    """A rejection as the API shows it."""
    return r.to_json()


def _retract(request: Request, node: NodeView, body: RetractIn) -> Rejection:
    try:
        done = node.rejections.retract(body.uid, reason=body.reason, actor=actor_of(request))
    except Exception:
        audit(request, "results.retracted", outcome="failure", target=body.uid)
        raise
    audit(
        request,
        "results.retracted",
        study_uid=done.study_uid,
        note_id=done.note_id,
        job_ids=list(done.job_ids),
        objects=len(done.rejected_sop_uids),
        destinations=list(done.destinations),
    )
    return done


@router.post("/api/results/retract", status_code=201)
def retract(request: Request, body: RetractIn, node: Node) -> dict[str, Any]:
    """Retract a result set: reject it with an IOCM note at every destination that received it
    (and delete it from Orthancs with ``delete_rejected``).

    ``404`` when nothing delivered or queued is named ``uid``; ``409`` when it was rejected
    already.  Answers the recorded rejection.
    """
    return present_rejection(_retract(request, node, body))


@router.get("/api/results/rejections")
def list_rejections(
    node: Node,
    study_uid: Annotated[str | None, Query()] = None,
    job_id: Annotated[str | None, Query()] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 200,
) -> dict[str, Any]:
    """Rejections (superseded and retracted result sets), newest first."""
    rows = node.rejections.list(study_uid=study_uid, job_id=job_id, limit=limit)
    return {"rejections": [present_rejection(r) for r in rows]}


@console_router.post("/studies/{study_uid}/retract", dependencies=[Session])
def console_retract(
    request: Request,
    study_uid: str,
    node: Node,
    csrf: Annotated[str, Form()],
    uid: Annotated[str, Form()],
    reason: Annotated[str, Form()] = "",
) -> Response:
    """The study page's retract form (operator): reject the result set, back to the page."""
    need(request, Role.OPERATOR)
    check_csrf(request, csrf)
    if not reason.strip() or len(reason) > REASON_MAX:
        raise HTTPException(422, f"not retracted: give a reason (1 to {REASON_MAX} characters)")
    if uid.strip() not in node.rejections.retractable(study_uid):
        raise HTTPException(404, f"study {study_uid} has no delivered or queued result {uid}")
    _retract(request, node, RetractIn(uid=uid.strip(), reason=reason.strip()))
    return RedirectResponse(f"/console/studies/{study_uid}#rejections", status_code=303)
