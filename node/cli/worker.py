"""``ainode worker --config FILE [--models A,B] [--device cpu|cuda:0]``: a remote inference worker.

Consumes the STAT lane and the queues of the models it serves from the Celery broker named by the
config's ``queue`` (``redis://HOST:PORT/DB``), one job at a time (``solo`` pool, prefetch 1),
and runs each job through ``node.jobs.remote`` against the node at ``celery.node_url``.
"""

from __future__ import annotations

import logging
import os
import shutil
import socket
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from node.cli import app
from node.errors import ConfigError, ModelError

if TYPE_CHECKING:  # imported when the command runs: the CLI's other commands stay light
    from node.config import Config
    from node.jobs.remote import ModelProcess, WorkerSettings

__all__ = ["worker"]

log = logging.getLogger(__name__)


@app.command()
def worker(
    config: Annotated[
        Path | None,
        typer.Option("--config", "-c", help="YAML config file (default ./ainode.yaml)"),
    ] = None,
    models: Annotated[
        str | None, typer.Option(help="comma-separated model names (default: every model found)")
    ] = None,
    device: Annotated[
        str | None, typer.Option(help="cpu, cuda:0, ... (default: inference.device)")
    ] = None,
    log_level: Annotated[str, typer.Option(help="DEBUG, INFO, WARNING or ERROR")] = "INFO",
) -> None:
    """Run jobs of a node on this machine: Celery consumer of the node's Redis broker."""
    from celery.exceptions import Reject

    from node.cli.serve import config_from
    from node.jobs.celery_app import STAT_QUEUE, TASK_NAME, make_celery, model_queue
    from node.jobs.remote import ModelProcess, NodeUnreachable, handle_job
    from node.log import configure

    cfg = config_from(config)
    if not cfg.queue.startswith(("redis://", "rediss://")):
        raise ConfigError([f"queue: a worker needs a redis:// broker URL, not {cfg.queue!r}"])
    configure(json_lines=True, level=log_level.upper())
    logging.getLogger("pydicom").setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", module=r"pydicom(\.|$)")
    c = cfg.celery
    dev = device or cfg.inference.device
    _check_device(dev)
    settings = _settings(cfg, dev)
    name, node_url = settings.name, settings.node_url
    # a previous run killed in a job may have left its input and results: the worker keeps nothing
    shutil.rmtree(settings.scratch, ignore_errors=True)
    model = ModelProcess(settings.context())
    wanted = _warm_up(model, models)
    visibility = c.visibility_timeout_seconds or cfg.inference.job_timeout_seconds + 60.0
    celery_app = make_celery(
        cfg.queue,
        visibility_timeout_seconds=visibility,
        unacked_restore_interval_seconds=c.unacked_restore_interval_seconds,
    )

    # celery ships no type hints
    @celery_app.task(  # type: ignore[untyped-decorator]
        name=TASK_NAME, bind=True, acks_late=True, reject_on_worker_lost=True
    )
    def run_job(self: object, body: dict[str, object]) -> str:
        try:
            return handle_job(body, settings=settings, model=model)
        except NodeUnreachable as exc:
            log.warning("worker.requeued", extra={"job_id": body.get("job_id"), "error": str(exc)})
            raise Reject(str(exc), requeue=True) from exc

    queues = [STAT_QUEUE, *(model_queue(m) for m in wanted)]
    log.info(
        "worker.started",
        extra={"worker": name, "device": dev, "models": wanted, "node_url": node_url},
    )
    w = celery_app.Worker(
        hostname=f"{name}@{socket.gethostname()}",
        queues=queues,
        pool="solo",
        concurrency=1,
        prefetch_multiplier=1,
        loglevel=log_level.upper(),
        without_gossip=True,
        without_mingle=True,
        optimization="fair",
    )
    try:
        w.start()
    finally:
        model.kill()
    raise typer.Exit(w.exitcode or 0)


def _check_device(dev: str) -> None:
    """Refuse an unusable device now, with the reason, not in the first job."""
    from node.models.devices import onnx_providers, parse_device
    from node.models.runtime import select_device

    try:
        select_device(dev)
        if parse_device(dev)[0] == "cuda":
            onnx_providers(dev)
    except ModelError as exc:
        raise ConfigError([f"--device: {exc}"]) from exc


def _settings(cfg: Config, dev: str) -> WorkerSettings:
    from node.api.auth import client_token
    from node.jobs.remote import WorkerSettings
    from node.models.admission import model_paths

    c = cfg.celery
    return WorkerSettings(
        name=c.worker_name or f"{socket.gethostname()}-{os.getpid()}",
        device=dev,
        node_url=c.node_url or f"http://{cfg.node.host}:{cfg.node.http_port}",
        token=client_token(cfg.auth),
        scratch=cfg.node.data_dir / "worker-scratch",
        model_paths=tuple(str(p) for p in model_paths(cfg.models, cfg.node.data_dir)),
        torch_threads=cfg.inference.torch_threads,
        job_timeout_seconds=cfg.inference.job_timeout_seconds,
        callback_timeout_seconds=c.callback_timeout_seconds,
        shared_data_dir=c.shared_data_dir,
    )


def _warm_up(model: ModelProcess, models: str | None) -> list[str]:
    """Load the models before taking jobs (the job time limit covers the job, not torch's
    import); the models this worker serves: those asked for, else every one found."""
    ok, found = model.call({"warmup": True}, timeout=600.0)
    if not ok:
        raise ConfigError([f"models: the worker cannot load its models: {found}"])
    available = list(found["models"])
    wanted = [m.strip() for m in models.split(",") if m.strip()] if models else available
    missing = sorted(set(wanted) - set(available))
    if missing:
        raise ConfigError(
            [f"--models: {', '.join(missing)} not found (available: {', '.join(available)})"]
        )
    return wanted
