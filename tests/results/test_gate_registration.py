"""The result gate on Spatial Registration objects: a good one passes, broken ones are refused
with a precise reason (node/results/gate_registration.py).

Two small CT series of one patient in two studies (prior and current, each its own Frame of
Reference), and the Spatial Registration ainode writes for a known prior -> current affine
(no model: the object is what is under test).
"""

from __future__ import annotations

import copy
import dataclasses
import datetime as dt
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence as DicomSequence

from node.errors import ResultError
from node.imaging.volume import load_volume
from node.results import build_result_files
from node.results.gate import check_results
from node.results.gate_registration import check_registration
from node.results.identity import ResultContext
from node.results.registration import build_spatial_registration
from node.results.sources import SourceSet, load_sources
from node.samples.writers import SamplePatient, write_ct_series
from node.types import Prediction, RegisteredSeries, Registration, Volume

WHEN = dt.datetime(2026, 12, 7, 8, 0, 0)
PRIOR_FOR, CURRENT_FOR = "2.25.3003", "2.25.4003"


@dataclasses.dataclass(frozen=True)
class Pair:
    current: Volume
    prior: Volume
    current_sources: SourceSet
    prior_sources: SourceSet
    current_files: list[Path]


def _series(out: Path, study: str, series: str, frame: str, shift: float) -> list[Path]:
    hu = np.full((5, 12, 12), -800.0, dtype=np.float32)
    hu[:, 4:8, 4:8] = 40.0
    return write_ct_series(
        hu,
        spacing=(2.5, 1.5, 1.5),
        out_dir=out,
        patient=SamplePatient(patient_id="GATE-REG-1"),
        study_uid=study,
        series_uid=series,
        frame_of_reference_uid=frame,
        origin=(-9.0 + shift, -9.0, 10.0),
    )


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory) -> Pair:
    base = tmp_path_factory.mktemp("gate-reg")
    prior_files = _series(base / "prior", "2.25.3001", "2.25.3002", PRIOR_FOR, 4.0)
    current_files = _series(base / "current", "2.25.4001", "2.25.4002", CURRENT_FOR, 0.0)
    return Pair(
        current=load_volume(current_files),
        prior=load_volume(prior_files),
        current_sources=load_sources(current_files),
        prior_sources=load_sources(prior_files),
        current_files=current_files,
    )


def _registration(matrix: np.ndarray, kind: str = "AFFINE") -> Registration:
    return Registration(
        moving_to_fixed=matrix,
        matrix_type=kind,
        model_name="chest-ct-register",
        model_version="1.0.0",
        is_demo=True,
    )


def _good(pair: Pair) -> Dataset:
    matrix = np.eye(4)
    matrix[:3, :3] = np.diag([1.02, 0.98, 1.05])
    matrix[:3, 3] = (-4.0, 1.5, 2.0)
    return build_spatial_registration(
        _registration(matrix),
        fixed=pair.current,
        moving=pair.prior,
        source=pydicom.dcmread(pair.current_files[0], stop_before_pixels=True),
        context=ResultContext(
            job_id="job-gate-reg",
            model_name="chest-ct-register",
            model_version="1.0.0",
            is_demo=True,
            content_datetime=WHEN,
            device_uid="2.25.5151",
        ),
    )


def _check(pair: Pair, ds: Dataset) -> None:
    check_results([ds], pair.current_sources, references=pair.prior_sources)


def test_a_good_registration_passes_the_gate(pair: Pair) -> None:
    _check(pair, _good(pair))


def test_a_registration_prediction_is_written_and_gated(pair: Pair) -> None:
    moving = RegisteredSeries.of(pair.prior)
    prediction = Prediction(
        model_name="chest-ct-register",
        model_version="1.0.0",
        task="registration",
        is_demo=True,
        registration=dataclasses.replace(_registration(np.eye(4), "RIGID"), moving=moving),
    )
    files = build_result_files(
        prediction,
        pair.current,
        pair.current_sources,
        job_id="job-gate-reg-2",
        content_datetime=WHEN,
        references=pair.prior_sources,
    )
    assert [f.dataset.Modality for f in files] == ["REG"]
    back = pydicom.dcmread(pydicom.filebase.DicomBytesIO(files[0].data))
    assert back.RegistrationSequence[1].FrameOfReferenceUID == PRIOR_FOR
    # without the prior's headers the gate cannot resolve the prior images: refused
    with pytest.raises(ResultError, match="not a source instance nor a result of this job"):
        build_result_files(
            prediction,
            pair.current,
            pair.current_sources,
            job_id="job-gate-reg-2",
            content_datetime=WHEN,
        )
    # a registration without its moving series cannot be written
    bare = dataclasses.replace(prediction, registration=_registration(np.eye(4), "RIGID"))
    with pytest.raises(ResultError, match="without its moving .prior. series"):
        build_result_files(
            bare, pair.current, pair.current_sources, job_id="j", content_datetime=WHEN
        )


def _prior_matrix(ds: Dataset) -> Dataset:
    return ds.RegistrationSequence[1].MatrixRegistrationSequence[0].MatrixSequence[0]


def _set_values(values: list[float]) -> Callable[[Dataset], None]:
    def edit(ds: Dataset) -> None:
        _prior_matrix(ds).FrameOfReferenceTransformationMatrix = [f"{v:g}" for v in values]

    return edit


def _rigid_scaled(ds: Dataset) -> None:
    _set_values([1.1, 0, 0, 0, 0, 1, 0, 0, 0, 0, 1, 0, 0, 0, 0, 1])(ds)
    _prior_matrix(ds).FrameOfReferenceTransformationMatrixType = "RIGID"


def _identity_moved(ds: Dataset) -> None:
    m = ds.RegistrationSequence[0].MatrixRegistrationSequence[0].MatrixSequence[0]
    m.FrameOfReferenceTransformationMatrix = [
        "1", "0", "0", "5", "0", "1", "0", "0", "0", "0", "1", "0", "0", "0", "0", "1",
    ]  # fmt: skip


def _same_frame_twice(ds: Dataset) -> None:
    ds.RegistrationSequence[1].FrameOfReferenceUID = CURRENT_FOR


def _only_identity(ds: Dataset) -> None:
    ds.RegistrationSequence = DicomSequence([ds.RegistrationSequence[0]])
    del ds.StudiesContainingOtherReferencedInstancesSequence


def _images_swapped(ds: Dataset) -> None:
    first, second = ds.RegistrationSequence
    first.ReferencedImageSequence, second.ReferencedImageSequence = (
        second.ReferencedImageSequence,
        first.ReferencedImageSequence,
    )


def _prior_not_in_common_references(ds: Dataset) -> None:
    other = ds.StudiesContainingOtherReferencedInstancesSequence[0]
    other.ReferencedSeriesSequence[0].ReferencedInstanceSequence = DicomSequence(
        list(other.ReferencedSeriesSequence[0].ReferencedInstanceSequence)[1:]
    )


def _wrong_class(ds: Dataset) -> None:
    ref = ds.RegistrationSequence[1].ReferencedImageSequence[0]
    ref.ReferencedSOPClassUID = "1.2.840.10008.5.1.4.1.1.4"  # MR Image Storage


def _delete(keyword: str) -> Callable[[Dataset], None]:
    def edit(ds: Dataset) -> None:
        delattr(ds, keyword)

    return edit


def _no_matrix_type(ds: Dataset) -> None:
    _prior_matrix(ds).FrameOfReferenceTransformationMatrixType = "PROJECTIVE"


BROKEN: dict[str, tuple[Callable[[Dataset], None], str]] = {
    "not affine": (
        _set_values([1, 0, 0, 0, 0, 1, 0, 0, 0, 0, 1, 0, 0.5, 0, 0, 1]),
        r"matrix is not affine \(last row",
    ),
    # caught by the attribute-level check (VM), before the REG checks
    "12 values": (
        _set_values([1, 0, 0, 0] * 3),
        "FrameOfReferenceTransformationMatrix has 12 value.s., VM 16 allowed",
    ),
    "RIGID that scales": (_rigid_scaled, "matrix type RIGID but the matrix is not a rotation"),
    "unknown type": (_no_matrix_type, "matrix type 'PROJECTIVE' is not one of"),
    "identity item moved": (_identity_moved, "own Frame of Reference with a matrix that is not"),
    "one frame twice": (_same_frame_twice, f"registers Frame of Reference {CURRENT_FOR} twice"),
    "nothing registered": (_only_identity, "registers no Frame of Reference other than its own"),
    "images in the wrong item": (_images_swapped, "of Frame of Reference .*, not the item's"),
    "prior missing from common references": (
        _prior_not_in_common_references,
        "Common Instance Reference module does not list",
    ),
    "wrong SOP class": (_wrong_class, "with SOP Class 1.2.840.10008.5.1.4.1.1.4, but"),
    "no registration sequence": (
        _delete("RegistrationSequence"),
        "lacks required attribute.s. RegistrationSequence",
    ),
    "no content creator": (_delete("ContentCreatorName"), "Type 2 attribute.s. ContentCreatorName"),
}


@pytest.mark.parametrize("case", sorted(BROKEN))
def test_broken_registrations_are_refused_with_the_reason(pair: Pair, case: str) -> None:
    edit, reason = BROKEN[case]
    ds = copy.deepcopy(_good(pair))
    edit(ds)
    with pytest.raises(ResultError, match=reason):
        _check(pair, ds)


def test_a_registration_in_another_frame_of_reference_is_refused(pair: Pair) -> None:
    ds = _good(pair)
    ds.FrameOfReferenceUID = PRIOR_FOR
    with pytest.raises(ResultError, match=f"has Frame of Reference {PRIOR_FOR}, not the source"):
        _check(pair, ds)


def test_the_prior_images_must_be_known(pair: Pair) -> None:
    with pytest.raises(ResultError, match="not a source instance nor a result of this job"):
        check_results([_good(pair)], pair.current_sources)


def test_a_non_finite_matrix_is_refused(pair: Pair) -> None:
    ds = _good(pair)
    headers = {**pair.current_sources.by_uid, **pair.prior_sources.by_uid}
    # straight to the REG checks: a NaN DS would be refused earlier, as an invalid value
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # pydicom warns that NaN is not a valid DS
        _prior_matrix(ds).FrameOfReferenceTransformationMatrix = ["1"] * 15 + ["NaN"]

    def known(what: str, item: Dataset) -> None:
        return None

    with pytest.raises(ResultError, match="matrix has a non-finite value"):
        check_registration(ds, known=known, headers=headers)
