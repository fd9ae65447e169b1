"""The result gate's checks of a Spatial Registration object (PS3.3 A.39, C.20.2, C.12.2).

``node.results.gate.check_results`` runs these on every object of SOP Class Spatial
Registration Storage, after the checks every result gets (identity, attribute conformance):

* the IOD's modules are there: Spatial Registration Series (Modality ``REG``), Frame of
  Reference, Spatial Registration (Content Identification; Registration Sequence), Common
  Instance Reference;
* Frames of Reference: the object's own is the current series' (checked by the common identity
  check); each Registration Sequence item names one Frame of Reference, no two the same; the
  item of the object's own Frame of Reference (the registered one, C.20.2.1.1) holds the
  identity; at least one item registers another Frame of Reference; every image an item
  references lies in that item's Frame of Reference;
* matrices: 16 finite values whose last row is 0 0 0 1, an enumerated type (C.20.2.1.2), and a
  ``RIGID`` matrix is a rotation (orthonormal, determinant +1);
* references: every Referenced Image Sequence item resolves to a known instance (a source or a
  registered series given to the gate) with its SOP Class, and appears in the Common Instance
  Reference module under its own series (and, for another study, under Studies Containing Other
  Referenced Instances with that study's UID).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import numpy as np
from pydicom.dataset import Dataset

from node.errors import ResultError

__all__ = ["REG_REQUIRED", "REG_TYPE2", "check_registration"]

#: Type 1 attributes of the Spatial Registration IOD's own modules (PS3.3 C.20.1, C.20.2,
#: C.7.4.1 Frame of Reference, C.10.2 Content Identification).
REG_REQUIRED = ("FrameOfReferenceUID", "RegistrationSequence", "ContentLabel", "InstanceNumber")
#: Type 2 attributes that must be present (they may be empty).
REG_TYPE2 = ("ContentDescription", "ContentCreatorName", "PositionReferenceIndicator")
_MATRIX_TYPES = ("RIGID", "RIGID_SCALE", "AFFINE")
#: Tolerance of the identity / rotation checks (DS values carry at most 16 characters).
_TOLERANCE = 1e-4

#: ``check(what, item)``: raises ResultError when ``item``'s referenced instance is unknown.
RefCheck = Callable[[str, Dataset], None]


def _matrix(name: str, where: str, item: Dataset) -> np.ndarray:
    """The 4 x 4 matrix of one Matrix Sequence item, checked (finite, affine, typed)."""
    raw = item.get("FrameOfReferenceTransformationMatrix")
    values = [] if raw is None else list(raw) if not isinstance(raw, str | float) else [raw]
    if len(values) != 16:
        raise ResultError(
            f"{name} {where}: Frame of Reference Transformation Matrix has {len(values)} values, "
            "PS3.3 C.20.2.1.1 requires 16"
        )
    try:
        m = np.asarray([float(v) for v in values], dtype=np.float64).reshape(4, 4)
    except (TypeError, ValueError) as exc:
        raise ResultError(f"{name} {where}: matrix value is not a number ({exc})") from exc
    if not np.all(np.isfinite(m)):
        raise ResultError(f"{name} {where}: matrix has a non-finite value")
    if not np.allclose(m[3], (0.0, 0.0, 0.0, 1.0), atol=_TOLERANCE):
        raise ResultError(
            f"{name} {where}: matrix is not affine (last row {list(m[3])}, must be 0 0 0 1)"
        )
    kind = str(item.get("FrameOfReferenceTransformationMatrixType", ""))
    if kind not in _MATRIX_TYPES:
        raise ResultError(
            f"{name} {where}: matrix type '{kind}' is not one of {', '.join(_MATRIX_TYPES)}"
        )
    lin = m[:3, :3]
    if kind == "RIGID" and not (
        np.allclose(lin.T @ lin, np.eye(3), atol=_TOLERANCE) and np.linalg.det(lin) > 0
    ):
        raise ResultError(f"{name} {where}: matrix type RIGID but the matrix is not a rotation")
    return m


def _item_matrix(name: str, where: str, item: Dataset) -> np.ndarray:
    """Product of an item's matrices, in order (C.20.2.1.1)."""
    registrations = item.get("MatrixRegistrationSequence") or []
    if not registrations:
        raise ResultError(f"{name} {where} has no Matrix Registration Sequence")
    out = np.eye(4)
    for r, reg in enumerate(registrations, start=1):
        if not reg.get("RegistrationTypeCodeSequence"):
            raise ResultError(f"{name} {where} registration {r} has no Registration Type Code")
        matrices = reg.get("MatrixSequence") or []
        if not matrices:
            raise ResultError(f"{name} {where} registration {r} has no Matrix Sequence")
        for m_item in matrices:
            out = _matrix(name, where, m_item) @ out
    return out


def _common_references(ds: Dataset, name: str) -> dict[str, tuple[str, str]]:
    """SOP Instance UID -> (series UID, study UID) of the Common Instance Reference module."""
    out: dict[str, tuple[str, str]] = {}

    def add(series_items: Sequence[Dataset], study_uid: str) -> None:
        for series in series_items:
            series_uid = str(series.get("SeriesInstanceUID", ""))
            for ref in series.get("ReferencedInstanceSequence") or []:
                out[str(ref.get("ReferencedSOPInstanceUID", ""))] = (series_uid, study_uid)

    add(ds.get("ReferencedSeriesSequence") or [], str(ds.StudyInstanceUID))
    for study in ds.get("StudiesContainingOtherReferencedInstancesSequence") or []:
        study_uid = str(study.get("StudyInstanceUID", ""))
        if not study_uid or study_uid == str(ds.StudyInstanceUID):
            raise ResultError(
                f"{name}: a Studies Containing Other Referenced Instances item names "
                f"{'no study' if not study_uid else 'its own study'}"
            )
        add(study.get("ReferencedSeriesSequence") or [], study_uid)
    return out


def _check_images(
    ds: Dataset,
    item: Dataset,
    where: str,
    *,
    known: RefCheck,
    headers: Mapping[str, Dataset],
    common: Mapping[str, tuple[str, str]],
) -> None:
    name = _name(ds)
    frame_uid = str(item.FrameOfReferenceUID)
    for ref in item.get("ReferencedImageSequence") or []:
        known(f"{name} {where} image", ref)
        uid = str(ref.ReferencedSOPInstanceUID)
        header = headers.get(uid)
        if header is None:
            continue
        image_frame = str(header.get("FrameOfReferenceUID", ""))
        if image_frame and image_frame != frame_uid:
            raise ResultError(
                f"{name} {where} references image {uid} of Frame of Reference {image_frame}, "
                f"not the item's {frame_uid}"
            )
        expected = (str(header.get("SeriesInstanceUID", "")), str(header.StudyInstanceUID))
        if common.get(uid) != expected:
            raise ResultError(
                f"{name} {where} references image {uid} that the Common Instance Reference "
                f"module does not list under its series {expected[0]} and study {expected[1]}"
            )


def check_registration(ds: Dataset, *, known: RefCheck, headers: Mapping[str, Dataset]) -> None:
    """Check a Spatial Registration object (see the module docstring).

    Parameters
    ----------
    ds
        The object.
    known
        Raises ``ResultError`` when a reference item names an unknown instance or SOP Class.
    headers
        Headers of the instances the object may reference (sources and registered series),
        by SOP Instance UID.

    Raises
    ------
    ResultError
        The first problem found, naming the object and what is wrong.
    """
    name = _name(ds)
    missing = [k for k in REG_TYPE2 if k not in ds]
    if missing:
        raise ResultError(f"{name} lacks Type 2 attribute(s) {', '.join(missing)} (PS3.3 C.20.2)")
    if ds.Modality != "REG":
        raise ResultError(f"{name}: a Spatial Registration's Modality must be REG (C.20.1)")
    own_frame = str(ds.FrameOfReferenceUID)
    common = _common_references(ds, name)
    seen: set[str] = set()
    for n, item in enumerate(ds.RegistrationSequence, start=1):
        where = f"Registration Sequence item {n}"
        frame_uid = str(item.get("FrameOfReferenceUID", ""))
        if not frame_uid:
            raise ResultError(f"{name} {where} has no Frame of Reference UID")
        if frame_uid in seen:
            raise ResultError(f"{name} {where} registers Frame of Reference {frame_uid} twice")
        seen.add(frame_uid)
        matrix = _item_matrix(name, where, item)
        if frame_uid == own_frame and not np.allclose(matrix, np.eye(4), atol=_TOLERANCE):
            raise ResultError(
                f"{name} {where} maps the object's own Frame of Reference with a matrix that is "
                "not the identity"
            )
        _check_images(ds, item, where, known=known, headers=headers, common=common)
    if not seen - {own_frame}:
        raise ResultError(f"{name} registers no Frame of Reference other than its own {own_frame}")


def _name(ds: Dataset) -> str:
    return f"{ds.get('Modality', '?')} {ds.get('SOPInstanceUID', '(no SOP Instance UID)')}"
