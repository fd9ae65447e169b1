"""Stopping the subprocesses tests start (nodes, workers, redis-server): hard or gently."""

from __future__ import annotations

import signal
import subprocess

__all__ = ["sigkill", "terminate"]


def sigkill(proc: subprocess.Popen[bytes] | None) -> None:
    """SIGKILL ``proc`` if it still runs (no clean-up of any kind) and reap it."""
    if proc is not None and proc.poll() is None:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)


def terminate(proc: subprocess.Popen[bytes] | None, grace: float = 10.0) -> int | None:
    """SIGTERM ``proc``, SIGKILL after ``grace`` seconds; return its exit code (None: never ran)."""
    if proc is None:
        return None
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)
    return proc.returncode
