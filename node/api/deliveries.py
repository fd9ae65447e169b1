"""``/api/deliveries``: the outbox rows (filters, paging) and retrying one."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request

from node.api.auditing import audit
from node.api.deps import NodeView, get_node
from node.api.jobs import iso
from node.types import DeliveryState

__all__ = ["present_delivery", "router"]

router = APIRouter(tags=["deliveries"])

_TIME_KEYS = ("next_attempt_at", "created_at", "delivered_at")


def present_delivery(row: dict[str, Any]) -> dict[str, Any]:
    """A delivery row with ISO times (``job_id`` ``-`` = a forwarded original)."""
    return {k: iso(v) if k in _TIME_KEYS else v for k, v in row.items()}


@router.get("/api/deliveries")
def list_deliveries(
    request: Request,
    node: Annotated[NodeView, Depends(get_node)],
    state: Annotated[DeliveryState | None, Query()] = None,
    destination: Annotated[str | None, Query()] = None,
    study_uid: Annotated[str | None, Query()] = None,
    job_id: Annotated[str | None, Query()] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    offset: Annotated[int, Query(ge=0)] = 0,
) -> dict[str, Any]:
    """Outbox rows, newest first, one page at a time (``next``: the following page's URL)."""
    rows = node.outbox.list(
        state=state,
        destination=destination,
        study_uid=study_uid,
        job_id=job_id,
        limit=offset + limit + 1,
    )
    page = rows[offset : offset + limit]
    next_url = (
        str(request.url.include_query_params(limit=limit, offset=offset + limit))
        if len(rows) > offset + limit
        else None
    )
    return {
        "deliveries": [present_delivery(r.to_json()) for r in page],
        "limit": limit,
        "offset": offset,
        "next": next_url,
    }


@router.post("/api/deliveries/{delivery_id}/retry")
def retry_delivery(
    delivery_id: int, request: Request, node: Annotated[NodeView, Depends(get_node)]
) -> dict[str, Any]:
    """Send a row again now (dead rows once the destination is fixed).

    Raises
    ------
    NotFoundError
        No such row (404 problem).
    """
    row = node.outbox.retry(delivery_id)
    audit(
        request,
        "delivery.retry",
        study_uid=row.study_uid,
        delivery_id=delivery_id,
        destination=row.destination,
        sop_uid=row.sop_uid,
    )
    return present_delivery(row.to_json())
