"""What an ``ainode worker`` does with one Celery job message.

The worker's main process (Celery, ``solo`` pool: one job at a time per device) talks to the
node over HTTP; the model runs in one long-lived *spawned* child process (never forked after
torch/CUDA started), which the worker kills and replaces when it crashes or overruns the job
time limit.  For each message:

1. ``POST /api/jobs/{id}/begin`` — the node marks the job running on this worker (409: the job
   is finished, cancelled or dead; the message is acknowledged and dropped);
2. the child fetches the input series over WADO-RS from the node (or reads the node's
   ``data_dir`` when it is mounted here, ``celery.shared_data_dir``), runs the model with the
   embedded engine's pipeline (``node.jobs.pipeline.run_series``) into a scratch folder;
3. ``POST /api/jobs/{id}/results`` — the result objects go to the node, which gates, stores and
   delivers them (once), or ``POST /api/jobs/{id}/fail`` with the reason;
4. the message is acknowledged.  When the node cannot be reached for
   ``celery.callback_timeout_seconds`` the message is rejected with requeue, so another attempt
   happens later; the worker itself keeps nothing.
"""

from __future__ import annotations

import json
import logging
import multiprocessing as mp
import shutil
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from node.errors import AinodeError, NotFoundError
from node.jobs.celery_app import job_from_message
from node.web.multipart import PartCollector, boundary_of, encode_related

__all__ = ["ModelProcess", "WorkerSettings", "fetch_series", "handle_job", "run_in_child"]

log = logging.getLogger(__name__)


class NodeUnreachable(AinodeError):
    """The node did not answer the worker's callbacks in time."""

    http_status = 503
    type = "node-unreachable"


@dataclass(frozen=True, slots=True)
class WorkerSettings:
    """What a worker needs to run jobs of a node."""

    name: str
    device: str
    node_url: str
    token: str | None
    scratch: Path
    model_paths: tuple[str, ...]
    torch_threads: int
    job_timeout_seconds: float
    callback_timeout_seconds: float
    shared_data_dir: Path | None = None

    def context(self) -> dict[str, Any]:
        """The picklable context handed to the child process."""
        return {
            "node_url": self.node_url,
            "token": self.token,
            "scratch": str(self.scratch),
            "model_paths": list(self.model_paths),
            "device": self.device,
            "torch_threads": self.torch_threads,
            "shared_data_dir": str(self.shared_data_dir) if self.shared_data_dir else None,
        }


def _headers(token: str | None) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"} if token else {}


# ------------------------------------------------------------------------ in the child process
def fetch_series(
    *, node_url: str, token: str | None, study_uid: str, series_uid: str, out_dir: Path
) -> list[Path]:
    """WADO-RS Retrieve Series (PS3.18 10.4) from the node into ``out_dir``, one file per part.

    Raises
    ------
    NotFoundError
        The node has no such series.
    httpx.HTTPError
        The node could not be reached or answered an error.
    """
    url = f"{node_url.rstrip('/')}/dicom-web/studies/{study_uid}/series/{series_uid}"
    out_dir.mkdir(parents=True, exist_ok=True)
    paths: list[Path] = []
    headers = {**_headers(token), "Accept": 'multipart/related; type="application/dicom"'}
    with httpx.stream("GET", url, headers=headers, timeout=60.0) as resp:
        if resp.status_code == 404:
            raise NotFoundError(f"the node has no series {series_uid}")
        resp.raise_for_status()
        media, boundary = boundary_of(resp.headers.get("content-type"))
        if media != "multipart/related" or boundary is None:
            raise AinodeError(
                f"the node answered WADO-RS for series {series_uid} with {media or 'no'} "
                "content instead of multipart/related; is node_url the node's HTTP address?"
            )
        collector = PartCollector(boundary)
        for chunk in resp.iter_bytes(1 << 20):
            collector.write(chunk)
            for part in collector.take():
                path = out_dir / f"{len(paths):05d}.dcm"
                path.write_bytes(bytes(part.data))
                paths.append(path)
    return paths


def run_in_child(task: Mapping[str, Any], context: Mapping[str, Any]) -> dict[str, Any]:
    """Runner of the model process: warm up, or fetch a series and run a job on it."""
    from node.jobs.pipeline import _registry, run_series

    if task.get("warmup"):
        # import what a job needs now, so the job time limit does not pay for it
        import node.imaging
        import node.models.summary
        import node.results  # noqa: F401

        names = list(_registry(context).names())
        return {"models": names}
    job = job_from_message(task["job"])
    scratch = Path(context["scratch"]) / job.job_id
    shutil.rmtree(scratch, ignore_errors=True)
    t = time.perf_counter()
    shared = context.get("shared_data_dir")
    if shared:
        paths = [Path(shared) / i["path"] for i in task["instances"]]
    else:
        paths = fetch_series(
            node_url=context["node_url"],
            token=context.get("token"),
            study_uid=job.study_uid,
            series_uid=job.series_uids[0],
            out_dir=scratch / "input",
        )
    fetched = time.perf_counter() - t
    outputs = run_series(
        job,
        paths,
        context=context,
        out_dir=scratch / "results",
        relative_to=scratch,
        timings={"fetch": fetched},
    )
    outputs["instances"] = len(paths)
    return outputs


# ------------------------------------------------------------------------ in the worker process
class ModelProcess:
    """The worker's spawned child running models (replaced when it dies or overruns)."""

    def __init__(self, context: Mapping[str, Any]) -> None:
        self._context = dict(context)
        self._mp = mp.get_context("spawn")
        self._proc: Any = None
        self._conn: Any = None

    def _spawn(self) -> None:
        from node.jobs.engine import _child_main

        parent, child = self._mp.Pipe(duplex=True)
        self._proc = self._mp.Process(
            target=_child_main,
            args=(child, "node.jobs.remote:run_in_child", self._context),
            name="ainode-model",
            daemon=True,
        )
        self._proc.start()
        child.close()
        self._conn = parent

    def _await_ready(self, deadline: float) -> str | None:
        """Wait for the new child's ``("ready", pid)`` (``_child_main``); the failure, or None."""
        while time.monotonic() < deadline:
            try:
                if self._conn.poll(0.2):
                    kind, payload = self._conn.recv()
                    if kind == "ready":
                        return None
                    self.kill()
                    return f"the model process did not start: {payload}"
            except (EOFError, OSError):
                return self._death()
            if not self._proc.is_alive():
                return self._death()
        self.kill()
        return "the model process did not start in time (killed)"

    def kill(self) -> None:
        """Kill the child (a new one is spawned for the next job)."""
        if self._conn is not None:
            self._conn.close()
        if self._proc is not None and self._proc.is_alive():
            self._proc.kill()
            self._proc.join(5)
        self._proc = self._conn = None

    def call(self, task: Mapping[str, Any], *, timeout: float) -> tuple[bool, Any]:
        """Run ``task`` in the child: (True, outputs) or (False, reason)."""
        deadline = time.monotonic() + timeout
        if self._proc is None or not self._proc.is_alive():
            self._spawn()
            failure = self._await_ready(deadline)
            if failure is not None:
                return False, failure
        try:
            self._conn.send(dict(task))
        except OSError:
            self.kill()
            return False, "the model process was not reachable"
        while True:
            try:
                ready = self._conn.poll(0.2)
            except (OSError, EOFError):
                ready = False
            if ready:
                try:
                    kind, payload = self._conn.recv()
                except (EOFError, OSError):
                    return False, self._death()
                return (True, payload) if kind == "ok" else (False, str(payload))
            if not self._proc.is_alive():
                return False, self._death()
            if time.monotonic() > deadline:
                self.kill()
                return False, f"timed out after {timeout:g} s (model process killed)"

    def _death(self) -> str:
        self._proc.join(5)
        code = self._proc.exitcode
        self.kill()
        return f"the model process exited with status {code} while running the model"


class _Node:
    """HTTP callbacks to the node, retried until ``deadline_seconds`` pass."""

    def __init__(self, settings: WorkerSettings) -> None:
        self._s = settings
        self._client = httpx.Client(
            base_url=settings.node_url, headers=_headers(settings.token), timeout=60.0
        )

    def close(self) -> None:
        self._client.close()

    def post(self, path: str, **kwargs: Any) -> httpx.Response:
        deadline = time.monotonic() + self._s.callback_timeout_seconds
        delay = 0.2
        while True:
            try:
                resp = self._client.post(path, **kwargs)
                if resp.status_code < 500:
                    return resp
                problem = f"HTTP {resp.status_code}"
            except httpx.TransportError as exc:
                problem = type(exc).__name__
            if time.monotonic() + delay > deadline:
                raise NodeUnreachable(f"the node did not answer {path}: {problem}")
            log.info("worker.node_retry", extra={"path": path, "problem": problem})
            time.sleep(delay)
            delay = min(delay * 2, 5.0)


def _results_body(scratch: Path, outputs: Mapping[str, Any], worker: str) -> tuple[bytes, str]:
    meta = {
        "worker": worker,
        "outputs": {k: v for k, v in outputs.items() if k not in ("objects",)},
    }
    parts = [("application/json", json.dumps(meta).encode("utf-8"))]
    for obj in outputs.get("objects", []):
        parts.append(("application/dicom", (scratch / obj.path).read_bytes()))
    return encode_related(parts)


def handle_job(body: Mapping[str, Any], *, settings: WorkerSettings, model: ModelProcess) -> str:
    """Run one job message end to end; return what happened (``skipped``, ``succeeded``...).

    Raises
    ------
    NodeUnreachable
        The node did not answer in ``callback_timeout_seconds``: the caller requeues the message.
    """
    job = job_from_message(body)
    node = _Node(settings)
    worker = f"{settings.name}/{settings.device}"
    try:
        resp = node.post(f"/api/jobs/{job.job_id}/begin", json={"worker": worker})
        if resp.status_code in (404, 409):
            log.info("worker.job_skipped", extra={"job_id": job.job_id, "status": resp.status_code})
            return "skipped"
        resp.raise_for_status()
        begun = resp.json()
        t = time.perf_counter()
        ok, payload = model.call(
            {"job": begun["job"], "instances": begun["instances"]},
            timeout=settings.job_timeout_seconds,
        )
        scratch = settings.scratch / job.job_id
        try:
            if not ok:
                log.info("worker.job_failed", extra={"job_id": job.job_id})
                node.post(
                    f"/api/jobs/{job.job_id}/fail", json={"worker": worker, "reason": str(payload)}
                ).raise_for_status()
                return "failed"
            outputs = dict(payload)
            timings = dict(outputs.get("timings_seconds") or {})
            timings["worker_total"] = time.perf_counter() - t
            outputs["timings_seconds"] = timings
            outputs["device"] = settings.device
            data, media = _results_body(scratch, outputs, worker)
            t = time.perf_counter()
            resp = node.post(
                f"/api/jobs/{job.job_id}/results", content=data, headers={"Content-Type": media}
            )
            resp.raise_for_status()
            state = str(resp.json().get("state"))
            log.info(
                "worker.job_done",
                extra={
                    "job_id": job.job_id,
                    "state": state,
                    "upload_seconds": round(time.perf_counter() - t, 3),
                },
            )
            return state
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
    finally:
        node.close()
