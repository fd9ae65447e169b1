"""schemathesis against the OpenAPI description of a running node (bounded, deterministic).

Every operation gets schema-derived and fuzzed requests; checks: no 5xx, status codes, content
types and bodies as documented (errors are RFC 9457 problem JSON, STOW answers DICOM JSON).
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from tests.ingest.synthetic import write_ct_series
from tests.peers.dcmtk import storescu
from tests.peers.node import start_node

CHECKS = ",".join(
    (
        "not_a_server_error",
        "status_code_conformance",
        "content_type_conformance",
        "response_schema_conformance",
        "response_headers_conformance",
    )
)


def _schemathesis() -> list[str]:
    exe = Path(sys.executable).with_name("schemathesis")
    if exe.is_file():
        return [str(exe)]
    found = shutil.which("schemathesis")
    if found is None:
        pytest.fail("schemathesis is not installed (pip install -e '.[dev]')")
    return [found]


@pytest.mark.slow
def test_openapi_operations_conform_and_never_5xx(tmp_path: Path) -> None:
    with start_node(tmp_path / "node") as node:
        files = write_ct_series(tmp_path / "ct", 3, size=16)
        assert storescu(node.dicom_port, files).acknowledged == files  # some data to list
        spec = httpx.get(f"{node.url}/api/openapi.json", timeout=60).json()
        assert len(spec["paths"]) >= 10
        run = subprocess.run(
            [
                *_schemathesis(),
                "run",
                f"{node.url}/api/openapi.json",
                "--checks",
                CHECKS,
                "--max-examples",
                "6",
                "--generation-deterministic",
                "--phases",
                "examples,coverage,fuzzing",
                "--workers",
                "1",
                "--request-timeout",
                "30",
                "--max-failures",
                "50",
            ],
            capture_output=True,
            text=True,
            timeout=600,
            check=False,
            cwd=tmp_path,  # schemathesis keeps a .schemathesis/ cache in its working directory
        )
        assert run.returncode == 0, run.stdout[-8000:] + run.stderr[-2000:]
        assert "passed" in run.stdout
        assert node.proc is not None and node.proc.poll() is None
        assert httpx.get(f"{node.url}/api/health", timeout=60).json()["status"] == "ok"
