"""Small helpers shared by the tests (import as ``from tests.util import ...``)."""

from __future__ import annotations

import socket
import time
from collections.abc import Callable
from pathlib import Path

from node.types import Instance


def wait_until(check: Callable[[], bool], timeout: float = 10.0, what: str = "condition") -> None:
    """Poll ``check`` every 20 ms until it is true; raise TimeoutError after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} not true after {timeout}s")
        time.sleep(0.02)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago (bind to port 0)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def port_open(port: int, host: str = "127.0.0.1") -> bool:
    """True when something accepts TCP connections on ``host:port``."""
    try:
        with socket.create_connection((host, port), timeout=0.2):
            return True
    except OSError:
        return False


def stored_instance(path: Path, *, sha256: str = "") -> Instance:
    """``path`` as the index would list it once stored, read here with pydicom (not by the node's
    ingest): for tests and benchmarks that hand typed instances to a stage."""
    import pydicom

    ds = pydicom.dcmread(path, stop_before_pixels=True)
    return Instance(
        study_uid=str(ds.StudyInstanceUID),
        series_uid=str(ds.SeriesInstanceUID),
        sop_uid=str(ds.SOPInstanceUID),
        sop_class_uid=str(ds.SOPClassUID),
        transfer_syntax_uid=str(ds.file_meta.TransferSyntaxUID),
        path=path,
        size_bytes=path.stat().st_size,
        sha256=sha256,
        modality=str(ds.get("Modality", "")) or None,
    )
