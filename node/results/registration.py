"""Spatial Registration objects (PS3.3 A.39) of an affine prior -> current registration.

highdicom has no Spatial Registration builder, so the object is written with pydicom:

- Frame of Reference module: the current (fixed) series' Frame of Reference: the registered
  coordinate system RCS_A of PS3.3 C.20.2.1.1;
- Spatial Registration module (C.20.2): one Registration Sequence item per Frame of Reference,
  the current one with the identity matrix (type RIGID, DCM 125021 "Frame of Reference
  Identity") and the prior one with the matrix that maps prior patient coordinates onto current
  ones (type RIGID, RIGID_SCALE or AFFINE as the matrix is; DCM 125024 "Image Content-based
  Alignment"); codes from pydicom's CID 7100 "RCS Registration Method Type" table;
- Common Instance Reference module (C.12.2): every instance of both series, the prior's under
  Studies Containing Other Referenced Instances when it belongs to another study.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence as DicomSequence
from pydicom.sr.codedict import codes
from pydicom.uid import UID, ExplicitVRLittleEndian, SpatialRegistrationStorage
from pydicom.valuerep import format_number_as_ds

from node.errors import ResultError
from node.results.identity import DEMO_STATEMENT, ResultContext
from node.types import RegisteredSeries, Registration, Volume

__all__ = ["build_spatial_registration", "read_registration_matrix"]

#: Patient and General Study module attributes copied from the current series (PS3.3 C.7.1.1,
#: C.7.2.1); the Type 2 ones are written empty when the source has none.
_COPIED = (
    "SpecificCharacterSet",
    "PatientName",
    "PatientID",
    "IssuerOfPatientID",
    "PatientBirthDate",
    "PatientSex",
    "StudyInstanceUID",
    "StudyDate",
    "StudyTime",
    "ReferringPhysicianName",
    "StudyID",
    "AccessionNumber",
    "StudyDescription",
    "PositionReferenceIndicator",
)
_TYPE2 = (
    "PatientName",
    "PatientID",
    "PatientBirthDate",
    "PatientSex",
    "StudyDate",
    "StudyTime",
    "ReferringPhysicianName",
    "StudyID",
    "AccessionNumber",
    "PositionReferenceIndicator",
)


def _code_item(code: object) -> Dataset:
    item = Dataset()
    item.CodeValue = code.value  # type: ignore[attr-defined]  # pydicom.sr.coding.Code
    item.CodingSchemeDesignator = code.scheme_designator  # type: ignore[attr-defined]
    item.CodeMeaning = code.meaning  # type: ignore[attr-defined]
    return item


def _matrix_item(
    matrix: npt.NDArray[np.float64], matrix_type: str, method: object, comment: str
) -> Dataset:
    values = np.asarray(matrix, dtype=np.float64)
    if values.shape != (4, 4) or not np.all(np.isfinite(values)):
        raise ResultError(f"registration matrix must be a finite 4 x 4 matrix, got {values.shape}")
    if not np.allclose(values[3], (0.0, 0.0, 0.0, 1.0)):
        raise ResultError("registration matrix is not affine: its last row must be 0 0 0 1")
    if matrix_type not in ("RIGID", "RIGID_SCALE", "AFFINE"):
        raise ResultError(f"unknown matrix type '{matrix_type}'; RIGID, RIGID_SCALE or AFFINE")
    m = Dataset()
    m.FrameOfReferenceTransformationMatrix = [format_number_as_ds(float(v)) for v in values.ravel()]
    m.FrameOfReferenceTransformationMatrixType = matrix_type
    reg = Dataset()
    reg.RegistrationTypeCodeSequence = DicomSequence([_code_item(method)])
    reg.FrameOfReferenceTransformationComment = comment[:64]  # LO
    reg.MatrixSequence = DicomSequence([m])
    return reg


def _instance_refs(volume: Volume | RegisteredSeries) -> DicomSequence:
    refs = []
    seen: set[str] = set()
    for src in volume.sources:
        if src.sop_uid in seen:
            continue
        seen.add(src.sop_uid)
        ref = Dataset()
        ref.ReferencedSOPClassUID = src.sop_class_uid
        ref.ReferencedSOPInstanceUID = src.sop_uid
        refs.append(ref)
    return DicomSequence(refs)


def _series_item(volume: Volume | RegisteredSeries) -> Dataset:
    item = Dataset()
    item.SeriesInstanceUID = volume.series_uid
    item.ReferencedInstanceSequence = _instance_refs(volume)
    return item


def build_spatial_registration(
    registration: Registration,
    *,
    fixed: Volume,
    moving: Volume | RegisteredSeries,
    source: Dataset,
    context: ResultContext,
    index: int = 0,
) -> Dataset:
    """The Spatial Registration object of ``registration`` (moving = prior, fixed = current).

    Parameters
    ----------
    registration
        The moving -> fixed affine (patient mm) and its matrix type.
    fixed, moving
        The two volumes (or the moving series' references, ``RegisteredSeries``): UIDs,
        Frames of Reference and the instances of each series.
    source
        Header of a current (fixed) instance: patient and study attributes are copied from it.
    context
        Result identity (UIDs, series naming, algorithm equipment).
    index
        Index of the object among the job's results.

    Returns
    -------
    pydicom.dataset.Dataset
        A Spatial Registration Storage instance in the current study, new series.

    Raises
    ------
    ResultError
        A volume has no Frame of Reference UID, both share one, or the matrix is not affine.
    """
    fixed_for = fixed.frame_of_reference_uid
    moving_for = moving.frame_of_reference_uid
    if not fixed_for or not moving_for:
        role = "current" if not fixed_for else "prior"
        raise ResultError(
            f"the {role} series has no Frame of Reference UID; a spatial registration needs both"
        )
    if fixed_for == moving_for:
        raise ResultError(
            "prior and current series share one Frame of Reference; they need no registration"
        )
    ds = Dataset()
    sop_uid = context.uid(index, "sop")
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = SpatialRegistrationStorage
    meta.MediaStorageSOPInstanceUID = UID(sop_uid)
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta = meta
    for keyword in _COPIED:
        if keyword in source and source[keyword].value not in (None, ""):
            ds[keyword] = source[keyword]
        elif keyword in _TYPE2:
            setattr(ds, keyword, "")
    ds.StudyInstanceUID = fixed.study_uid
    ds.SOPClassUID = SpatialRegistrationStorage
    ds.SOPInstanceUID = sop_uid
    ds.Modality = "REG"
    ds.SeriesInstanceUID = context.uid(index, "series")
    ds.SeriesNumber = context.series_number(index)
    ds.SeriesDate = context.content_date
    ds.SeriesTime = context.content_time
    ds.FrameOfReferenceUID = fixed_for
    ds.InstanceNumber = 1
    ds.ContentLabel = "PRIOR_TO_CURRENT"
    description = "Affine registration of the prior onto the current series"
    if registration.is_demo:
        description = f"{DEMO_STATEMENT}. {description}"
    ds.ContentDescription = description[:64]
    ds.ContentCreatorName = ""
    ds.ContentDate = context.content_date
    ds.ContentTime = context.content_time
    # Referenced Image Sequence (Type 1C, "may be present otherwise"): the images each matrix
    # applies to; the Common Instance Reference module then describes exactly these instances.
    identity = Dataset()
    identity.FrameOfReferenceUID = fixed_for
    identity.ReferencedImageSequence = _instance_refs(fixed)
    identity.MatrixRegistrationSequence = DicomSequence(
        [
            _matrix_item(
                np.eye(4),
                "RIGID",
                codes.DCM.FrameOfReferenceIdentity,
                "current series: the registered Frame of Reference",
            )
        ]
    )
    prior = Dataset()
    prior.FrameOfReferenceUID = moving_for
    prior.ReferencedImageSequence = _instance_refs(moving)
    prior.MatrixRegistrationSequence = DicomSequence(
        [
            _matrix_item(
                registration.moving_to_fixed,
                registration.matrix_type,
                codes.DCM.ImageContentBasedAlignment,
                f"prior onto current: {registration.model_name} {registration.model_version}"
                + (" DEMO" if registration.is_demo else ""),
            )
        ]
    )
    ds.RegistrationSequence = DicomSequence([identity, prior])
    same_study = [_series_item(fixed)]
    if moving.study_uid == fixed.study_uid:
        same_study.append(_series_item(moving))
    else:
        other = Dataset()
        other.StudyInstanceUID = moving.study_uid
        other.ReferencedSeriesSequence = DicomSequence([_series_item(moving)])
        ds.StudiesContainingOtherReferencedInstancesSequence = DicomSequence([other])
    ds.ReferencedSeriesSequence = DicomSequence(same_study)
    context.finish(ds, source, kind="reg", image=False)
    return ds


def read_registration_matrix(ds: Dataset, frame_of_reference_uid: str) -> npt.NDArray[np.float64]:
    """The 4 x 4 matrix of a Spatial Registration that maps ``frame_of_reference_uid`` onto the
    object's own Frame of Reference (PS3.3 C.20.2.1.1; several matrices are multiplied in order).

    Raises
    ------
    ResultError
        The object registers no such Frame of Reference.
    """
    for item in ds.get("RegistrationSequence", []):
        if item.get("FrameOfReferenceUID") != frame_of_reference_uid:
            continue
        out = np.eye(4)
        for reg in item.MatrixRegistrationSequence:
            for m in reg.MatrixSequence:
                values = [float(v) for v in m.FrameOfReferenceTransformationMatrix]
                out = np.asarray(values, dtype=np.float64).reshape(4, 4) @ out
        return out
    raise ResultError(
        f"spatial registration registers no Frame of Reference {frame_of_reference_uid}"
    )
