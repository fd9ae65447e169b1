"""OHIF 3.13.2 (real viewer, headless Chromium) renders the SEG, SR and SC with no error."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.results.conftest import CHEST, Case, run_tool


@pytest.mark.slow
def test_ohif_displays_seg_sr_and_sc(
    checker_tools: Path, corpus: Path, chest_case: Case, tmp_path: Path
) -> None:
    files = chest_case.files_of("SEG") + chest_case.files_of("SR") + chest_case.files_of("OT")
    results = tmp_path / "results"
    results.mkdir()
    for f in files:
        (results / f.name).write_bytes(f.read_bytes())
    out = run_tool(
        checker_tools,
        "ohif-snapshot",
        "--out",
        tmp_path / "shot.png",
        corpus / CHEST,
        results,
        timeout=300,
    )
    report = json.loads(out[out.index("{") : out.rindex("}") + 1])
    assert report["ok"] is True
    assert sorted(x["modality"] for x in report["loaded"]) == ["OT", "SEG", "SR"]
    assert not report["consoleErrors"] and not report["notifications"]
    for shot in report["loaded"]:
        assert Path(shot["screenshot"]).stat().st_size > 10_000
