"""``GET /api/health``: is the node up, can it read its index, how much disk is left."""

from __future__ import annotations

import logging
import shutil
from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException

from node import __version__
from node.api.deps import NodeView, get_node

__all__ = ["router"]

log = logging.getLogger(__name__)
router = APIRouter(tags=["health"])


@router.get("/api/health")
def health(node: Annotated[NodeView, Depends(get_node)]) -> dict[str, Any]:
    """Report liveness, version, listening ports and free disk under ``data_dir``.

    Raises
    ------
    HTTPException
        503 when the index cannot be read.
    """
    try:
        node.index.list_studies(limit=1)
    except Exception as exc:  # noqa: BLE001 - whatever stops the index from answering is a 503
        log.error("health.index_unreadable", extra={"error_type": type(exc).__name__})
        raise HTTPException(503, f"the index cannot be read: {exc}") from exc
    cfg = node.config.node
    try:
        free: int | None = shutil.disk_usage(cfg.data_dir).free
    except OSError:
        free = None
    return {
        "status": "ok",
        "version": __version__,
        "ae_title": cfg.ae_title,
        "dicom_port": node.dicom_port if node.dicom_port is not None else cfg.dicom_port,
        "http_port": node.http_port if node.http_port is not None else cfg.http_port,
        "data_dir": str(cfg.data_dir),
        "disk_free_bytes": free,
    }
