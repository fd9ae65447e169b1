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


#: The test files that take longest, longest first: measured with ``--durations`` and per-file
#: sums (issue 19 §4; CONTRIBUTING.md "Where CI time goes"), then files not measured in the old
#: order.  Under pytest-xdist (``make test``) files are handed to workers in collection order, so
#: these start first and the run does not end waiting on one long file started last.
LONGEST_FIRST = (
    "tests/e2e/test_crash.py",
    "tests/models/test_bundle_zoo_detection.py",
    "tests/e2e/test_real_chest_ct.py",
    "tests/models/test_demo_lung.py",
    "tests/models/test_demo_lung_classify.py",
    "tests/models/test_demo_followup.py",
    "tests/scale/test_cluster_worker_kill.py",
    "tests/models/test_demo_enhance_cxr.py",
    "tests/e2e/test_end_to_end.py",
    "tests/e2e/test_misbehaving_models.py",
    "tests/models/test_bundle_zoo.py",
    "tests/e2e/test_drain.py",
    "tests/pull/test_tracking_job.py",
    "tests/pull/test_registration_job.py",
    "tests/scale/test_cluster.py",
    "tests/cli/test_demo.py",
    "tests/checkers/test_checkers.py",
    "tests/security/test_phi_in_logs.py",
    "tests/results/test_sr.py",
    "tests/e2e/test_result_lifecycle.py",
    "tests/security/test_openapi_schemathesis.py",
    "tests/cli/test_serve_send.py",
    "tests/results/test_ohif.py",
    "tests/cli/test_models_admission.py",
    "tests/pull/test_pull_console.py",
    "tests/pull/test_ups_dimse_performer.py",
)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Run long files first: those in LONGEST_FIRST in that order, then other files with a test
    marked ``slow``, then the rest.  Files keep their tests together and in their own order."""
    rank = {name: i for i, name in enumerate(LONGEST_FIRST)}
    slow_files = {item.path for item in items if item.get_closest_marker("slow") is not None}
    first_seen: dict[Path, int] = {}
    for item in items:
        first_seen.setdefault(item.path, len(first_seen))

    def key(item: pytest.Item) -> tuple[int, int]:
        name = item.path.relative_to(ROOT).as_posix() if item.path.is_relative_to(ROOT) else ""
        group = rank.get(name, len(rank) + (0 if item.path in slow_files else 1))
        return group, first_seen[item.path]

    items.sort(key=key)  # stable: a file's tests stay in collection order


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


@pytest.fixture(scope="session")
def run_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder shared by every test of this run, for generated inputs that are costly to make
    (e.g. trained test weights), kept under content-hash names.

    Under pytest-xdist each worker has its own base temporary folder (``.../popen-gwN``); their
    parent is the run's, so all workers share this folder.  Writers must write a temporary
    file and rename it into place (readers then see a whole file or none).
    """
    base = tmp_path_factory.getbasetemp()
    root = base.parent if base.name.startswith("popen-gw") else base
    folder = root / "run-cache"
    folder.mkdir(exist_ok=True)
    return folder


@pytest.fixture
def orthanc(tmp_path: Path):  # type: ignore[no-untyped-def]
    """A fresh real Orthanc with the DICOMweb plugin, no modalities configured."""
    from tests.peers.orthanc import start_orthanc

    with start_orthanc(tmp_path / "orthanc") as peer:
        yield peer
