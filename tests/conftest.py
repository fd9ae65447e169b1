"""Fixtures shared by every test: the real-DICOM corpus and the environment of peer tools."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
CORPUS = ROOT / "tests" / "corpus"
TOOLS = ROOT / "tools" / "checkers"
INSTALL_CHECKERS = "tools/checkers/install (or: make install-dev)"
CHECKERS_CACHE = Path(
    os.environ.get("AINODE_CHECKERS_CACHE", Path.home() / ".cache" / "ainode-checkers")
)

# Debian's dcmtk and Orthanc leave Nagle on unless this is set (else ~40 ms stall per instance).
os.environ.setdefault("TCP_NODELAY", "1")
# The Python checkers (check-refs, check-sr) run with this interpreter, which has pydicom.
os.environ.setdefault("AINODE_PYTHON", sys.executable)


def checker_node_modules() -> Path:
    """node_modules of the checkers' npm pieces (dcmjs, Cornerstone adapters, playwright-core).

    ``tools/checkers/install`` puts them in a folder named after the hash of its package-lock.json.
    """
    lock = hashlib.sha256((TOOLS / "package-lock.json").read_bytes()).hexdigest()[:16]
    return CHECKERS_CACHE / f"npm-{lock}" / "node_modules"


@pytest.fixture(scope="session")
def corpus() -> Path:
    """The real-DICOM test corpus in the repository (tests/corpus, see its MANIFEST.md).

    Its absence is a failure, not a skip."""
    if not (CORPUS / "MANIFEST.md").is_file():
        pytest.fail(f"the DICOM corpus is missing at {CORPUS} (it is part of the repository)")
    return CORPUS


@pytest.fixture(scope="session")
def checker_tools() -> Path:
    """The folder of the independent conformance checkers (tools/checkers): check-dicom,
    check-sr, check-dcmjs, check-refs and ohif-snapshot.

    A checker whose pieces are not installed fails the test, naming the command that installs it.
    """
    proc = subprocess.run(
        [str(TOOLS / "install"), "--check"], capture_output=True, text=True, check=False
    )
    if proc.returncode != 0:
        pytest.fail(
            f"the conformance checkers are not installed; run {INSTALL_CHECKERS}:\n"
            + proc.stderr[-2000:]
        )
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
