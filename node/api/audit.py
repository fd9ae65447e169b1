"""``GET /api/audit``: the newest audit records (filters: study, event)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, Request

from node.api.jobs import iso
from node.audit import AuditLog

__all__ = ["router"]

router = APIRouter(tags=["audit"])


@router.get("/api/audit")
def list_audit(
    request: Request,
    study_uid: Annotated[str | None, Query()] = None,
    event: Annotated[str | None, Query()] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 200,
) -> dict[str, Any]:
    """Audit records, newest first (identifiers only, no patient data)."""
    log: AuditLog = request.app.state.audit
    records = log.list(study_uid=study_uid, event=event, limit=limit)
    return {"records": [{**r.to_json(), "ts": iso(r.ts)} for r in records]}
