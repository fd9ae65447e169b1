"""Sources with known pitfalls still give conformant results (sources never modified)."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pydicom

from tests.results.conftest import Case, run_tool


def test_pitfall_source_results_pass_every_checker(checker_tools: Path, liver_case: Case) -> None:
    src = pydicom.dcmread(liver_case.sources[0], stop_before_pixels=True)
    assert src.SpecificCharacterSet == "" and "Laterality" not in src
    assert "BodyPartExamined" not in src
    for ds in liver_case.results:
        assert str(ds.PatientName) == str(src.PatientName)  # identity kept, not "fixed"
        assert ds.SpecificCharacterSet == "ISO_IR 100"
    seg, sc = liver_case.of("SEG")[0], liver_case.of("OT")[0]
    assert "Laterality" not in seg and sc.Laterality == ""  # unknown body part: Type 2 empty
    out = run_tool(checker_tools, "check-dicom", *liver_case.files)
    assert "0 error(s)" in out.splitlines()[-1]
    folder = liver_case.sources[0].parent
    run_tool(checker_tools, "check-refs", "--sources", folder, *liver_case.files)
    run_tool(
        checker_tools,
        "check-dcmjs",
        "--strict",
        "--sources",
        folder,
        *liver_case.files_of("SEG"),
        *liver_case.files_of("SR"),
    )


def test_sources_are_not_modified(liver_case: Case) -> None:
    from node.results import build_results
    from tests.results.conftest import WHEN

    before = {p: hashlib.sha256(p.read_bytes()).hexdigest() for p in liver_case.sources}
    build_results(
        liver_case.prediction,
        liver_case.volume,
        liver_case.sources,
        job_id="again",
        content_datetime=WHEN,
    )
    after = {p: hashlib.sha256(p.read_bytes()).hexdigest() for p in liver_case.sources}
    assert after == before
    assert pydicom.dcmread(liver_case.sources[0]).SpecificCharacterSet == ""
