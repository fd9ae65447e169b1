"""Callbacks of remote workers (``ainode worker``) while they run a job of this node.

* ``POST /api/jobs/{id}/begin`` ``{"worker": "..."}`` -> 200 ``{"job": ..., "instances": [...]}``
  (queued -> running; the instances' UIDs and paths relative to ``data_dir`` for workers that
  share the disk), or 409 when the job must not run (finished, cancelled, superseded, dead);
* ``POST /api/jobs/{id}/results``: ``multipart/related`` of ``application/dicom`` parts (the
  result objects, in order) and one ``application/json`` part (``worker``, ``outputs``).  The
  node runs the results gate, writes the objects durably, queues their deliveries and marks the
  job succeeded — once: a repeated call (redelivered job) changes nothing;
* ``POST /api/jobs/{id}/fail`` ``{"worker": "...", "reason": "..."}``.

Only the distributed engine (``queue: redis://...``) takes these; with the embedded engine
they answer 409.
"""

from __future__ import annotations

import json
from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Request
from pydantic import BaseModel, Field

from node.api.auditing import audit
from node.api.deps import NodeView, get_node
from node.jobs.celery_app import job_message
from node.jobs.distributed import CeleryEngine
from node.web.multipart import PartCollector, boundary_of

__all__ = ["router"]

router = APIRouter(tags=["workers"])


class Begin(BaseModel):
    """A worker starts a job."""

    worker: str = Field(min_length=1, max_length=200)


class Fail(BaseModel):
    """A worker could not run a job."""

    worker: str = Field(min_length=1, max_length=200)
    reason: str = Field(max_length=4000)


def _engine(node: NodeView) -> CeleryEngine:
    engine = getattr(node, "engine", None)
    if not isinstance(engine, CeleryEngine):
        raise HTTPException(409, "this node runs the embedded engine (config queue: embedded)")
    return engine


@router.post("/api/jobs/{job_id}/begin")
def begin_job(
    job_id: str, body: Begin, node: Annotated[NodeView, Depends(get_node)]
) -> dict[str, Any]:
    """Mark the job running on ``worker`` and say what to fetch (409: skip it)."""
    started = _engine(node).begin(job_id, worker=body.worker)
    if started is None:
        raise HTTPException(409, f"job {job_id} is not to be run (finished, cancelled or dead)")
    rec, stored = started
    data_dir = node.config.node.data_dir
    instances = []
    for inst in stored:
        path = inst.path
        rel = str(path.relative_to(data_dir)) if path.is_relative_to(data_dir) else str(path)
        instances.append({"sop_uid": inst.sop_uid, "series_uid": inst.series_uid, "path": rel})
    return {"job": job_message(rec.job), "attempts": rec.attempts, "instances": instances}


@router.post("/api/jobs/{job_id}/fail")
def fail_job(
    job_id: str, body: Fail, node: Annotated[NodeView, Depends(get_node)]
) -> dict[str, str]:
    """Record a failed run (the job is queued again while attempts remain)."""
    state = _engine(node).fail(job_id, worker=body.worker, reason=body.reason)
    return {"job_id": job_id, "state": state.value}


@router.post("/api/jobs/{job_id}/results")
async def job_results(
    job_id: str, request: Request, node: Annotated[NodeView, Depends(get_node)]
) -> dict[str, str]:
    """Take a job's result objects (idempotent): gate, store, queue deliveries, succeed."""
    engine = _engine(node)
    media, boundary = boundary_of(request.headers.get("content-type"))
    if media != "multipart/related" or boundary is None:
        raise HTTPException(415, "send multipart/related with a boundary")
    collector = PartCollector(boundary)
    async for chunk in request.stream():
        collector.write(chunk)
    if not collector.ended:
        raise HTTPException(400, "malformed multipart/related body: no closing boundary")
    dicom: list[bytes] = []
    meta: dict[str, Any] = {}
    for part in collector.take():
        kind = part.media_type or "application/dicom"
        if kind == "application/json":
            meta = json.loads(bytes(part.data))
        elif kind == "application/dicom":
            dicom.append(bytes(part.data))
        else:
            raise HTTPException(415, f"unexpected part type {kind!r}")
    worker = str(meta.get("worker") or "unknown worker")
    outputs = meta.get("outputs") or {}
    from starlette.concurrency import run_in_threadpool

    state = await run_in_threadpool(
        engine.accept_results, job_id, worker=worker, parts=dicom, outputs=outputs
    )
    audit(request, "job.results", job_id=job_id, worker=worker, objects=len(dicom))
    return {"job_id": job_id, "state": state.value}
