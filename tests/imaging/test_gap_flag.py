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


def test_job_outputs_name_the_interpolated_slices(tmp_path: Path) -> None:
    """A real job (a small MONAI-bundle model) on a CT series missing one slice: its outputs list
    the interpolated slice and its SEG says so."""
    import numpy as np

    from node.jobs.pipeline import run_series
    from node.samples.writers import write_ct_series
    from node.types import Job
    from tests.models.builders import write_body_model

    write_body_model(tmp_path / "models", name="tiny-body", roi="[8, 32, 32]")
    voxels = np.full((12, 32, 32), -1000.0, dtype=np.float32)
    voxels[2:10, 8:24, 8:24] = 40.0  # a "body" the model labels
    paths = write_ct_series(voxels, spacing=(2.5, 1.0, 1.0), out_dir=tmp_path / "ct")
    by_z = sorted(
        paths, key=lambda p: float(pydicom.dcmread(p, stop_before_pixels=True).SliceLocation)
    )
    by_z[6].unlink()
    kept = [p for p in paths if p.exists()]
    (v,) = split_series(kept).volumes
    assert v.filled_slices == 1
    ds = pydicom.dcmread(kept[0], stop_before_pixels=True)
    job = Job(
        job_id="gap-1",
        study_uid=str(ds.StudyInstanceUID),
        series_uids=(str(ds.SeriesInstanceUID),),
        model="tiny-body",
        rule="ct",
        parameters={"_volume": v.volume_id},
    )
    out = run_series(
        job,
        kept,
        context={"model_paths": [str(tmp_path / "models")], "device": "cpu"},
        out_dir=tmp_path / "results",
        relative_to=tmp_path,
    )
    assert out["interpolated_slices"] == [6]
    written = [pydicom.dcmread(tmp_path / o.path) for o in out["objects"]]
    segs = [d for d in written if d.Modality == "SEG"]
    assert segs and "1 of 12 slices were interpolated" in segs[0].DerivationDescription
