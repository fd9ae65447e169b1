"""IOCM rejection notes for results: title, references, determinism, independent checkers."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import highdicom as hd
import pydicom
import pytest

from node.errors import ResultError
from node.results.gate import encode
from node.results.rejection import build_rejection_note
from tests.results.conftest import Case, run_tool

WHEN = dt.datetime(2026, 12, 7, 7, 0, 0)


def test_rejection_note_references_every_rejected_result(
    chest_case: Case, tmp_path: Path, checker_tools: Path
) -> None:
    note = build_rejection_note(
        chest_case.results, note_id="retract-1", reason="wrong patient side", content_datetime=WHEN
    )
    code = note.ConceptNameCodeSequence[0]
    assert (code.CodeValue, code.CodingSchemeDesignator) == ("113001", "DCM")
    flagged = {
        str(ref.ReferencedSOPInstanceUID)
        for item in note.ContentSequence
        for ref in item.get("ReferencedSOPSequence", [])
    }
    assert flagged == {str(ds.SOPInstanceUID) for ds in chest_case.results}
    assert note.StudyInstanceUID == chest_case.results[0].StudyInstanceUID
    again = build_rejection_note(
        chest_case.results, note_id="retract-1", reason="wrong patient side", content_datetime=WHEN
    )
    assert encode(again) == encode(note)  # a retried rejection is byte-identical
    path = tmp_path / "rejection.dcm"
    path.write_bytes(encode(note))
    hd.ko.KeyObjectSelectionDocument.from_dataset(pydicom.dcmread(path))
    out = run_tool(checker_tools, "check-dicom", path)
    assert "0 error(s)" in out.splitlines()[-1], out
    run_tool(checker_tools, "check-refs", "--sources", chest_case.files[0].parent, path)


def test_rejection_needs_instances_of_one_study(chest_case: Case, dx_case: Case) -> None:
    with pytest.raises(ResultError, match="at least one"):
        build_rejection_note([], note_id="x", reason="r", content_datetime=WHEN)
    with pytest.raises(ResultError, match="one study"):
        build_rejection_note(
            [*chest_case.results, *dx_case.results], note_id="x", reason="r", content_datetime=WHEN
        )
