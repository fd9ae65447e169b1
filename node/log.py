"""Logging set-up: the only module that configures handlers.

Messages are stable event names; facts go in ``extra`` fields.  Under ``serve`` every record is one
JSON line.  Never log PHI: identifiers are UIDs or ``sha256(...)[:12]`` hashes.
"""

from __future__ import annotations

import hashlib
import json
import logging
import sys
import time
from typing import Any

__all__ = ["configure", "phi_hash"]

_STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime"}


def phi_hash(value: str | bytes | None) -> str:
    """A short, stable, non-reversible tag for a value that must not appear in logs."""
    if value is None:
        return "-"
    data = value.encode("utf-8", "replace") if isinstance(value, str) else value
    return hashlib.sha256(data).hexdigest()[:12]


class _JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "event": record.getMessage(),
        }
        for key, value in vars(record).items():
            if key not in _STANDARD and not key.startswith("_"):
                out[key] = (
                    value if isinstance(value, (str, int, float, bool, type(None))) else str(value)
                )
        if record.exc_info and record.exc_info[0] is not None:
            out["error"] = f"{record.exc_info[0].__name__}: {record.exc_info[1]}"
        return json.dumps(out, ensure_ascii=False)


class _TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        extras = " ".join(
            f"{k}={v}"
            for k, v in vars(record).items()
            if k not in _STANDARD and not k.startswith("_")
        )
        base = f"{record.levelname.lower():7s} {record.getMessage()}"
        return f"{base} {extras}".rstrip()


def configure(*, json_lines: bool, level: str = "INFO") -> None:
    """Send ainode's log records to stderr, as JSON lines or as short text."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_JsonFormatter() if json_lines else _TextFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # pynetdicom logs dataset contents at DEBUG; keep it quiet (no PHI in logs)
    logging.getLogger("pynetdicom").setLevel(logging.WARNING)
    # Its "standard" event handlers format every PDU and DIMSE message for those DEBUG records
    # all the same: ~5 % of the CPU of a small C-STORE, and what they would print can hold PHI.
    # Its own warnings and errors are still logged.
    from pynetdicom import _config as pynetdicom_config

    pynetdicom_config.LOG_HANDLER_LEVEL = "none"
    logging.getLogger("uvicorn.access").setLevel(logging.WARNING)
