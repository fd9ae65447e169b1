"""``GET /api/models``: the models this node can run, with their cards and held-out metrics.

The registry imports torch, which is slow to import; it is imported on the first request and
the discovered registry is cached on the app.
"""

from __future__ import annotations

import threading
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request

from node.api.deps import NodeView, get_node

__all__ = ["model_rows", "router"]

router = APIRouter(tags=["models"])
_lock = threading.Lock()


def model_rows(request: Request, node: NodeView) -> list[dict[str, Any]]:
    """Every discovered model as JSON (discovered once per app, then cached)."""
    with _lock:
        cached: list[dict[str, Any]] | None = getattr(request.app.state, "models", None)
        if cached is not None:
            return cached
        from node.models.registry import discover  # heavy: torch

        registry = discover(node.config.models, device=node.config.inference.device)
        device = str(registry.device)
        rows = [entry.as_json(device) for entry in registry.entries()]
        request.app.state.models = rows
        return rows


@router.get("/api/models")
def list_models(request: Request, node: Annotated[NodeView, Depends(get_node)]) -> dict[str, Any]:
    """Every discovered model (broken ones with their ``error``), with its card (Markdown)."""
    return {"models": model_rows(request, node)}
