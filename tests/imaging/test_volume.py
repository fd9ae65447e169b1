"""Series -> Volume: geometry against the headers, pixel values, inconsistent series."""

from __future__ import annotations

import random
import shutil
import tracemalloc
from pathlib import Path

import numpy as np
import pydicom
import pytest

from node.errors import ImagingError
from node.imaging import dicom_files, load_volume
from tests.imaging.synthetic import write_ct_series

CHEST = "ct/chest-ct-siemens-sensation10-b40f-30sl"
ENH_MR = "enhanced/siemens-xa10-enhanced-mr"


def _copy(src: Path, dst: Path) -> list[Path]:
    dst.mkdir(parents=True, exist_ok=True)
    out = []
    for f in sorted(src.iterdir()):
        shutil.copy(f, dst / f.name)
        out.append(dst / f.name)
    return out


def _edit(path: Path, **changes: object) -> None:
    ds = pydicom.dcmread(path)
    for key, value in changes.items():
        setattr(ds, key, value)
    ds.save_as(path)


def test_chest_ct_geometry_matches_headers(corpus: Path) -> None:
    files = dicom_files([corpus / CHEST])
    vol = load_volume(files)
    headers = {
        str(ds.SOPInstanceUID): ds
        for ds in (pydicom.dcmread(f, stop_before_pixels=True) for f in files)
    }
    assert vol.voxels.shape == (30, 512, 512)
    assert vol.is_3d and vol.modality == "CT" and vol.body_part == "CHEST"
    ds0 = headers[vol.sources[0].sop_uid]
    assert vol.spacing[1:] == pytest.approx([float(v) for v in ds0.PixelSpacing])
    row, col = (
        np.asarray(ds0.ImageOrientationPatient[:3]),
        np.asarray(ds0.ImageOrientationPatient[3:]),
    )
    np.testing.assert_allclose(vol.direction[0], row)
    np.testing.assert_allclose(vol.direction[1], col)
    np.testing.assert_allclose(vol.direction[2], np.cross(row, col))
    # every slice sits at origin + k * spacing * normal, as its own header says
    for k, ref in enumerate(vol.sources):
        ipp = np.asarray([float(v) for v in headers[ref.sop_uid].ImagePositionPatient])
        expected = np.asarray(vol.origin) + k * vol.spacing[0] * vol.direction[2]
        np.testing.assert_allclose(ipp, expected, atol=1e-3)
        assert ref.frame_number is None
    # slice spacing: distance between neighbouring ImagePositionPatient values
    zs = sorted(float(ds.ImagePositionPatient[2]) for ds in headers.values())
    assert vol.spacing[0] == pytest.approx(float(np.median(np.diff(zs))))


def test_chest_ct_voxels_are_hounsfield_units(corpus: Path) -> None:
    files = dicom_files([corpus / CHEST])
    vol = load_volume(files)
    by_uid = {str(pydicom.dcmread(f, stop_before_pixels=True).SOPInstanceUID): f for f in files}
    for k in (0, 13, 29):
        ds = pydicom.dcmread(by_uid[vol.sources[k].sop_uid])
        hu = ds.pixel_array.astype(np.float64) * float(ds.RescaleSlope) + float(ds.RescaleIntercept)
        np.testing.assert_array_equal(vol.voxels[k], hu)
    assert vol.voxels.dtype == np.int16
    assert vol.voxels.min() >= -1024  # air in HU, not raw stored values


def test_order_comes_from_positions_not_instance_numbers(corpus: Path, tmp_path: Path) -> None:
    files = _copy(corpus / CHEST, tmp_path / "s")
    reference = load_volume(files)
    numbers = list(range(1, len(files) + 1))
    random.Random(5).shuffle(numbers)
    for f, n in zip(files, numbers, strict=True):
        _edit(f, InstanceNumber=n)
    shuffled = list(files)
    random.Random(7).shuffle(shuffled)
    vol = load_volume(shuffled)
    assert vol.sources == reference.sources
    np.testing.assert_array_equal(vol.voxels, reference.voxels)


def test_enhanced_mr_per_frame_geometry(corpus: Path) -> None:
    path = corpus / ENH_MR / "6_1.dcm"
    vol = load_volume([path])
    ds = pydicom.dcmread(path)
    assert vol.voxels.shape == (ds.NumberOfFrames, ds.Rows, ds.Columns) == (6, 64, 64)
    frames = ds.PerFrameFunctionalGroupsSequence
    for k, ref in enumerate(vol.sources):
        assert ref.sop_uid == ds.SOPInstanceUID and ref.frame_number is not None
        group = frames[ref.frame_number - 1]
        ipp = np.asarray([float(v) for v in group.PlanePositionSequence[0].ImagePositionPatient])
        expected = np.asarray(vol.origin) + k * vol.spacing[0] * vol.direction[2]
        np.testing.assert_allclose(ipp, expected, atol=1e-3)
        measures = group.PixelMeasuresSequence[0]
        assert vol.spacing[1:] == pytest.approx([float(v) for v in measures.PixelSpacing])
        transform = group.PixelValueTransformationSequence[0]
        stored = ds.pixel_array[ref.frame_number - 1].astype(np.float64)
        expected_values = stored * float(transform.RescaleSlope) + float(transform.RescaleIntercept)
        np.testing.assert_array_equal(vol.voxels[k], expected_values)
    assert [r.frame_number for r in vol.sources] == [1, 2, 3, 4, 5, 6]
    assert vol.spacing[0] == pytest.approx(2.4, abs=1e-3)


def test_enhanced_geometry_from_shared_groups(corpus: Path, tmp_path: Path) -> None:
    """Orientation and pixel measures may live in the shared functional groups only."""
    src = corpus / ENH_MR / "6_1.dcm"
    reference = load_volume([src])
    ds = pydicom.dcmread(src)
    shared = ds.SharedFunctionalGroupsSequence[0]
    first = ds.PerFrameFunctionalGroupsSequence[0]
    shared.PlaneOrientationSequence = first.PlaneOrientationSequence
    shared.PixelMeasuresSequence = first.PixelMeasuresSequence
    for group in ds.PerFrameFunctionalGroupsSequence:
        del group.PlaneOrientationSequence
        del group.PixelMeasuresSequence
    path = tmp_path / "shared.dcm"
    ds.save_as(path)
    vol = load_volume([path])
    assert vol.spacing == pytest.approx(reference.spacing)
    np.testing.assert_allclose(vol.direction, reference.direction)
    np.testing.assert_array_equal(vol.voxels, reference.voxels)


def test_enhanced_ct_two_frames(corpus: Path) -> None:
    vol = load_volume([corpus / "enhanced/enhanced-ct-2frame/eCT_Supplemental.dcm"])
    assert vol.voxels.shape == (2, 512, 512)
    assert vol.spacing == pytest.approx((10.0, 0.388672, 0.388672))
    # normal = (-1,0,0) x (0,1,0) = (0,0,-1): ascending along it is descending z
    np.testing.assert_allclose(vol.direction[2], [0, 0, -1])
    assert vol.origin == pytest.approx((99.5, -301.5, -149.0))
    assert [r.frame_number for r in vol.sources] == [2, 1]


def test_repeated_enhanced_volumes_are_refused(corpus: Path) -> None:
    with pytest.raises(ImagingError, match="duplicate slice position"):
        load_volume(dicom_files([corpus / ENH_MR]))


def test_dx_monochrome1_is_inverted(corpus: Path) -> None:
    path = corpus / "other-modalities/dx/dx_image.dcm"
    ds = pydicom.dcmread(path)
    assert ds.PhotometricInterpretation == "MONOCHROME1"
    vol = load_volume([path])
    assert not vol.is_3d and vol.voxels.shape == (1, ds.Rows, ds.Columns)
    top = (1 << int(ds.BitsStored)) - 1
    expected = (top - ds.pixel_array.astype(np.float64)) * float(ds.RescaleSlope) + float(
        ds.RescaleIntercept
    )
    np.testing.assert_array_equal(vol.voxels[0], expected)
    assert vol.spacing[1:] == pytest.approx([float(v) for v in ds.PixelSpacing])


def test_single_frame_multiframe_object_is_2d(corpus: Path) -> None:
    """NM whole body: NumberOfFrames = 1, no plane position: a 2D image, frame 1."""
    path = corpus / "other-modalities/nm/NM1_JLSL.dcm"
    ds = pydicom.dcmread(path)
    vol = load_volume([path])
    assert not vol.is_3d and vol.voxels.shape == (1, 1024, 256)
    assert vol.sources[0].frame_number == 1
    np.testing.assert_array_equal(vol.voxels[0], ds.pixel_array)
    assert vol.spacing[1:] == pytest.approx([float(v) for v in ds.PixelSpacing])


def test_ultrasound_rgb_becomes_luminance(corpus: Path) -> None:
    path = corpus / "other-modalities/us/US1_J2KR.dcm"
    vol = load_volume([path])
    rgb = pydicom.dcmread(path).pixel_array.astype(np.float32)
    assert vol.voxels.shape == (1, 480, 640) and vol.voxels.dtype == np.float32
    assert not vol.is_3d and vol.modality == "US"
    luma = 0.299 * rgb[..., 0] + 0.587 * rgb[..., 1] + 0.114 * rgb[..., 2]
    np.testing.assert_allclose(vol.voxels[0], luma, atol=1e-3)


@pytest.mark.parametrize(
    ("path", "reason"),
    [
        ("other-modalities/xa/HasFragmentSequence.dcm", "do not form a volume"),
        ("other-modalities/sr-text/test-SR.dcm", "holds no image"),
        ("malformed/no-pixel-data.dcm", "no image|pixel data"),
        ("malformed/MR_truncated.dcm", "cannot decode pixel data"),
        ("malformed/badVR.dcm", "invalid image header"),
        ("malformed/no_meta.dcm", "cannot read"),
        (
            "other-modalities/xa/XA1_JPLY.dcm",
            r"decoder.*JPEG Extended.*1\.2\.840\.10008\.1\.2\.4\.51",
        ),
        ("mr/ge-signa-dwi-brain-14", "duplicate slice position"),
    ],
)
def test_non_volumes_are_refused(corpus: Path, path: str, reason: str) -> None:
    target = corpus / path
    if not target.exists():
        target = next(corpus.rglob(Path(path).name))
    with pytest.raises(ImagingError, match=reason):
        load_volume(dicom_files([target]))


# ---------------------------------------------------------------- inconsistent series


@pytest.fixture
def chest_copy(corpus: Path, tmp_path: Path) -> list[Path]:
    files = _copy(corpus / CHEST, tmp_path / "chest")
    return sorted(files, key=lambda f: float(pydicom.dcmread(f).ImagePositionPatient[2]))


def test_mixed_orientation(chest_copy: list[Path]) -> None:
    _edit(chest_copy[10], ImageOrientationPatient=[1, 0, 0, 0, 0, -1])
    with pytest.raises(ImagingError, match="mixed orientation"):
        load_volume(chest_copy)


def test_missing_slice_is_a_gap(chest_copy: list[Path]) -> None:
    del chest_copy[12]
    with pytest.raises(ImagingError, match="non-uniform slice spacing.*missing slices"):
        load_volume(chest_copy)


def test_uneven_spacing(chest_copy: list[Path]) -> None:
    ds = pydicom.dcmread(chest_copy[5])
    x, y, z = (float(v) for v in ds.ImagePositionPatient)
    _edit(chest_copy[5], ImagePositionPatient=[x, y, z + 3.0])
    with pytest.raises(ImagingError, match="non-uniform slice spacing"):
        load_volume(chest_copy)


def test_duplicate_position(chest_copy: list[Path]) -> None:
    ds = pydicom.dcmread(chest_copy[4])
    _edit(chest_copy[5], ImagePositionPatient=list(ds.ImagePositionPatient))
    with pytest.raises(ImagingError, match="duplicate slice position"):
        load_volume(chest_copy)


def test_varying_image_size(chest_copy: list[Path]) -> None:
    _edit(chest_copy[3], Rows=256, Columns=256)
    with pytest.raises(ImagingError, match="varying image size"):
        load_volume(chest_copy)


def test_mixed_series(chest_copy: list[Path]) -> None:
    _edit(chest_copy[0], SeriesInstanceUID=pydicom.uid.generate_uid())
    with pytest.raises(ImagingError, match="mixed Series Instance UIDs"):
        load_volume(chest_copy)


def test_gantry_tilt_is_refused(chest_copy: list[Path]) -> None:
    for k, f in enumerate(chest_copy):
        ds = pydicom.dcmread(f)
        x, y, z = (float(v) for v in ds.ImagePositionPatient)
        _edit(f, ImagePositionPatient=[x, y + 2.0 * k, z])
    with pytest.raises(ImagingError, match="off the slice normal"):
        load_volume(chest_copy)


def test_fractional_rescale_gives_float32(chest_copy: list[Path]) -> None:
    _edit(chest_copy[2], RescaleSlope=0.5)
    vol = load_volume(chest_copy)
    assert vol.voxels.dtype == np.float32
    ds = pydicom.dcmread(chest_copy[2])
    np.testing.assert_allclose(vol.voxels[2], ds.pixel_array * 0.5 - 1024.0)


def test_int16_overflow_promotes_to_float32(tmp_path: Path) -> None:
    def bright(k: int, rows: int, cols: int) -> np.ndarray:
        return np.full((rows, cols), 32000 if k == 2 else 100, np.int16)

    files = write_ct_series(tmp_path, slices=4, pixels=bright)
    for f in files:
        _edit(f, RescaleIntercept=1000)
    vol = load_volume(files)
    assert vol.voxels.dtype == np.float32
    assert vol.voxels[2].max() == 33000.0 and vol.voxels[0].max() == 1100.0


def test_float32_on_request(chest_copy: list[Path]) -> None:
    vol = load_volume(chest_copy[:3], dtype="float32")
    assert vol.voxels.dtype == np.float32 and vol.voxels.min() >= -1024.0


def test_loader_streams(tmp_path: Path) -> None:
    """Peak allocation while loading stays under 2x the int16 volume (issue 5)."""
    files = write_ct_series(tmp_path, slices=40, rows=256, cols=256)
    int16_bytes = 40 * 256 * 256 * 2
    tracemalloc.start()
    try:
        vol = load_volume(files)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert vol.voxels.nbytes == int16_bytes
    assert peak <= 2 * int16_bytes, f"peak {peak / int16_bytes:.2f}x the int16 volume"
