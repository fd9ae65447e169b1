"""Run one function in a fresh worker process with a deadline.

A model that hangs, segfaults or exhausts memory ends its worker only; the caller gets a
``ModelError``.  The job engine (issue 7) runs every job this way.  This module imports no torch,
so the worker starts with only what the target needs.
"""

from __future__ import annotations

import multiprocessing as mp
import traceback
from collections.abc import Callable
from multiprocessing.connection import Connection
from typing import Any, TypeVar

from node.errors import AinodeError, ModelError

__all__ = ["run_isolated"]

T = TypeVar("T")


def _child(conn: Connection, target: Callable[..., Any], args: tuple[Any, ...]) -> None:
    try:
        result = target(*args)
        conn.send(("ok", result))
    except AinodeError as exc:
        conn.send(("error", type(exc).__name__, str(exc)))
    except BaseException as exc:  # noqa: BLE001 - report any failure to the parent, then exit
        tb = traceback.format_exception_only(type(exc), exc)
        conn.send(("error", type(exc).__name__, "".join(tb).strip()))
    finally:
        conn.close()


def run_isolated(target: Callable[..., T], *args: Any, timeout_seconds: float, what: str) -> T:
    """Run ``target(*args)`` in a fresh worker process and return its (picklable) result.

    Parameters
    ----------
    target:
        A module-level function (it is imported by name in the worker).
    args:
        Picklable arguments.
    timeout_seconds:
        Deadline for the whole call; the worker is killed when it passes.
    what:
        Names the job in error messages (e.g. ``"model 'lung-seg'"``).

    Raises
    ------
    ModelError
        The worker raised (message carries its error), died (signal or exit code) or timed out.
    """
    ctx = mp.get_context("spawn")
    parent, child = ctx.Pipe(duplex=False)
    proc = ctx.Process(target=_child, args=(child, target, args), daemon=True)
    proc.start()
    child.close()
    try:
        if not parent.poll(timeout_seconds) and proc.is_alive():
            proc.kill()
            proc.join(5)
            raise ModelError(f"{what} timed out after {timeout_seconds:g} s and was stopped")
        try:
            message = parent.recv()
        except EOFError:
            proc.join(5)
            raise ModelError(
                f"{what} crashed: its worker process ended with exit code {proc.exitcode}"
            ) from None
    finally:
        parent.close()
        if proc.is_alive():
            proc.join(5)
        if proc.is_alive():
            proc.kill()
            proc.join(5)
    if message[0] == "ok":
        result: T = message[1]
        return result
    _, kind, text = message
    raise ModelError(f"{what} failed: {kind}: {text}")
