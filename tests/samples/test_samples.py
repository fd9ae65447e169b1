from __future__ import annotations

import subprocess
from pathlib import Path

import numpy as np
import pydicom
import pytest

from node.samples import write_ct_series, write_projection, write_sample_studies
from node.samples.studies import CT_SPACING, sample_chest_ct, sample_radiograph


@pytest.fixture(scope="module")
def samples(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    return write_sample_studies(tmp_path_factory.mktemp("samples"))


def test_sample_studies_pass_dciodvfy(
    samples: list[Path], checker_tools: Path, tmp_path: Path
) -> None:
    root = samples[0].parent.parent
    cr = write_projection(sample_radiograph().image, out_dir=tmp_path / "cr", modality="CR")
    proc = subprocess.run(
        [str(checker_tools / "check-dicom"), str(root), str(cr)], capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert f"check-dicom: {len(samples) + 1} file(s), 0 error(s)" in proc.stdout
    assert "CR_0001.dcm: CRImage — 0 error(s)" in proc.stdout
    assert "DX_0001.dcm: DXImageForPresentation — 0 error(s)" in proc.stdout


def test_two_studies_with_realistic_headers(samples: list[Path]) -> None:
    headers = [pydicom.dcmread(p, stop_before_pixels=True) for p in samples]
    ct = [h for h in headers if h.Modality == "CT"]
    dx = [h for h in headers if h.Modality == "DX"]
    assert len(ct) == sample_chest_ct().hu.shape[0] and len(dx) == 1
    assert 64 <= len(ct) <= 96
    assert len({h.StudyInstanceUID for h in ct}) == 1
    assert ct[0].StudyInstanceUID != dx[0].StudyInstanceUID
    assert len({h.SOPInstanceUID for h in headers}) == len(headers)
    assert {str(h.PatientName) for h in headers} == {"DEMO^CHEST PHANTOM"}
    for h in ct:
        assert h.BodyPartExamined == "CHEST"
        assert [float(v) for v in h.PixelSpacing] == [CT_SPACING[1], CT_SPACING[2]]
        assert float(h.SliceThickness) == CT_SPACING[0]
        assert "synthetic" in h.StudyDescription.lower()
    z = [float(h.ImagePositionPatient[2]) for h in ct]
    assert np.allclose(np.diff(z), -CT_SPACING[0])
    assert dx[0].BodyPartExamined == "CHEST" and dx[0].ViewPosition == "PA"


def test_every_call_makes_fresh_uids(tmp_path: Path) -> None:
    a = pydicom.dcmread(write_sample_studies(tmp_path / "a")[0], stop_before_pixels=True)
    b = pydicom.dcmread(write_sample_studies(tmp_path / "b")[0], stop_before_pixels=True)
    for kw in ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID", "FrameOfReferenceUID"):
        assert a.get(kw) != b.get(kw), kw


def test_ct_phantom_has_lungs_and_nodules_in_hu(samples: list[Path]) -> None:
    vol = np.stack(
        [pydicom.dcmread(p).pixel_array.astype(np.float32) for p in samples[:-1]]
    ) + float(pydicom.dcmread(samples[0], stop_before_pixels=True).RescaleIntercept)
    phantom = sample_chest_ct()
    assert vol.shape == phantom.hu.shape
    lungish = (vol > -900) & (vol < -700)
    assert 0.05 < lungish.mean() < 0.4
    assert len(phantom.nodules) == 3 == len(phantom.nodule_masks)
    for mask in phantom.nodule_masks:
        z, y, x = (int(round(float(c))) for c in np.argwhere(mask).mean(axis=0))
        assert -100 < vol[z, y, x] < 150  # a solid nodule inside aerated lung
        assert vol[z, y, x] - np.median(vol[z, y - 12 : y + 13, x - 12 : x + 13]) > 300


def test_written_pixels_round_trip(tmp_path: Path) -> None:
    hu = np.linspace(-1024, 3071, 2 * 8 * 6).reshape(2, 8, 6).round()
    paths = write_ct_series(hu, spacing=(1.0, 0.5, 0.5), out_dir=tmp_path)
    back = np.stack([pydicom.dcmread(p).pixel_array for p in paths]).astype(float) - 1024
    assert np.array_equal(back, hu)
    image = np.arange(12 * 10, dtype=float).reshape(12, 10) * 30
    for modality in ("DX", "CR"):
        p = write_projection(image, out_dir=tmp_path / modality, modality=modality)
        ds = pydicom.dcmread(p)
        assert ds.Modality == modality
        assert np.array_equal(ds.pixel_array, image.astype(np.uint16))


def test_phantom_is_deterministic_per_seed() -> None:
    assert np.array_equal(sample_chest_ct(3).hu, sample_chest_ct(3).hu)
    assert not np.array_equal(sample_chest_ct(3).hu, sample_chest_ct(4).hu)


def test_wrong_dimensions_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="3 dimensions"):
        write_ct_series(np.zeros((4, 4)), spacing=(1, 1, 1), out_dir=tmp_path)
    with pytest.raises(ValueError, match="2 dimensions"):
        write_projection(np.zeros((2, 4, 4)), out_dir=tmp_path)
