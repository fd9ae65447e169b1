"""A real ``python -m node serve`` subprocess on free loopback ports, for tests.

``start_node(workdir, **overrides)`` writes a config (JSON is YAML) with free DICOM and HTTP
ports and ``data_dir`` under ``workdir``, starts the node, polls until both ports answer, and
stops it (SIGTERM, then SIGKILL) at exit, printing the node's log when the block failed.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.peers.process import sigkill, terminate
from tests.util import free_port, wait_until

ROOT = Path(__file__).resolve().parents[2]

__all__ = ["NodeProcess", "start_node", "write_config"]


def write_config(workdir: Path, *, node: dict[str, Any] | None = None, **top: Any) -> Path:
    """Write ``workdir/ainode.yaml`` with free ports; ``node`` keys override node.* keys."""
    workdir.mkdir(parents=True, exist_ok=True)
    node_cfg: dict[str, Any] = {
        "dicom_port": free_port(),
        "http_port": free_port(),
        "data_dir": str(workdir / "data"),
        "min_free_bytes": 0,
        "shutdown_grace_seconds": 5,  # tests stop nodes with SIGTERM; keep teardown short
    }
    node_cfg.update(node or {})
    cfg: dict[str, Any] = {"node": node_cfg, "study": {"stable_seconds": 30}}
    cfg.update(top)
    path = workdir / "ainode.yaml"
    path.write_text(json.dumps(cfg, indent=2))
    return path


@dataclass
class NodeProcess:
    """A running node: its config, ports, data directory and process."""

    config_path: Path
    dicom_port: int
    http_port: int
    data_dir: Path
    log: Path
    proc: subprocess.Popen[bytes] | None = field(default=None, repr=False)
    tls_port: int | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    def start(self, timeout: float = 60.0) -> None:
        """Start (or restart) the node and wait until its DICOM and HTTP ports answer.

        A restart reuses the node's ports.  On a shared machine another process may have taken
        one of them since the node stopped; the node then refuses to start ("Address already in
        use") and is started once more on fresh free ports (``dicom_port``/``http_port`` follow).
        """
        try:
            self._start(timeout)
        except RuntimeError as exc:
            if "Address already in use" not in str(exc) or self.tls_port is not None:
                raise
            cfg = json.loads(self.config_path.read_text())
            cfg["node"]["dicom_port"] = self.dicom_port = free_port()
            cfg["node"]["http_port"] = self.http_port = free_port()
            self.config_path.write_text(json.dumps(cfg, indent=2))
            self._start(timeout)

    def _start(self, timeout: float) -> None:
        env = dict(os.environ, PYTHONPATH=str(ROOT), TCP_NODELAY="1")
        offset = self.log.stat().st_size if self.log.exists() else 0
        with self.log.open("ab") as fh:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "node", "serve", "--config", str(self.config_path)],
                stdout=fh,
                stderr=subprocess.STDOUT,
                env=env,
                cwd=self.config_path.parent,
            )
        proc = self.proc

        def up() -> bool:
            # wait for the node's own "started" record: polling the DICOM port would open
            # connections that each hold an association slot until the ACSE timeout
            if proc.poll() is not None:
                log = self.log_text()
                raise RuntimeError(f"node exited with {proc.returncode}:\n{log}")
            with self.log.open("rb") as fh:
                fh.seek(offset)
                return b'"event": "node.started"' in fh.read()

        wait_until(up, timeout=timeout, what="node listening")

    def kill(self) -> None:
        """SIGKILL the node (no clean-up at all) and reap it."""
        sigkill(self.proc)

    def stop(self) -> int | None:
        """SIGTERM, then SIGKILL after 10 s; return the exit code."""
        return terminate(self.proc)

    def log_text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""


@contextlib.contextmanager
def start_node(
    workdir: Path, *, node: dict[str, Any] | None = None, **top: Any
) -> Iterator[NodeProcess]:
    """Start a node configured by ``node``/``top`` overrides (see ``write_config``)."""
    cfg_path = write_config(workdir, node=node, **top)
    cfg = json.loads(cfg_path.read_text())
    n = cfg["node"]
    peer = NodeProcess(
        config_path=cfg_path,
        dicom_port=int(n["dicom_port"]),
        http_port=int(n["http_port"]),
        data_dir=Path(n["data_dir"]),
        log=workdir / "node.log",
        tls_port=int(n.get("tls", {}).get("port", 0)) or None,
    )
    peer.start()
    try:
        yield peer
    except BaseException:
        print(f"--- node log ({peer.log}) ---\n{peer.log_text()[-6000:]}")
        raise
    finally:
        peer.stop()
