"""Per-frame header facts of one instance: what is needed to place and rescale each 2D frame.

Single-frame images take geometry from the top-level Image Plane module (PS3.3 C.7.6.2);
enhanced multi-frame images from the Plane Position / Plane Orientation / Pixel Measures /
Pixel Value Transformation functional groups, per-frame first, then shared (PS3.3 C.7.6.16).
Ultrasound without Pixel Spacing takes it from the Sequence of Ultrasound Regions (C.8.5.5).
Only headers are read here; pixels are decoded later, frame by frame (node/imaging/decode.py).
"""

from __future__ import annotations

import logging
import math
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydicom.dataset import Dataset
from pydicom.errors import BytesLengthException

from node.errors import ImagingError
from node.imaging.decode import read_before_pixels

__all__ = [
    "MAX_FRAME_PIXELS",
    "MAX_VOLUME_VOXELS",
    "FrameHeader",
    "InstanceHeader",
    "read_instance",
]

log = logging.getLogger(__name__)

#: Largest frame decoded (16384 x 16384): headers are sender-controlled, so Rows x Columns is
#: checked before anything is allocated (65535 x 65535 would be 8 GiB at 16 bits).
MAX_FRAME_PIXELS = 1 << 28
#: Largest volume assembled (2^31 voxels, e.g. 8000 slices of 512 x 512): 4 GiB as int16.
MAX_VOLUME_VOXELS = 1 << 31


@dataclass(frozen=True, slots=True)
class FrameHeader:
    """Everything needed to place one 2D frame, read from headers only."""

    path: Path
    sop_uid: str
    sop_class_uid: str
    transfer_syntax_uid: str
    frame_index: int | None  # 0-based for multi-frame instances, None for single-frame
    rows: int
    columns: int
    position: tuple[float, float, float] | None
    orientation: tuple[float, ...] | None
    pixel_spacing: tuple[float, float] | None
    slice_thickness: float | None
    slope: float
    intercept: float
    samples_per_pixel: int
    is_monochrome1: bool
    stored_range: tuple[int, int]
    header: Dataset | None = field(default=None, compare=False, repr=False)  # single-frame only
    pixel_offset: int | None = None


@dataclass(frozen=True, slots=True)
class InstanceHeader:
    """Identity of one instance and the header facts of each of its frames."""

    study_uid: str
    series_uid: str
    modality: str | None
    body_part: str | None
    frame_of_reference_uid: str | None
    is_multiframe: bool
    frames: tuple[FrameHeader, ...]
    study_date: str | None = None  # Study Date (0008,0020), YYYYMMDD


def _floats(value: Any, n: int, what: str, sop_uid: str) -> tuple[float, ...] | None:
    if value is None:
        return None
    try:
        out = tuple(float(v) for v in value)
    except (TypeError, ValueError) as exc:
        raise ImagingError(f"SOP instance {sop_uid}: {what} is not numeric") from exc
    if len(out) != n or not all(math.isfinite(v) for v in out):
        raise ImagingError(f"SOP instance {sop_uid}: {what} must be {n} finite numbers")
    return out


def _item(ds: Dataset | None, keyword: str) -> Dataset | None:
    """First item of sequence ``keyword`` in ``ds``, or None."""
    if ds is None:
        return None
    seq = ds.get(keyword)
    return seq[0] if seq else None


def _from_groups(
    per_frame: Dataset | None, shared: Dataset | None, sequence: str, keyword: str
) -> Any:
    """A functional-group attribute: per-frame group first, then shared (PS3.3 C.7.6.16)."""
    for group in (per_frame, shared):
        item = _item(group, sequence)
        if item is not None and keyword in item:
            return item.get(keyword)
    return None


def _stored_range(ds: Dataset) -> tuple[int, int]:
    bits = int(ds.get("BitsStored") or ds.get("BitsAllocated") or 16)
    if int(ds.get("PixelRepresentation") or 0) == 1:
        return -(1 << (bits - 1)), (1 << (bits - 1)) - 1
    return 0, (1 << bits) - 1


def read_instance(path: Path, read: tuple[Dataset, int | None] | None = None) -> InstanceHeader:
    """Read the header of one file (no pixel data) into per-frame facts.

    ``read`` is what ``read_before_pixels(path)`` returned when the caller already read it.

    Raises
    ------
    ImagingError
        Not DICOM, no image (no Rows/Columns), or invalid values (the message names them).
    """
    ds, pixel_offset = read if read is not None else read_before_pixels(path)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")  # pydicom converts values lazily and warns on bad VRs
        try:
            return _parse_instance(path, ds, pixel_offset)
        except (
            ValueError,
            TypeError,
            AttributeError,
            KeyError,
            IndexError,
            BytesLengthException,  # a value whose length does not fit its VR
            NotImplementedError,  # an element with an unknown VR
        ) as exc:
            raise ImagingError(f"{path.name}: invalid image header: {exc}") from exc
        finally:
            for w in caught:
                log.debug(
                    "imaging.header_warning", extra={"file": path.name, "warning": str(w.message)}
                )


def _check_size(sop_uid: str, *, rows: int, columns: int, frames: int, samples: int) -> None:
    """Refuse declared sizes that are empty or too large to allocate (PS3.3 C.7.6.3.1)."""
    if rows < 1 or columns < 1 or frames < 1 or samples not in (1, 3):
        raise ImagingError(
            f"SOP instance {sop_uid}: invalid image size (Rows {rows}, Columns {columns}, "
            f"Number of Frames {frames}, Samples per Pixel {samples})"
        )
    if rows * columns * samples > MAX_FRAME_PIXELS:
        raise ImagingError(
            f"SOP instance {sop_uid}: declared frame of {rows} x {columns} x {samples} exceeds "
            f"the limit of {MAX_FRAME_PIXELS} pixels per frame; refusing to allocate it"
        )
    if rows * columns * samples * frames > MAX_VOLUME_VOXELS:
        raise ImagingError(
            f"SOP instance {sop_uid}: declared {frames} frames of {rows} x {columns} exceed "
            f"the limit of {MAX_VOLUME_VOXELS} voxels per volume; refusing to allocate them"
        )


def _grid_positions(ds: Dataset, sop_uid: str, n_frames: int) -> list[tuple[float, ...]] | None:
    """Frame positions of a multi-frame grid placed by Grid Frame Offset Vector (RT Dose).

    PS3.3 C.8.8.3.2: when the first offset is 0 the offsets are distances along the normal of
    the image plane from Image Position (Patient) (relative); otherwise they are the frames' z
    coordinates, which the standard allows only for axial planes (absolute).  None when the
    instance has no such vector (or it does not hold one offset per frame: the frames then keep
    the single position, and the split reports them).
    """
    vector = ds.get("GridFrameOffsetVector")
    if vector is None or n_frames < 2:
        return None
    values = [vector] if isinstance(vector, float | int) else list(vector)
    if len(values) != n_frames:
        return None
    offsets = _floats(values, n_frames, "GridFrameOffsetVector", sop_uid)
    origin = _floats(ds.get("ImagePositionPatient"), 3, "ImagePositionPatient", sop_uid)
    ori = _floats(ds.get("ImageOrientationPatient"), 6, "ImageOrientationPatient", sop_uid)
    if offsets is None or origin is None or ori is None:
        return None
    if offsets[0] == 0.0:
        normal = (
            ori[1] * ori[5] - ori[2] * ori[4],
            ori[2] * ori[3] - ori[0] * ori[5],
            ori[0] * ori[4] - ori[1] * ori[3],
        )
        return [tuple(o + d * n for o, n in zip(origin, normal, strict=True)) for d in offsets]
    return [(origin[0], origin[1], d) for d in offsets]


def _parse_instance(path: Path, ds: Dataset, pixel_offset: int | None) -> InstanceHeader:
    sop_uid = str(ds.get("SOPInstanceUID") or "")
    if not sop_uid:
        raise ImagingError(f"{path.name}: no SOP Instance UID")
    if "Rows" not in ds or "Columns" not in ds:
        raise ImagingError(f"SOP instance {sop_uid} holds no image (no Rows/Columns)")
    ts_uid = str(getattr(ds.file_meta, "TransferSyntaxUID", "") or "")
    rows, columns = int(ds.Rows), int(ds.Columns)
    n_frames = int(ds.get("NumberOfFrames") or 1)
    samples = int(ds.get("SamplesPerPixel") or 1)
    _check_size(sop_uid, rows=rows, columns=columns, frames=n_frames, samples=samples)
    mono1 = str(ds.get("PhotometricInterpretation") or "").upper() == "MONOCHROME1"
    stored = _stored_range(ds)
    shared = _item(ds, "SharedFunctionalGroupsSequence")
    per_frames = ds.get("PerFrameFunctionalGroupsSequence")
    is_multiframe = "NumberOfFrames" in ds
    if per_frames is not None and len(per_frames) != n_frames:
        raise ImagingError(
            f"SOP instance {sop_uid}: {len(per_frames)} per-frame functional groups "
            f"for {n_frames} frames"
        )

    def spacing_of(value: Any) -> tuple[float, float] | None:
        sp = _floats(value, 2, "PixelSpacing", sop_uid)
        return None if sp is None else (sp[0], sp[1])

    top_spacing = _top_pixel_spacing(ds)
    grid = _grid_positions(ds, sop_uid, n_frames) if per_frames is None else None
    dose_scaling = ds.get("DoseGridScaling") if "RescaleSlope" not in ds else None
    frames: list[FrameHeader] = []
    for i in range(n_frames):
        pf = per_frames[i] if per_frames is not None else None
        pos, ori, psp, thk, slope, icpt = _frame_values(
            ds,
            pf,
            shared,
            grid_position=grid[i] if grid is not None else None,
            dose_scaling=dose_scaling,
            top_spacing=top_spacing,
        )
        position = _floats(pos, 3, "ImagePositionPatient", sop_uid)
        frames.append(
            FrameHeader(
                path=path,
                sop_uid=sop_uid,
                sop_class_uid=str(ds.get("SOPClassUID") or ""),
                transfer_syntax_uid=ts_uid,
                frame_index=i if is_multiframe else None,
                rows=rows,
                columns=columns,
                position=None if position is None else (position[0], position[1], position[2]),
                orientation=_floats(ori, 6, "ImageOrientationPatient", sop_uid),
                pixel_spacing=spacing_of(psp),
                slice_thickness=float(thk) if thk not in (None, "") else None,
                slope=float(slope) if slope not in (None, "") else 1.0,
                intercept=float(icpt) if icpt not in (None, "") else 0.0,
                samples_per_pixel=samples,
                is_monochrome1=mono1,
                stored_range=stored,
                header=None if is_multiframe else ds,
                pixel_offset=None if is_multiframe else pixel_offset,
            )
        )
    return InstanceHeader(
        study_uid=str(ds.get("StudyInstanceUID") or ""),
        series_uid=str(ds.get("SeriesInstanceUID") or ""),
        modality=str(ds.Modality) if ds.get("Modality") else None,
        body_part=str(ds.BodyPartExamined) if ds.get("BodyPartExamined") else None,
        frame_of_reference_uid=str(ds.FrameOfReferenceUID)
        if ds.get("FrameOfReferenceUID")
        else None,
        is_multiframe=is_multiframe,
        frames=tuple(frames),
        study_date=str(ds.StudyDate) if ds.get("StudyDate") else None,
    )


def _top_pixel_spacing(ds: Dataset) -> Any:
    """Pixel Spacing, else Imager Pixel Spacing, else an ultrasound region's physical deltas
    in cm (PS3.3 C.8.5.5.1.15: physical units code 3), in mm."""
    top_spacing = ds.get("PixelSpacing") or ds.get("ImagerPixelSpacing")
    region = _item(ds, "SequenceOfUltrasoundRegions") if top_spacing is None else None
    if (
        region is not None
        and region.get("PhysicalUnitsXDirection") == 3
        and region.get("PhysicalUnitsYDirection") == 3
    ):
        top_spacing = [float(region.PhysicalDeltaY) * 10.0, float(region.PhysicalDeltaX) * 10.0]
    return top_spacing


def _frame_values(
    ds: Dataset,
    pf: Dataset | None,
    shared: Dataset | None,
    *,
    grid_position: Any,
    dose_scaling: Any,
    top_spacing: Any,
) -> tuple[Any, Any, Any, Any, Any, Any]:
    """One frame's position, orientation, pixel spacing, thickness, slope and intercept: its
    functional groups first, then the grid (RT Dose) and the top-level attributes."""
    if pf is not None or shared is not None:
        pos = _from_groups(pf, shared, "PlanePositionSequence", "ImagePositionPatient")
        ori = _from_groups(pf, shared, "PlaneOrientationSequence", "ImageOrientationPatient")
        psp = _from_groups(pf, shared, "PixelMeasuresSequence", "PixelSpacing")
        thk = _from_groups(pf, shared, "PixelMeasuresSequence", "SliceThickness")
        slope = _from_groups(pf, shared, "PixelValueTransformationSequence", "RescaleSlope")
        icpt = _from_groups(pf, shared, "PixelValueTransformationSequence", "RescaleIntercept")
    else:
        pos = ori = psp = thk = slope = icpt = None
    if pos is None and grid_position is not None:
        pos = grid_position
    if slope is None and dose_scaling not in (None, ""):
        slope = dose_scaling  # RT Dose: dose = stored value x Dose Grid Scaling (C.8.8.3)
    pos = pos if pos is not None else ds.get("ImagePositionPatient")
    ori = ori if ori is not None else ds.get("ImageOrientationPatient")
    psp = psp if psp is not None else top_spacing
    thk = thk if thk is not None else ds.get("SliceThickness")
    slope = slope if slope is not None else ds.get("RescaleSlope")
    icpt = icpt if icpt is not None else ds.get("RescaleIntercept")
    return pos, ori, psp, thk, slope, icpt
