"""Audit hooks of the HTTP API: write actions and node events go to the node's ``AuditLog``."""

from __future__ import annotations

from typing import Any

from fastapi import Request

from node.api.auth import Principal
from node.audit import AuditLog

__all__ = ["actor_of", "audit"]


def actor_of(request: Request) -> str:
    """Who made ``request``: ``user:NAME``, ``token:NAME`` or ``anonymous`` (open node); the
    client address is recorded separately."""
    principal: Principal | None = getattr(request.state, "principal", None)
    return principal.actor if principal is not None else "anonymous"


def audit(
    request: Request,
    event: str,
    *,
    study_uid: str | None = None,
    outcome: str = "success",
    actor: str | None = None,
    **detail: Any,
) -> None:
    """Record an API action in the app's audit log (no-op when the app has none)."""
    log: AuditLog | None = getattr(request.app.state, "audit", None)
    if log is None:
        return
    client = request.client.host if request.client else None
    log.record(
        event,
        actor=actor or actor_of(request),
        outcome=outcome,
        study_uid=study_uid,
        client=client,
        **detail,
    )
