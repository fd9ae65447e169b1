"""A node on Celery + Redis and real ``python -m node worker`` processes, for the scale tests.

Each worker has its own data directory (no shared disk): it fetches input over WADO-RS and
returns results over HTTP.  The tiny TorchScript CT model of ``tests/models/builders.py``
keeps jobs short.
"""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from node.samples.writers import write_ct_series
from tests.models.builders import write_body_model
from tests.peers.node import ROOT
from tests.peers.process import sigkill, terminate
from tests.util import wait_until

MODEL = "tiny-body"
RULE = "ct-body"

__all__ = ["MODEL", "RULE", "WorkerProcess", "db_rows", "node_settings", "studies", "worker"]


def studies(root: Path, count: int, *, slices: int = 8, size: int = 48) -> list[list[Path]]:
    """``count`` small synthetic CT studies (one series each)."""
    rng = np.random.default_rng(11)
    out = []
    for n in range(count):
        hu = rng.integers(-1000, 400, size=(slices, size, size)).astype(np.float32)
        out.append(
            write_ct_series(
                hu, spacing=(2.5, 1.0, 1.0), out_dir=root / f"s{n}", accession_number=f"SC{n:03d}"
            )
        )
    return out


def node_settings(tmp: Path, broker: str, **extra: Any) -> dict[str, Any]:
    """Keyword overrides for ``start_node``: tiny model, one rule, folder destination."""
    models = tmp / "models"
    if not models.is_dir():
        write_body_model(models, name=MODEL, roi="[8, 48, 48]")
    rules = tmp / "rules.yaml"
    rules.write_text(
        "version: 1\nrules:\n"
        f"  - name: {RULE}\n    when: {{Modality: CT}}\n"
        f"    then: {{model: {MODEL}, deliver: [archive]}}\n"
    )
    (tmp / "archive").mkdir(exist_ok=True)
    settings: dict[str, Any] = {
        "study": {"stable_seconds": 1},
        "rules": str(rules),
        "queue": broker,
        "inference": {"job_timeout_seconds": 25},
        "celery": {"visibility_timeout_seconds": 30, "unacked_restore_interval_seconds": 1},
        "destinations": {"archive": {"type": "folder", "path": str(tmp / "archive")}},
        "delivery": {"backoff_base_seconds": 0.2, "backoff_max_seconds": 1.0},
        "auth": {"token": "s3cret"},
    }
    settings.update(extra)
    return settings


@dataclass
class WorkerProcess:
    """A real ``python -m node worker`` with its own config and data directory."""

    workdir: Path
    config_path: Path
    proc: subprocess.Popen[bytes] | None = field(default=None, repr=False)
    _offset: int = 0

    @property
    def log(self) -> Path:
        return self.workdir / "worker.log"

    @property
    def name(self) -> str:
        return self.workdir.name

    def start(self, timeout: float = 120.0) -> None:
        """Start the worker and wait until Celery consumes."""
        self.launch()
        self.wait_ready(timeout)

    def launch(self) -> None:
        """Start the process (``wait_ready`` waits for it)."""
        env = dict(os.environ, PYTHONPATH=str(ROOT))
        self._offset = self.log.stat().st_size if self.log.exists() else 0
        with self.log.open("ab") as fh:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "node", "worker", "--config", str(self.config_path)],
                stdout=fh,
                stderr=subprocess.STDOUT,
                env=env,
                cwd=self.workdir,
            )

    def wait_ready(self, timeout: float = 120.0) -> None:
        """Wait for Celery's "ready" line of the current run."""
        proc = self.proc
        assert proc is not None

        def ready() -> bool:
            if proc.poll() is not None:
                raise RuntimeError(f"worker exited with {proc.returncode}:\n{self.log_text()}")
            with self.log.open("rb") as fh:
                fh.seek(self._offset)
                return b" ready." in fh.read()

        wait_until(ready, timeout=timeout, what=f"worker {self.name} ready")

    def kill(self) -> None:
        """SIGKILL the worker's main process (its model child exits when the pipe closes)."""
        sigkill(self.proc)

    def stop(self) -> None:
        terminate(self.proc, grace=15)

    def log_text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""


def worker(
    workdir: Path, *, broker: str, node_url: str, models: Path, **celery: Any
) -> WorkerProcess:
    """Write a worker config (own data_dir, no shared disk) and return the (unstarted) worker."""
    workdir.mkdir(parents=True, exist_ok=True)
    cfg = {
        "node": {"data_dir": str(workdir / "data")},
        "queue": broker,
        "models": [str(models)],
        "inference": {"job_timeout_seconds": 25, "torch_threads": 1, "device": "cpu"},
        "celery": {
            "node_url": node_url,
            "worker_name": workdir.name,
            "visibility_timeout_seconds": 30,
            "unacked_restore_interval_seconds": 1,
            "callback_timeout_seconds": 120,
            **celery,
        },
        "auth": {"token": "s3cret"},
    }
    path = workdir / "ainode.yaml"
    path.write_text(json.dumps(cfg, indent=2))
    return WorkerProcess(workdir=workdir, config_path=path)


def db_rows(data_dir: Path, sql: str, args: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Rows of a query on the node's index (read while the node runs)."""
    try:
        conn = sqlite3.connect(data_dir / "index.sqlite", timeout=30)
        try:
            return list(conn.execute(sql, args).fetchall())
        finally:
            conn.close()
    except sqlite3.OperationalError:
        return []
