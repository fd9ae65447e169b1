"""Conformance gate: every result object is checked in-process before delivery.

Checks (a failing object raises ``ResultError`` with the reason; nothing is sent):

* required attributes of the IOD are present and non-empty (PS3.3 Type 1 subsets below);
* identity: same Study Instance UID and Patient module values as the sources, a new series and
  SOP instance, the same Frame of Reference;
* references: SEG derivation/source images and referenced series, SR evidence and every IMAGE /
  COMPOSITE / SCOORD reference, SC and derived Source Image Sequence resolve to a source instance
  (or to another result of the same batch) with the same SOP Class, frame numbers in range;
* frames and geometry: SEG frame count = per-frame items = pixel data length, frame positions
  on source planes; image pixel data length = rows x columns x samples x frames;
* highdicom can parse the SEG and SR back from their encoded file bytes (the bytes that are
  written and sent, so an object that does not encode is blocked too);
* attribute level, as dciodvfy checks it (``node.results.modules.conformance_problems``): every
  element's VR, VM and value, private elements with their creator, Specific Character Set terms,
  Type 1 / 2 attributes of the patient, study, equipment and SOP Common modules and of every item
  of their sequences (Contributing Equipment, copied code and reference sequences);
* Spatial Registration objects (REG): their modules, Frames of Reference, matrices (finite,
  affine, typed) and references, in ``node.results.gate_registration``; the instances of the
  registered (prior) series they reference are given as ``references``.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from io import BytesIO
from pathlib import Path
from typing import Any

import highdicom as hd
import numpy as np
import pydicom
from pydicom.dataset import Dataset

from node.errors import ResultError
from node.imaging.sop_classes import KOS_CLASS, REG_CLASS, SC_CLASS, SEG_CLASS, SR_CLASSES
from node.results.gate_registration import REG_REQUIRED, check_registration
from node.results.modules import conformance_problems
from node.results.sources import SourceSet, load_sources, quiet_highdicom

__all__ = ["check_results", "encode"]

log = logging.getLogger(__name__)


_COMMON = (
    "SOPClassUID",
    "SOPInstanceUID",
    "StudyInstanceUID",
    "SeriesInstanceUID",
    "Modality",
    "Manufacturer",
    "ContentDate",
    "ContentTime",
)
_REQUIRED: dict[str, tuple[str, ...]] = {
    SEG_CLASS: (
        "SegmentSequence",
        "SegmentationType",
        "NumberOfFrames",
        "Rows",
        "Columns",
        "SharedFunctionalGroupsSequence",
        "PerFrameFunctionalGroupsSequence",
        "ReferencedSeriesSequence",
        "FrameOfReferenceUID",
        "DimensionIndexSequence",
        "BitsAllocated",
        "PixelData",
        "ContentLabel",
        "ImageType",
    ),
    SC_CLASS: (
        "Rows",
        "Columns",
        "SamplesPerPixel",
        "PhotometricInterpretation",
        "PixelData",
        "ConversionType",
        "BurnedInAnnotation",
    ),
}
_IMAGE = (
    "Rows",
    "Columns",
    "SamplesPerPixel",
    "PhotometricInterpretation",
    "PixelData",
    "ImageType",
    "BitsAllocated",
)
_SR = (
    "ValueType",
    "ConceptNameCodeSequence",
    "ContentSequence",
    "CompletionFlag",
    "VerificationFlag",
    "CurrentRequestedProcedureEvidenceSequence",
    "ContentTemplateSequence",
)
_KOS = (
    "ValueType",
    "ConceptNameCodeSequence",
    "ContentSequence",
    "CurrentRequestedProcedureEvidenceSequence",
    "ContentTemplateSequence",
)
_PATIENT = ("PatientID", "PatientName", "PatientBirthDate", "PatientSex")


class _Known:
    """Instances a result may reference: sources and the other results of the batch."""

    def __init__(
        self, sources: SourceSet, results: Sequence[Dataset], references: SourceSet | None = None
    ) -> None:
        self.headers: dict[str, Dataset] = dict(sources.by_uid)
        if references is not None:
            self.headers.update(references.by_uid)
        self.classes: dict[str, str] = {u: str(d.SOPClassUID) for u, d in self.headers.items()}
        self.frames: dict[str, int] = {
            u: int(d.get("NumberOfFrames", 1) or 1) for u, d in self.headers.items()
        }
        for ds in results:
            self.classes[str(ds.SOPInstanceUID)] = str(ds.SOPClassUID)
            self.frames[str(ds.SOPInstanceUID)] = int(ds.get("NumberOfFrames", 1) or 1)

    def check(self, what: str, item: Dataset, frames: Sequence[int] = ()) -> None:
        uid = str(item.get("ReferencedSOPInstanceUID", ""))
        if uid not in self.classes:
            raise ResultError(
                f"{what} references SOP instance {uid or '(none)'} that is not a "
                "source instance nor a result of this job"
            )
        cls = str(item.get("ReferencedSOPClassUID", ""))
        if cls != self.classes[uid]:
            raise ResultError(
                f"{what} references {uid} with SOP Class {cls}, "
                f"but the instance is {self.classes[uid]}"
            )
        for f in frames:
            if not 1 <= int(f) <= self.frames[uid]:
                raise ResultError(
                    f"{what} references frame {f} of {uid}, which has {self.frames[uid]} frame(s)"
                )


def encode(ds: Dataset) -> bytes:
    """The DICOM file (PS3.10: preamble, File Meta Information, data set) of ``ds`` as bytes.

    Raises
    ------
    ResultError
        ``ds`` cannot be encoded (e.g. a value that does not fit its VR).
    """
    buf = BytesIO()
    try:
        ds.save_as(buf, enforce_file_format=True)
    except (ValueError, AttributeError, KeyError, TypeError, OverflowError) as exc:
        raise ResultError(f"{_name(ds)} cannot be encoded: {exc}") from exc
    return buf.getvalue()


def _read_back(data: bytes) -> Dataset:
    """A fresh data set parsed from encoded bytes (highdicom may then convert it in place)."""
    return pydicom.dcmread(BytesIO(data))


def _walk(items: Sequence[Dataset]) -> Iterator[Dataset]:
    for item in items:
        yield item
        yield from _walk(item.get("ContentSequence", []))


def _frame_numbers(item: Dataset) -> list[int]:
    value = item.get("ReferencedFrameNumber")
    if value is None or value == "":
        return []
    if isinstance(value, int | str):
        return [int(value)]
    return [int(v) for v in value]


def _name(ds: Dataset) -> str:
    return f"{ds.get('Modality', '?')} {ds.get('SOPInstanceUID', '(no SOP Instance UID)')}"


def _require(ds: Dataset, keywords: Sequence[str]) -> None:
    missing = [k for k in keywords if k not in ds or ds[k].value in (None, "", [])]
    if missing:
        raise ResultError(f"{_name(ds)} lacks required attribute(s) {', '.join(missing)}")


def _identity(ds: Dataset, sources: SourceSet, first: Dataset) -> None:
    if ds.StudyInstanceUID != first.StudyInstanceUID:
        raise ResultError(
            f"{_name(ds)} is in study {ds.StudyInstanceUID}, "
            f"not in the source study {first.StudyInstanceUID}"
        )
    for keyword in _PATIENT:
        if str(ds.get(keyword) or "") != str(first.get(keyword) or ""):
            raise ResultError(f"{_name(ds)}: {keyword} differs from the source (patient identity)")
    if ds.SOPInstanceUID in sources.by_uid:
        raise ResultError(f"{_name(ds)} reuses a source SOP Instance UID")
    source_series = {str(s.SeriesInstanceUID) for s in sources.by_uid.values()}
    if ds.SeriesInstanceUID in source_series:
        raise ResultError(f"{_name(ds)} reuses source series {ds.SeriesInstanceUID}")
    frame_uids = {
        str(s.FrameOfReferenceUID) for s in sources.by_uid.values() if s.get("FrameOfReferenceUID")
    }
    if ds.get("FrameOfReferenceUID") and frame_uids and ds.FrameOfReferenceUID not in frame_uids:
        raise ResultError(
            f"{_name(ds)} has Frame of Reference {ds.FrameOfReferenceUID}, not the source's"
        )


def _pixel_length(ds: Dataset, frames: int) -> None:
    bits = int(ds.BitsAllocated)
    n = int(ds.Rows) * int(ds.Columns) * int(ds.get("SamplesPerPixel", 1)) * frames
    expected = (n + 7) // 8 if bits == 1 else n * bits // 8
    actual = len(ds.PixelData)
    if actual not in (expected, expected + (expected % 2)):
        raise ResultError(
            f"{_name(ds)} Pixel Data has {actual} bytes, expected {expected} for {frames} frame(s)"
        )


def _source_position(src: Dataset, frame: int | None) -> Any:
    if frame is None or "PerFrameFunctionalGroupsSequence" not in src:
        return src.get("ImagePositionPatient")
    fg = src.PerFrameFunctionalGroupsSequence[frame - 1]
    if "PlanePositionSequence" in fg:
        return fg.PlanePositionSequence[0].ImagePositionPatient
    return None


def _check_seg(ds: Dataset, data: bytes, known: _Known, sources: SourceSet) -> None:
    n = int(ds.NumberOfFrames)
    per_frame = ds.PerFrameFunctionalGroupsSequence
    if len(per_frame) != n:
        raise ResultError(f"{_name(ds)} has {n} frames but {len(per_frame)} per-frame items")
    _pixel_length(ds, n)
    numbers = {int(s.SegmentNumber) for s in ds.SegmentSequence}
    for seg_item in ds.SegmentSequence:
        if "RecommendedDisplayCIELabValue" not in seg_item:
            raise ResultError(f"{_name(ds)} segment {seg_item.SegmentNumber} has no display colour")
    for series in ds.ReferencedSeriesSequence:
        for item in series.ReferencedInstanceSequence:
            known.check(f"{_name(ds)} Referenced Series", item)
    for i, fg in enumerate(per_frame, start=1):
        seg_id = (
            fg.SegmentIdentificationSequence[0].ReferencedSegmentNumber
            if ("SegmentIdentificationSequence" in fg)
            else (
                ds.SharedFunctionalGroupsSequence[0]
                .SegmentIdentificationSequence[0]
                .ReferencedSegmentNumber
            )
        )
        if int(seg_id) not in numbers:
            raise ResultError(f"{_name(ds)} frame {i} refers to segment {seg_id} not described")
        if "DerivationImageSequence" not in fg:
            raise ResultError(f"{_name(ds)} frame {i} has no Derivation Image Sequence")
        position = fg.PlanePositionSequence[0].ImagePositionPatient
        for der in fg.DerivationImageSequence:
            for src_item in der.SourceImageSequence:
                frames = _frame_numbers(src_item)
                known.check(f"{_name(ds)} frame {i}", src_item, frames)
                src = sources.by_uid.get(str(src_item.ReferencedSOPInstanceUID))
                if src is None:
                    continue
                expected = _source_position(src, frames[0] if frames else None)
                if expected is not None and not np.allclose(
                    np.asarray(position, dtype=float),
                    np.asarray(expected, dtype=float),
                    atol=0.01,
                ):
                    raise ResultError(
                        f"{_name(ds)} frame {i} lies at {list(position)}, not on "
                        f"its source image at {list(expected)}"
                    )
                if (int(src.Rows), int(src.Columns)) != (int(ds.Rows), int(ds.Columns)):
                    raise ResultError(
                        f"{_name(ds)} has {ds.Rows}x{ds.Columns} pixels, its "
                        f"source {src.Rows}x{src.Columns}"
                    )
    with quiet_highdicom():
        try:
            hd.seg.Segmentation.from_dataset(_read_back(data), copy=False)
        except (ValueError, AttributeError, KeyError, TypeError) as exc:
            raise ResultError(f"{_name(ds)} does not parse as a Segmentation: {exc}") from exc


def _check_sr(ds: Dataset, data: bytes, known: _Known) -> None:
    evidence: set[str] = set()
    for study in ds.CurrentRequestedProcedureEvidenceSequence:
        for series in study.ReferencedSeriesSequence:
            for item in series.ReferencedSOPSequence:
                known.check(f"{_name(ds)} evidence", item)
                evidence.add(str(item.ReferencedSOPInstanceUID))
    for item in _walk(ds.ContentSequence):
        if item.get("ValueType") in ("IMAGE", "COMPOSITE"):
            for ref in item.ReferencedSOPSequence:
                known.check(f"{_name(ds)} content item", ref, _frame_numbers(ref))
                if str(ref.ReferencedSOPInstanceUID) not in evidence:
                    raise ResultError(
                        f"{_name(ds)} references {ref.ReferencedSOPInstanceUID} "
                        "that Current Requested Procedure Evidence does not list"
                    )
    with quiet_highdicom():
        try:
            hd.sr.Comprehensive3DSR.from_dataset(_read_back(data), copy=False)
        except (ValueError, AttributeError, KeyError, TypeError) as exc:
            raise ResultError(f"{_name(ds)} does not parse as an SR: {exc}") from exc


def _check_kos(ds: Dataset, data: bytes, known: _Known) -> None:
    """Key Object Selection (PS3.3 A.35.4): every flagged object is evidence and is known."""
    evidence: set[str] = set()
    for study in ds.CurrentRequestedProcedureEvidenceSequence:
        for series in study.ReferencedSeriesSequence:
            for item in series.ReferencedSOPSequence:
                known.check(f"{_name(ds)} evidence", item)
                evidence.add(str(item.ReferencedSOPInstanceUID))
    for item in _walk(ds.ContentSequence):
        for ref in item.get("ReferencedSOPSequence", []):
            if str(ref.ReferencedSOPInstanceUID) not in evidence:
                raise ResultError(f"{_name(ds)} flags {ref.ReferencedSOPInstanceUID}, not evidence")
    with quiet_highdicom():
        try:
            hd.ko.KeyObjectSelectionDocument.from_dataset(_read_back(data))
        except (ValueError, AttributeError, KeyError, TypeError) as exc:
            raise ResultError(f"{_name(ds)} does not parse as a KOS: {exc}") from exc


def _check_image(ds: Dataset, known: _Known) -> None:
    _pixel_length(ds, int(ds.get("NumberOfFrames", 1) or 1))
    if "SourceImageSequence" not in ds:
        raise ResultError(f"{_name(ds)} has no Source Image Sequence")
    for item in ds.SourceImageSequence:
        known.check(f"{_name(ds)} source image", item, _frame_numbers(item))


def check_results(
    datasets: Sequence[Dataset],
    source_paths: Sequence[Path] | SourceSet,
    *,
    encoded: Sequence[bytes] | None = None,
    references: SourceSet | None = None,
) -> None:
    """Block any object that is not conformant; return quietly when all pass.

    Parameters
    ----------
    datasets
        The result objects of one job (they may reference each other, e.g. SR -> SEG).
    source_paths
        The stored source instances (or their already loaded headers).
    encoded
        The objects' file bytes (``encode``), in the order of ``datasets``, when the caller has
        them already (they are what gets written); default: encoded here.
    references
        Headers of other stored instances a result may reference besides the sources: the
        registered (prior) series of a Spatial Registration.

    Raises
    ------
    ResultError
        The first problem found, naming the object (modality + SOP Instance UID) and the reason.
    """
    sources = source_paths if isinstance(source_paths, SourceSet) else load_sources(source_paths)
    if not sources.by_uid:
        raise ResultError("no source instances to check the results against")
    first = next(iter(sources.by_uid.values()))
    if encoded is not None and len(encoded) != len(datasets):
        raise ResultError(f"{len(encoded)} encoded objects given for {len(datasets)} results")
    known = _Known(sources, datasets, references)
    seen: set[str] = set()
    for n, ds in enumerate(datasets):
        _require(ds, _COMMON)
        if ds.SOPInstanceUID in seen:
            raise ResultError(f"{_name(ds)} appears twice in the results")
        seen.add(str(ds.SOPInstanceUID))
        _identity(ds, sources, first)
        problems = conformance_problems(ds)
        if problems:
            more = f" (and {len(problems) - 3} more)" if len(problems) > 3 else ""
            raise ResultError(f"{_name(ds)} is not conformant: {'; '.join(problems[:3])}{more}")
        cls = str(ds.SOPClassUID)
        if cls == SEG_CLASS:
            _require(ds, _REQUIRED[SEG_CLASS])
            _check_seg(ds, encoded[n] if encoded is not None else encode(ds), known, sources)
        elif cls in SR_CLASSES:
            _require(ds, _SR)
            _check_sr(ds, encoded[n] if encoded is not None else encode(ds), known)
        elif cls == KOS_CLASS:
            _require(ds, _KOS)
            _check_kos(ds, encoded[n] if encoded is not None else encode(ds), known)
        elif cls == REG_CLASS:
            _require(ds, REG_REQUIRED)
            check_registration(ds, known=known.check, headers=known.headers)
        else:
            _require(ds, _REQUIRED.get(cls, _IMAGE))
            _check_image(ds, known)
        log.debug("results.gate_passed", extra={"sop_uid": str(ds.SOPInstanceUID)})
