"""Series -> volumes on headers only, and loading one chosen volume."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pydicom
import pytest

from node.errors import ImagingError
from node.imaging import load_volume
from node.imaging.split import split_series
from tests.imaging.synthetic import constructed_series, write_mr_frames


def _series(tmp_path: Path, name: str) -> list[Path]:
    frames = constructed_series()[name]
    return write_mr_frames(
        tmp_path / name, frames, modality="CT" if name == "gantry-tilt" else "MR"
    )


def test_multi_echo_volumes_have_stable_ids_and_load_one_by_one(tmp_path: Path) -> None:
    paths = _series(tmp_path, "multi-echo")
    split = split_series(paths)
    ids = [v.volume_id for v in split.volumes]
    assert [v.label for v in split.volumes] == [(("echo", "1"),), (("echo", "2"),)]
    assert ids == [split.series_uid + "/echo=1", split.series_uid + "/echo=2"]
    assert [v.volume_id for v in split_series(list(reversed(paths))).volumes] == ids
    vol = load_volume(paths, volume_id=ids[1])
    assert vol.voxels.shape == (10, 16, 16)
    assert {s.sop_uid for s in vol.sources} == {sop for sop, _ in split.volumes[1].sources}
    with pytest.raises(ImagingError, match="duplicate slice position"):
        load_volume(paths)  # the whole series is not one volume
    with pytest.raises(ImagingError, match="has no volume"):
        load_volume(paths, volume_id=split.series_uid + "/echo=9")


def test_survey_without_localizer_image_type_is_a_localizer(tmp_path: Path) -> None:
    split = split_series(_series(tmp_path, "three-plane-survey"))
    assert [v.orientation for v in split.volumes] == ["AXIAL", "SAGITTAL", "CORONAL"]
    assert all(v.is_localizer for v in split.volumes)
    assert "survey" in (split.volumes[0].localizer_reason or "")
    plain = split_series(_series(tmp_path, "plain-stack"))
    assert not plain.volumes[0].is_localizer


def test_small_gap_is_filled_and_said(tmp_path: Path) -> None:
    paths = _series(tmp_path, "small-gap")
    (v,) = split_series(paths).volumes
    assert (v.slices, v.filled_slices, v.problem, v.is_uniform) == (20, 1, None, False)
    vol = load_volume(paths, volume_id=v.volume_id)
    assert vol.voxels.shape[0] == 20
    assert vol.spacing[0] == pytest.approx(2.0)
    # the filled slice lies between its neighbours, and the volume says which one it is
    assert vol.filled_slices == (9,)
    mid = vol.voxels[9].astype(float)
    assert np.allclose(mid, (vol.voxels[8].astype(float) + vol.voxels[10]) / 2, atol=1)


def test_a_volume_without_a_gap_names_no_filled_slice(tmp_path: Path) -> None:
    paths = _series(tmp_path, "plain-stack")
    (v,) = split_series(paths).volumes
    assert load_volume(paths, volume_id=v.volume_id).filled_slices == ()


def test_large_gap_is_missing_slices(tmp_path: Path) -> None:
    paths = _series(tmp_path, "missing-slices")
    (v,) = split_series(paths).volumes
    assert v.problem is not None and v.problem.startswith("missing slices: 7 of 20")
    with pytest.raises(ImagingError, match="missing slices"):
        load_volume(paths, volume_id=v.volume_id)


def test_gantry_tilt_is_measured_and_loaded_as_a_sheared_grid(tmp_path: Path) -> None:
    paths = _series(tmp_path, "gantry-tilt")
    (v,) = split_series(paths).volumes
    assert v.tilt_degrees == pytest.approx(15.0, abs=0.1)
    vol = load_volume(paths, volume_id=v.volume_id)
    step = vol.direction[2] * vol.spacing[0]
    assert step == pytest.approx([0.0, 2.0 * 0.2679, 2.0], abs=1e-3)


def test_undecodable_instances_are_named_from_headers(corpus: Path) -> None:
    split = split_series([corpus / "malformed" / "MR_truncated.dcm"])
    assert split.volumes == ()
    assert "Pixel Data" in split.dropped[0].reason or "truncated" in split.dropped[0].reason


def test_non_image_instance_in_an_image_series_is_set_aside(corpus: Path) -> None:
    # highdicom's test SR shares the Series Instance UID of its CT image
    folder = corpus / "reference-results" / "highdicom"
    split = split_series([folder / "ct_image.dcm", folder / "sr_document.dcm"])
    assert len(split.volumes) == 1
    assert split.dropped == ()
    assert [d.reason for d in split.not_images] == ["no image (no Rows/Columns)"]


def test_partial_series_loads_the_decodable_rest(tmp_path: Path) -> None:
    paths = _series(tmp_path, "plain-stack")
    broken = paths[5]
    broken.write_bytes(broken.read_bytes()[:-100])  # pixel data cut short, as MR_truncated
    split = split_series(paths)
    (dropped,) = split.dropped
    assert "truncated" in dropped.reason or "Pixel Data" in dropped.reason
    (v,) = split.volumes
    assert (v.slices, v.filled_slices) == (24, 1)  # the hole is filled, and said
    vol = load_volume(paths, volume_id=v.volume_id)
    assert vol.voxels.shape[0] == 24
    assert broken.is_file()  # the original stays stored as received


def test_rt_dose_grid_is_one_volume_placed_by_grid_frame_offsets(
    tmp_path: Path, corpus: Path
) -> None:
    """An RT Dose grid is one multi-frame instance whose frames share Image Position (Patient);
    Grid Frame Offset Vector places them (PS3.3 C.8.8.3.2), relative (first offset 0: along
    the plane normal) or absolute (z coordinates).  Voxels are dose (x Dose Grid Scaling)."""
    path = corpus / "other-modalities" / "rt" / "rtdose.dcm"
    ds = pydicom.dcmread(path)
    offsets = [float(v) for v in ds.GridFrameOffsetVector]
    assert offsets[0] == 0.0 and len(offsets) == int(ds.NumberOfFrames) == 15  # relative
    split = split_series([path])
    assert [(v.slices, v.slice_spacing, v.orientation, v.problem) for v in split.volumes] == [
        (15, 5.0, "AXIAL", None)
    ]
    vol = load_volume([path])
    assert vol.voxels.shape == (15, 10, 10) and vol.spacing == (5.0, 10.0, 10.0)
    x, y, z = (float(v) for v in ds.ImagePositionPatient)
    assert np.allclose(vol.origin, (x, y, z))
    dose = ds.pixel_array.astype(np.float64) * float(ds.DoseGridScaling)
    assert np.allclose(vol.voxels, dose, atol=1e-6)
    assert float(vol.voxels.max()) > 1.0  # scaled to Gy, not the stored integers

    # the same grid with absolute offsets (the frames' z), written in reverse order
    ds.GridFrameOffsetVector = [z + 5.0 * k for k in reversed(range(15))]
    ds.PixelData = np.ascontiguousarray(ds.pixel_array[::-1]).tobytes()
    absolute = tmp_path / "rtdose-absolute.dcm"
    ds.save_as(absolute)
    vol2 = load_volume([absolute])
    assert np.allclose(vol2.origin, vol.origin) and np.allclose(vol2.voxels, vol.voxels)


def test_malformed_jpeg_stream_is_named_before_any_pixel_is_decoded(corpus: Path) -> None:
    """XA1_JPLY's stream declares a sequential DCT frame (SOF1) but its scan spans 0..0: no
    decoder reads it (dcm2niix converts nothing either).  The split names it from the stream's
    first bytes, so routing can say "undecodable" instead of a job failing at load."""
    path = corpus / "other-modalities" / "xa" / "XA1_JPLY.dcm"
    split = split_series([path])
    assert split.volumes == ()
    (dropped,) = split.dropped
    assert "sequential DCT frame (SOF1)" in dropped.reason and "0..0, not 0..63" in dropped.reason
    with pytest.raises(ImagingError, match="decode"):
        load_volume([path])  # the decoders agree
    # a valid JPEG Extended stream of the same kind passes the check
    ok = corpus / "transfer-syntax" / "ge-ct-slice-15-syntaxes"
    ext = next(ok.glob("*JPEGProcess2_4*"))
    assert split_series([ext]).dropped == ()
