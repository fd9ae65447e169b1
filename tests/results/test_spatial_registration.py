"""Spatial Registration objects of a prior -> current registration: dciodvfy, read-back, errors.

A synthetic follow-up pair (``node.samples.followup``: known prior -> current affine and
landmarks) is written as two CT series of one patient in two studies, loaded back through
``node.imaging``, registered by the demo model, and the result written as a Spatial Registration.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from pathlib import Path

import numpy as np
import pydicom
import pytest

from node.errors import ResultError
from node.imaging.volume import load_volume
from node.models.builtin._common import load_metrics
from node.models.builtin.ct_register import ChestCtRegistration, matrix_type
from node.results.gate import encode
from node.results.identity import ResultContext
from node.results.registration import build_spatial_registration, read_registration_matrix
from node.samples.followup import FollowupPair, make_followup_pair
from node.samples.writers import write_ct_series
from node.types import Registration, Volume
from tests.results.conftest import run_tool

WHEN = dt.datetime(2026, 12, 7, 7, 0, 0)
SEED = 7_100_003


@dataclasses.dataclass(frozen=True)
class Written:
    pair: FollowupPair
    prior: Volume
    current: Volume
    current_files: list[Path]
    prior_files: list[Path]


def _write(
    phantom_hu: np.ndarray, spacing: tuple[float, float, float], out: Path, **uids: str
) -> list[Path]:
    n = phantom_hu.shape[0]
    # the writer's slice 0 is the most cranial; the phantom's slice k lies at z = k * spacing
    return write_ct_series(
        phantom_hu[::-1],
        spacing=spacing,
        out_dir=out,
        origin=(-170.0, -170.0, (n - 1) * spacing[0]),
        **uids,
    )


@pytest.fixture(scope="module")
def written(tmp_path_factory: pytest.TempPathFactory) -> Written:
    pair = make_followup_pair(SEED, spacing=(3.0, 2.5, 2.5))
    base = tmp_path_factory.mktemp("followup")
    prior_files = _write(
        pair.prior.hu,
        pair.prior.spacing,
        base / "prior",
        study_uid="2.25.1001",
        series_uid="2.25.1002",
        frame_of_reference_uid="2.25.1003",
    )
    current_files = _write(
        pair.current.hu,
        pair.current.spacing,
        base / "current",
        study_uid="2.25.2001",
        series_uid="2.25.2002",
        frame_of_reference_uid="2.25.2003",
    )
    return Written(
        pair=pair,
        prior=load_volume(prior_files),
        current=load_volume(current_files),
        current_files=current_files,
        prior_files=prior_files,
    )


def _context(registration: Registration) -> ResultContext:
    return ResultContext(
        job_id="job-reg-1",
        model_name=registration.model_name,
        model_version=registration.model_version,
        is_demo=registration.is_demo,
        content_datetime=WHEN,
        device_uid="2.25.424242",
    )


def _sro(written: Written, registration: Registration) -> pydicom.Dataset:
    return build_spatial_registration(
        registration,
        fixed=written.current,
        moving=written.prior,
        source=pydicom.dcmread(written.current_files[0], stop_before_pixels=True),
        context=_context(registration),
    )


def _mapped_tre(matrix: np.ndarray, pair: FollowupPair) -> np.ndarray:
    mapped = pair.landmarks_prior @ matrix[:3, :3].T + matrix[:3, 3]
    return np.linalg.norm(mapped - pair.landmarks_current, axis=1)


def test_model_registration_as_dicom_passes_dciodvfy_and_maps_landmarks(
    written: Written, tmp_path: Path, checker_tools: Path
) -> None:
    registration = ChestCtRegistration().register(written.prior, written.current)
    sro = _sro(written, registration)
    path = tmp_path / "reg.dcm"
    path.write_bytes(encode(sro))
    out = run_tool(checker_tools, "check-dicom", path)
    assert "0 error(s)" in out.splitlines()[-1], out
    sources = (written.current_files[0].parent, written.prior_files[0].parent)
    run_tool(checker_tools, "check-refs", "--sources", sources[0], "--sources", sources[1], path)

    back = pydicom.dcmread(path)
    assert back.SOPClassUID == pydicom.uid.SpatialRegistrationStorage
    assert back.Modality == "REG"
    assert back.StudyInstanceUID == "2.25.2001"  # the current study
    assert back.FrameOfReferenceUID == "2.25.2003"
    assert back.PatientID == pydicom.dcmread(written.prior_files[0]).PatientID
    np.testing.assert_allclose(read_registration_matrix(back, "2.25.2003"), np.eye(4))
    matrix = read_registration_matrix(back, "2.25.1003")
    item = back.RegistrationSequence[1].MatrixRegistrationSequence[0]
    assert item.MatrixSequence[0].FrameOfReferenceTransformationMatrixType == matrix_type(matrix)
    code = item.RegistrationTypeCodeSequence[0]
    assert (code.CodeValue, code.CodingSchemeDesignator) == ("125024", "DCM")
    # every instance of both series is referenced: the current's in this study, the prior's
    # under its own study
    current_refs = {
        r.ReferencedSOPInstanceUID
        for r in back.ReferencedSeriesSequence[0].ReferencedInstanceSequence
    }
    assert current_refs == {pydicom.dcmread(p).SOPInstanceUID for p in written.current_files}
    other = back.StudiesContainingOtherReferencedInstancesSequence[0]
    assert other.StudyInstanceUID == "2.25.1001"
    prior_series = other.ReferencedSeriesSequence[0]
    assert prior_series.SeriesInstanceUID == "2.25.1002"
    assert len(prior_series.ReferencedInstanceSequence) == len(written.prior_files)
    # the matrix read back from the file maps prior landmarks onto the current ones
    before = _mapped_tre(np.eye(4), written.pair)
    tre = _mapped_tre(matrix, written.pair)
    limit = load_metrics("chest-ct-register")["thresholds"]["tre_p95_mm"]
    assert np.median(tre) < np.median(before) / 2, (tre, before)
    assert np.max(tre) <= 1.5 * limit, (written.pair.landmark_names, tre)


def test_known_transform_round_trips_through_the_object(written: Written) -> None:
    truth = written.pair.prior_to_current
    registration = Registration(
        moving_to_fixed=truth,
        matrix_type=matrix_type(truth),
        model_name="ground-truth",
        model_version="1",
        is_demo=False,
    )
    back = pydicom.dcmread(pydicom.filebase.DicomBytesIO(encode(_sro(written, registration))))
    matrix = read_registration_matrix(back, "2.25.1003")
    np.testing.assert_allclose(matrix, truth, atol=1e-6)
    assert _mapped_tre(matrix, written.pair).max() < 0.01
    assert matrix_type(truth) == "AFFINE"  # breathing-like scaling is not rigid


def test_matrix_types_follow_the_matrix() -> None:
    rot = np.eye(4)
    rot[:3, :3] = [[0.0, -1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0]]
    rot[:3, 3] = [5.0, -3.0, 2.0]
    assert matrix_type(rot) == "RIGID"
    scaled = rot.copy()
    scaled[:3, :3] *= 1.05
    assert matrix_type(scaled) == "RIGID_SCALE"
    sheared = rot.copy()
    sheared[0, 2] = 0.1
    assert matrix_type(sheared) == "AFFINE"
    mirrored = np.diag([-1.0, 1.0, 1.0, 1.0])
    assert matrix_type(mirrored) == "AFFINE"


def test_bad_registrations_are_refused_with_the_reason(written: Written) -> None:
    good = Registration(
        moving_to_fixed=np.eye(4),
        matrix_type="RIGID",
        model_name="m",
        model_version="1",
        is_demo=True,
    )
    source = pydicom.dcmread(written.current_files[0], stop_before_pixels=True)
    no_for = dataclasses.replace(written.prior, frame_of_reference_uid=None)
    with pytest.raises(ResultError, match="prior series has no Frame of Reference UID"):
        build_spatial_registration(
            good, fixed=written.current, moving=no_for, source=source, context=_context(good)
        )
    with pytest.raises(ResultError, match="share one Frame of Reference"):
        build_spatial_registration(
            good,
            fixed=written.current,
            moving=written.current,
            source=source,
            context=_context(good),
        )
    projective = np.eye(4)
    projective[3, 0] = 0.5
    bad = dataclasses.replace(good, moving_to_fixed=projective)
    with pytest.raises(ResultError, match="last row must be 0 0 0 1"):
        build_spatial_registration(
            bad, fixed=written.current, moving=written.prior, source=source, context=_context(bad)
        )
    nan = dataclasses.replace(good, moving_to_fixed=np.full((4, 4), np.nan))
    with pytest.raises(ResultError, match="finite 4 x 4"):
        build_spatial_registration(
            nan, fixed=written.current, moving=written.prior, source=source, context=_context(nan)
        )
    sro = _sro(written, good)
    with pytest.raises(ResultError, match="registers no Frame of Reference 2.25.9"):
        read_registration_matrix(sro, "2.25.9")
