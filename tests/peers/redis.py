"""A real Debian ``redis-server`` on a free loopback port, AOF persistence on, in a temp folder.

``start_redis(workdir)`` yields a ``RedisServer`` that can be ``kill()``-ed (SIGKILL: only what
the append-only file holds survives) and ``start()``-ed again on the same port and data.
"""

from __future__ import annotations

import contextlib
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.peers.process import sigkill, terminate
from tests.util import free_port, port_open, wait_until

__all__ = ["RedisServer", "start_redis"]


@dataclass
class RedisServer:
    """A redis-server process with its port and folder."""

    workdir: Path
    port: int
    proc: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        exe = shutil.which("redis-server")
        if exe is None:
            pytest.fail("redis-server is not installed (Debian package redis-server)")
        self.workdir.mkdir(parents=True, exist_ok=True)
        log = (self.workdir / "redis.log").open("ab")
        self.proc = subprocess.Popen(
            [
                exe,
                "--bind", "127.0.0.1",
                "--port", str(self.port),
                "--dir", str(self.workdir),
                "--appendonly", "yes",
                "--appendfsync", "always",
                "--save", "",
                "--protected-mode", "yes",
                "--daemonize", "no",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )  # fmt: skip
        log.close()
        proc = self.proc

        def up() -> bool:
            if proc.poll() is not None:
                raise RuntimeError(f"redis-server exited: {self.log_text()}")
            return port_open(self.port)

        wait_until(up, timeout=20, what="redis listening")

    def kill(self) -> None:
        """SIGKILL (no shutdown save: the AOF is all that remains)."""
        sigkill(self.proc)

    def stop(self) -> None:
        terminate(self.proc)

    def log_text(self) -> str:
        p = self.workdir / "redis.log"
        return p.read_text(errors="replace") if p.exists() else ""


@contextlib.contextmanager
def start_redis(workdir: Path) -> Iterator[RedisServer]:
    """Start redis-server (AOF, fsync always) on a free port; stop it at exit."""
    server = RedisServer(workdir=workdir, port=free_port())
    server.start()
    try:
        yield server
    finally:
        server.stop()
