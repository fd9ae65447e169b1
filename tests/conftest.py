"""Fixtures shared by every test: the real-DICOM corpus and the environment of peer tools."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
CORPUS = ROOT / "tests" / "corpus"
TOOLS = ROOT.parent / "shared" / "tools"

# Debian's dcmtk and Orthanc leave Nagle on unless this is set (else ~40 ms stall per instance).
os.environ.setdefault("TCP_NODELAY", "1")


@pytest.fixture(scope="session")
def corpus() -> Path:
    """The real-DICOM test corpus in the repository (tests/corpus, see its MANIFEST.md).

    Its absence is a failure, not a skip."""
    if not (CORPUS / "MANIFEST.md").is_file():
        pytest.fail(f"the DICOM corpus is missing at {CORPUS} (it is part of the repository)")
    return CORPUS


@pytest.fixture(scope="session")
def checker_tools() -> Path:
    """The independent conformance checkers (../shared/tools)."""
    if not (TOOLS / "check-dicom").is_file():
        pytest.fail(f"the conformance checkers are missing at {TOOLS}")
    return TOOLS


def require_tool(name: str) -> str:
    """Path of an external program; a missing tool fails the test (CI installs them all)."""
    path = shutil.which(name)
    if path is None:
        pytest.fail(f"required tool '{name}' is not installed (deploy/install.sh installs it)")
    return path


@pytest.fixture
def orthanc(tmp_path: Path):  # type: ignore[no-untyped-def]
    """A fresh real Orthanc with the DICOMweb plugin, no modalities configured."""
    from tests.peers.orthanc import start_orthanc

    with start_orthanc(tmp_path / "orthanc") as peer:
        yield peer
