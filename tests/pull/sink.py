"""Where pulled instances land in these tests."""

from __future__ import annotations

import threading
from io import BytesIO
from pathlib import Path

import pydicom

from tests.pull.conftest import Received


class ListSink:
    def __init__(self) -> None:
        self.items: list[Received] = []
        self._lock = threading.Lock()

    def store(self, data: bytes, *, calling_aet: str | None, source: str) -> object:
        sop = str(pydicom.dcmread(BytesIO(data), stop_before_pixels=True).SOPInstanceUID)
        with self._lock:
            self.items.append(Received(sop, data))
        return None


def make_sink(tmp_path: Path) -> tuple[ListSink, list[Received]]:
    s = ListSink()
    return s, s.items
