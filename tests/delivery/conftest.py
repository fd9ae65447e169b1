"""Fixtures for delivery tests: a simulated clock and corpus objects."""

from __future__ import annotations

from pathlib import Path

import pytest


class SimClock:
    """Simulated wall clock for long outages: ``advance`` moves time, nothing sleeps."""

    def __init__(self, start: float = 1_800_000_000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def clock() -> SimClock:
    return SimClock()


@pytest.fixture
def chest_ct(corpus: Path) -> list[Path]:
    files = sorted((corpus / "ct" / "chest-ct-siemens-sensation10-b40f-30sl").glob("*.dcm"))
    assert len(files) == 30
    return files


@pytest.fixture
def seg_file(corpus: Path) -> Path:
    return corpus / "reference-results" / "highdicom" / "seg_image_ct_binary.dcm"


@pytest.fixture
def sr_file(corpus: Path) -> Path:
    return corpus / "reference-results" / "highdicom" / "sr_document.dcm"


@pytest.fixture
def sc_file(corpus: Path) -> Path:
    files = sorted((corpus / "other-modalities" / "sc").glob("*.dcm"))
    assert files
    return files[0]
