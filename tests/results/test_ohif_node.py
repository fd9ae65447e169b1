"""OHIF's prebuilt viewer backed by the node's own DICOMweb (issue 22 §3): no Orthanc between.

A real node (loopback, no credentials: the open configuration of docs/viewer.md) holds the CT
study and the SEG, SR and heat-map SC built for it, stored back into the node as a node that is
its own destination would; ``ohif-snapshot --dicomweb`` serves OHIF 3.13.2 from its folder with
``/dicom-web`` proxied to the node, opens the study in headless Chromium, and every derived
display set.  The screenshot goes to ``docs/images/ohif-node-dicomweb.png`` with
``AINODE_SCREENSHOTS=1``.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.api.opsnode import OpsNode, start_ops_node
from tests.console.results import add_preview_results

ROOT = Path(__file__).parents[2]


@pytest.fixture(scope="module")
def ops(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OpsNode]:
    yield from start_ops_node(tmp_path_factory.mktemp("ohif-node"))


@pytest.mark.slow
def test_ohif_reads_results_from_the_nodes_dicomweb(
    ops: OpsNode, checker_tools: Path, tmp_path: Path
) -> None:
    built = add_preview_results(ops)
    for obj in built["objects"]:
        out = ops.node.spool.store(
            (ops.data_dir / obj["path"]).read_bytes(), calling_aet="AINODE", source="results"
        )
        assert out.status == "stored"
    base = f"{ops.http.base_url}".rstrip("/")
    # the node itself answers what OHIF asks: QIDO, series metadata, frames
    series = ops.http.get(f"/dicom-web/studies/{ops.ct_study}/series").json()
    modalities = {s["00080060"]["Value"][0] for s in series}
    assert {"CT", "SEG", "SR"} <= modalities
    shot = tmp_path / "ohif.png"
    proc = subprocess.run(
        [
            str(checker_tools / "ohif-snapshot"),
            "--out",
            str(shot),
            "--timeout",
            "150",
            "--study",
            ops.ct_study,
            "--dicomweb",
            f"{base}/dicom-web",
        ],
        capture_output=True,
        text=True,
        timeout=400,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    report = json.loads(proc.stdout[proc.stdout.index("{") :])
    assert report["ok"] and report["study"] == ops.ct_study
    opened = {entry["modality"] for entry in report["loaded"]}
    assert {"SEG", "SR"} <= opened, report
    assert shot.stat().st_size > 20_000
    if os.environ.get("AINODE_SCREENSHOTS") == "1":
        shutil.copy(shot, ROOT / "docs" / "images" / "ohif-node-dicomweb.png")
