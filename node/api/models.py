"""``GET /api/models``: the model inventory of this node (node/models/inventory.py).

Each model with its identity (version, format, file hashes, Device UID, device), what was
checked, the rules that route to it, its runs, failures and latency over 24 h and 30 days, and
its model card.  The registry imports torch, which is slow to import; it is discovered on the
first request and cached on the app; usage and routes are read on every request.
"""

from __future__ import annotations

import threading
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request

from node.api.deps import NodeView, get_node

__all__ = ["model_rows", "router"]

router = APIRouter(tags=["models"])
_lock = threading.Lock()


def _registry(request: Request, node: NodeView) -> Any:
    with _lock:
        registry = getattr(request.app.state, "model_registry", None)
        if registry is None:
            from node.models.admission import model_paths
            from node.models.registry import discover  # heavy: torch

            config = node.config
            registry = discover(
                model_paths(config.models, config.node.data_dir), device=config.inference.device
            )
            request.app.state.model_registry = registry
        return registry


def model_rows(request: Request, node: NodeView) -> list[dict[str, Any]]:
    """The inventory row of every discovered model (broken ones with their ``error``)."""
    from node.models.inventory import inventory_rows, routes_by_model, usage_by_model

    registry = _registry(request, node)
    routes = routes_by_model(node.rules.rules)
    usage = usage_by_model(lambda since: node.jobs.model_runs(since=since))
    store = getattr(request.app.state, "feedback", None)
    return inventory_rows(
        registry.entries(),
        device=str(registry.device),
        routes=routes,
        usage=usage,
        preference=node.config.inference.device,
        feedback=store.counts() if store is not None else None,
    )


@router.get("/api/models")
def list_models(request: Request, node: Annotated[NodeView, Depends(get_node)]) -> dict[str, Any]:
    """The model inventory: identity, checks, routing rules, usage and card of every model."""
    return {"models": model_rows(request, node)}
