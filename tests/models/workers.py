"""Module-level functions that tests run in worker processes (spawn imports them by name)."""

from __future__ import annotations

import os
import time


def add(a: int, b: int) -> int:
    return a + b


def fail(message: str) -> None:
    raise ValueError(message)


def crash() -> None:
    os.abort()  # like a segfaulting native extension: no exception, the process just dies


def hang(seconds: float) -> None:
    time.sleep(seconds)
