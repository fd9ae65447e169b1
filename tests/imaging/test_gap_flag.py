"""A slice interpolated to fill a gap is said in every result object and in the job outputs.

The real chest CT (30 axial slices) loses one middle slice, as when a PACS forwards all but one
instance; the split fills it (small gap), the loaded volume names it, and the SEG (Derivation
Description) and the SR (a Comment in its Qualitative Evaluations) built on that volume say so.
The objects pass the independent checkers.
"""

from __future__ import annotations

from pathlib import Path

import pydicom

from node.imaging import load_volume
from node.imaging.split import split_series
from node.results import build_results
from node.results.identity import interpolation_note
from tests.results.conftest import CHEST, WHEN, run_tool, save
from tests.results.phantoms import chest_prediction


def _texts(item: pydicom.Dataset) -> list[str]:
    out = []
    for child in item.get("ContentSequence") or ():
        if child.get("ValueType") == "TEXT":
            out.append(str(child.TextValue))
        out += _texts(child)
    return out


def test_interpolated_slice_is_flagged_in_seg_sr(
    corpus: Path, tmp_path: Path, checker_tools: Path
) -> None:
    files = sorted((corpus / CHEST).glob("*.dcm"))
    by_z = sorted(
        files, key=lambda p: float(pydicom.dcmread(p, stop_before_pixels=True).SliceLocation)
    )
    missing = by_z[14]
    kept = [p for p in files if p != missing]
    (v,) = split_series(kept).volumes
    assert (v.slices, v.filled_slices, v.problem) == (30, 1, None)
    volume = load_volume(kept, volume_id=v.volume_id)
    assert volume.filled_slices == (14,)
    note = interpolation_note(volume)
    assert note is not None and "1 of 30 slices were interpolated" in note and "slice 15" in note

    results = build_results(
        chest_prediction(volume), volume, kept, job_id="job-gap", content_datetime=WHEN
    )
    seg = [d for d in results if d.Modality == "SEG"]
    sr = [d for d in results if d.Modality == "SR"]
    assert seg and sr
    assert seg[0].DerivationDescription == f"{note}; this segmentation has no frame on them"
    # no SEG frame lies on the interpolated slice (no acquired image to refer to)
    gap_z = float(pydicom.dcmread(missing, stop_before_pixels=True).ImagePositionPatient[2])
    frame_z = {
        round(float(fg.PlanePositionSequence[0].ImagePositionPatient[2]), 3)
        for fg in seg[0].PerFrameFunctionalGroupsSequence
    }
    assert frame_z and round(gap_z, 3) not in frame_z
    assert note in _texts(sr[0])
    paths = save(results, tmp_path, "gap")
    out = run_tool(checker_tools, "check-dicom", *paths)
    assert "0 error(s)" in out.splitlines()[-1], out[-3000:]
    out = run_tool(checker_tools, "check-sr", "--quiet", *[p for p in paths if "-SR" in p.name])
    assert "0 error(s)" in out.splitlines()[-1], out[-3000:]

    # the same series complete: nothing is said
    full = load_volume(files)
    assert full.filled_slices == () and interpolation_note(full) is None
    plain = build_results(
        chest_prediction(full), full, files, job_id="job-full", content_datetime=WHEN
    )
    assert all("DerivationDescription" not in d for d in plain if d.Modality == "SEG")
    plain_seg = next(d for d in plain if d.Modality == "SEG")
    plain_z = {
        round(float(fg.PlanePositionSequence[0].ImagePositionPatient[2]), 3)
        for fg in plain_seg.PerFrameFunctionalGroupsSequence
    }
    assert round(gap_z, 3) in plain_z  # segmented there when the slice was acquired
    assert not any("interpolated" in t for d in plain if d.Modality == "SR" for t in _texts(d))
