"""Series files -> ``Volume``: voxels in physical units, geometry, per-slice source references.

Cross-sectional images (CT, MR, PT, NM... single-frame or enhanced multi-frame) are ordered by
the projection of Image Position (Patient) on the slice normal (row cosine x column cosine,
PS3.3 C.7.6.2.1.1), never by Instance Number.  Enhanced multi-frame geometry comes from the
Plane Position / Plane Orientation / Pixel Measures functional groups, per-frame first, then
shared (PS3.3 C.7.6.16).  Projection radiographs (CR, DX, MG...) and single ultrasound frames
become 2D volumes (``is_3d=False``, one slice).

Pixel values:

* Rescale Slope/Intercept (PS3.3 C.11.1.1.2; Pixel Value Transformation functional group for
  enhanced objects) are applied, so CT voxels are Hounsfield units.
* ``dtype="auto"`` keeps an exact ``int16`` volume when every slope and intercept is an integer
  and every value fits (the usual CT case); otherwise the volume is ``float32``.  ``int16`` keeps
  the peak memory of a 300x512x512 CT near one int16 volume; ``float32`` alone is already twice it.
* MONOCHROME1 is inverted within the stored bit range before rescaling, so that higher values are
  always brighter (PS3.3 C.7.6.3.1.2).
* Colour (RGB, YBR after pydicom's conversion) becomes luminance, ITU-R BT.601
  ``0.299 R + 0.587 G + 0.114 B`` as float32: a ``Volume`` has one channel.

Streaming: headers are read first (no pixel data), the geometry is checked, the output array is
allocated once, then frames are decoded one at a time straight into their slot.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any, Literal

import numpy as np
import numpy.typing as npt
from pydicom.dataset import Dataset

from node.errors import ImagingError
from node.imaging.decode import decode_frame, read_before_pixels
from node.imaging.frames import MAX_VOLUME_VOXELS, FrameHeader, InstanceHeader, read_instance
from node.types import SourceRef, Volume

__all__ = ["dicom_files", "load_volume"]

log = logging.getLogger(__name__)

#: Orientation cosines may differ by this much and still count as the same plane.
_ORIENTATION_TOLERANCE = 1e-3
#: Two slices closer than this (mm) along the normal are duplicates.
_DUPLICATE_TOLERANCE_MM = 1e-3
#: Slice gaps may deviate from the median by this share of it (plus 0.02 mm) before it is an error.
_SPACING_TOLERANCE = 0.01
_LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)


def dicom_files(paths: Iterable[Path]) -> list[Path]:
    """Expand directories (recursively) into their regular files, sorted; files pass through.

    Inside directories, hidden files and media directories (``DICOMDIR``, PS3.10 8.6) are skipped.
    """
    out: list[Path] = []
    for p in paths:
        if p.is_dir():
            out.extend(
                sorted(
                    f
                    for f in p.rglob("*")
                    if f.is_file() and not f.name.startswith(".") and f.name.upper() != "DICOMDIR"
                )
            )
        elif p.is_file():
            out.append(p)
        else:
            raise ImagingError(f"{p}: no such file or directory")
    return out


def _one(values: set[str], what: str) -> str:
    if len(values) > 1:
        shown = ", ".join(sorted(values)[:3])
        raise ImagingError(
            f"mixed {what}s in one series ({len(values)}: {shown}...); "
            f"send the files of one series only"
        )
    return next(iter(values))


def _check_uniform(frames: Sequence[FrameHeader]) -> None:
    sizes = {(f.rows, f.columns) for f in frames}
    if len(sizes) > 1:
        raise ImagingError(f"varying image size in one series: {sorted(sizes)} (rows, columns)")
    samples = {f.samples_per_pixel for f in frames}
    if len(samples) > 1:
        raise ImagingError(f"varying Samples per Pixel in one series: {sorted(samples)}")


def _where(f: FrameHeader) -> str:
    return f.sop_uid if f.frame_index is None else f"{f.sop_uid} frame {f.frame_index + 1}"


def _geometry(
    frames: Sequence[FrameHeader],
) -> tuple[list[FrameHeader], tuple[float, float, float], npt.NDArray[np.float64]]:
    """Sort cross-sectional frames along the slice normal and check the grid is regular.

    Returns the sorted frames, the spacing (slice, row, column) and the direction matrix.
    """
    first = frames[0]
    assert first.orientation is not None
    ori0 = np.asarray(first.orientation, dtype=np.float64)
    for f in frames[1:]:
        assert f.orientation is not None
        if np.max(np.abs(np.asarray(f.orientation) - ori0)) > _ORIENTATION_TOLERANCE:
            raise ImagingError(
                f"mixed orientation in one series: SOP instance {f.sop_uid} has "
                f"ImageOrientationPatient {list(f.orientation)}, first slice {list(ori0)}; "
                "a volume needs parallel slices (localizer or multi-planar series?)"
            )
    row_cos, col_cos = ori0[:3], ori0[3:]
    normal = np.cross(row_cos, col_cos)
    if not math.isclose(float(np.linalg.norm(normal)), 1.0, abs_tol=1e-2):
        raise ImagingError(f"ImageOrientationPatient {list(ori0)} is not two orthonormal cosines")
    normal /= np.linalg.norm(normal)
    spacings = {f.pixel_spacing for f in frames}
    if None in spacings:
        raise ImagingError("a cross-sectional image has no PixelSpacing; its geometry is unknown")
    if len(spacings) > 1:
        raise ImagingError(f"varying PixelSpacing in one series: {sorted(spacings)}")  # type: ignore[type-var]
    pixel_spacing = next(iter(spacings))
    assert pixel_spacing is not None
    positions = np.asarray([f.position for f in frames], dtype=np.float64)
    dist = positions @ normal
    order = np.argsort(dist, kind="stable")
    dist = dist[order]
    ordered = [frames[i] for i in order]
    if len(ordered) > 1:
        steps = np.diff(dist)
        dup = int(np.argmin(steps))
        if steps[dup] < _DUPLICATE_TOLERANCE_MM:
            raise ImagingError(
                f"duplicate slice position {dist[dup]:.3f} mm along the normal "
                f"(SOP {_where(ordered[dup])} and SOP {_where(ordered[dup + 1])}); "
                "repeated acquisitions (time points, echoes) must be loaded one volume at a time"
            )
        step = float(np.median(steps))
        worst = int(np.argmax(np.abs(steps - step)))
        if abs(steps[worst] - step) > _SPACING_TOLERANCE * step + 0.02:
            raise ImagingError(
                f"non-uniform slice spacing: {steps[worst]:.3f} mm between slices {worst} and "
                f"{worst + 1} where the series has {step:.3f} mm (missing slices?); "
                "send the complete series"
            )
        inplane = positions[order] - positions[order[0]] - np.outer(dist - dist[0], normal)
        drift = float(np.max(np.linalg.norm(inplane, axis=1)))
        if drift > 0.01 * (dist[-1] - dist[0]) + 0.1:
            raise ImagingError(
                f"slice positions drift {drift:.2f} mm off the slice normal (gantry tilt or "
                "sheared acquisition); such series are not supported"
            )
        slice_spacing = step
    else:
        slice_spacing = ordered[0].slice_thickness or 1.0
    direction = np.stack([row_cos, col_cos, normal]).astype(np.float64)
    return ordered, (slice_spacing, pixel_spacing[0], pixel_spacing[1]), direction


def _to_gray(frame: npt.NDArray[Any], f: FrameHeader) -> npt.NDArray[Any]:
    if f.samples_per_pixel == 3:
        if frame.ndim != 3 or frame.shape[-1] != 3:
            raise ImagingError(f"SOP instance {f.sop_uid}: expected RGB frame, got {frame.shape}")
        return frame.astype(np.float32) @ _LUMA
    if frame.shape != (f.rows, f.columns):
        raise ImagingError(
            f"SOP instance {f.sop_uid}: decoded frame has shape {frame.shape}, "
            f"header says {(f.rows, f.columns)}"
        )
    if f.is_monochrome1:
        lo, hi = f.stored_range
        frame = (lo + hi) - frame.astype(np.int64)
    return frame


def _is_integral(value: float) -> bool:
    return float(value).is_integer()


def load_volume(
    paths: Sequence[Path],
    *,
    dtype: Literal["auto", "float32"] = "auto",
    read: Mapping[Path, tuple[Dataset, int | None]] | None = None,
    volume_id: str | None = None,
) -> Volume:
    """Load one series (single-frame files or enhanced multi-frame instances) as a ``Volume``.

    Parameters
    ----------
    paths:
        The files of one series (use ``dicom_files`` to expand directories).
    dtype:
        ``"auto"``: int16 when rescaling is exact in int16 (typical CT, in HU), else float32.
        ``"float32"``: always float32.
    read:
        Headers the caller already read with ``node.imaging.decode.read_before_pixels``, by path
        (the job pipeline reads them once for the volume and the result objects); the others are
        read here. A single-frame file's pixel data is decoded from the file either way.
    volume_id:
        Load only this volume of the series (``node.imaging.split.split_series``): the series may
        hold several (echoes, time points...); a small gap is filled by linear interpolation
        between its neighbours (each filled slice refers to the nearer acquired one) and a
        gantry tilt is kept as a sheared grid (the third direction row is the slice step).
        None: the whole series must be one regular volume.

    Returns
    -------
    Volume
        ``voxels`` (slices, rows, columns) in physical units, spacing (slice, row, column) in mm,
        origin of the first voxel, direction rows = row cosine, column cosine, slice normal
        (PS3.3 C.7.6.2.1.1), and one ``SourceRef`` per slice (frame_number 1-based for
        multi-frame instances, PS3.3 C.7.6.6).

    Raises
    ------
    ImagingError
        Mixed series/studies, mixed orientation, duplicate or unevenly spaced slices, varying
        image size, a multi-frame object without plane positions (cine), no pixel data, or an
        undecodable transfer syntax; the message names the problem.
    """
    if not paths:
        raise ImagingError("no files given")
    known = read or {}
    if volume_id is not None:
        return _load_split_volume(paths, dtype=dtype, read=known, volume_id=volume_id)
    headers = [read_instance(Path(p), known.get(Path(p))) for p in paths]
    series_uid = _one({h.series_uid for h in headers}, "Series Instance UID")
    _one({h.study_uid for h in headers}, "Study Instance UID")
    frames = [f for h in headers for f in h.frames]
    _check_uniform(frames)
    has_geometry = [f.position is not None and f.orientation is not None for f in frames]
    if all(has_geometry):
        ordered, spacing, direction = _geometry(frames)
        origin = ordered[0].position
        assert origin is not None
        is_3d = len(ordered) > 1
    elif any(has_geometry):
        raise ImagingError("some images of the series have plane positions and some do not")
    elif len(frames) == 1:
        ordered = frames
        f = frames[0]
        row_sp, col_sp = f.pixel_spacing or (1.0, 1.0)
        spacing = (f.slice_thickness or 1.0, row_sp, col_sp)
        origin = (0.0, 0.0, 0.0)
        direction = np.eye(3, dtype=np.float64)
        is_3d = False
    else:
        raise ImagingError(
            f"{len(frames)} frames without plane positions (cine loop or several projection "
            "images) do not form a volume; send one image"
        )
    voxels = _decode_into(frames, ordered, dtype=dtype, series_uid=series_uid)
    h0 = headers[0]
    return _volume(voxels, ordered, spacing, origin, direction, h0, is_3d=is_3d)


def _decode_into(
    frames: Sequence[FrameHeader],
    ordered: Sequence[FrameHeader],
    *,
    dtype: Literal["auto", "float32"],
    series_uid: str,
) -> npt.NDArray[Any]:
    """Decode ``frames`` (file order) into an array in the order of ``ordered``."""
    first = ordered[0]
    exact = all(
        f.samples_per_pixel == 1 and _is_integral(f.slope) and _is_integral(f.intercept)
        for f in ordered
    )
    out_dtype = np.int16 if dtype == "auto" and exact else np.float32
    if len(ordered) * first.rows * first.columns > MAX_VOLUME_VOXELS:
        raise ImagingError(
            f"series {series_uid}: {len(ordered)} slices of {first.rows} x {first.columns} exceed "
            f"the limit of {MAX_VOLUME_VOXELS} voxels per volume; refusing to allocate them"
        )
    voxels: npt.NDArray[Any] = np.empty((len(ordered), first.rows, first.columns), out_dtype)
    slot = {(f.path, f.frame_index): k for k, f in enumerate(ordered)}
    info = np.iinfo(np.int16)
    for f in frames:  # file order: each file is opened once per frame, frames decoded one by one
        raw = decode_frame(
            f.path,
            index=f.frame_index,
            sop_uid=f.sop_uid,
            transfer_syntax_uid=f.transfer_syntax_uid,
            header=f.header,
            pixel_offset=f.pixel_offset,
        )
        gray = _to_gray(raw, f)
        k = slot[(f.path, f.frame_index)]
        if voxels.dtype == np.int16:
            hu = gray.astype(np.int32) * int(f.slope) + int(f.intercept)
            if hu.size and (hu.min() < info.min or hu.max() > info.max):
                log.info("imaging.promote_float32", extra={"series_uid": series_uid})
                voxels = voxels.astype(np.float32)
                voxels[k] = hu
            else:
                voxels[k] = hu
        else:
            voxels[k] = gray.astype(np.float32) * np.float32(f.slope) + np.float32(f.intercept)
        del raw, gray
    log.debug(
        "imaging.volume_loaded",
        extra={"series_uid": series_uid, "slices": len(ordered), "dtype": str(voxels.dtype)},
    )
    return voxels


def _volume(
    voxels: npt.NDArray[Any],
    ordered: Sequence[FrameHeader],
    spacing: tuple[float, float, float],
    origin: Sequence[float],
    direction: npt.NDArray[np.float64],
    h0: InstanceHeader,
    *,
    is_3d: bool,
) -> Volume:
    study_uid, series_uid = h0.study_uid, h0.series_uid
    return Volume(
        voxels=voxels,
        spacing=(float(spacing[0]), float(spacing[1]), float(spacing[2])),
        origin=(float(origin[0]), float(origin[1]), float(origin[2])),
        direction=direction,
        sources=tuple(
            SourceRef(
                sop_uid=f.sop_uid,
                sop_class_uid=f.sop_class_uid,
                frame_number=None if f.frame_index is None else f.frame_index + 1,
            )
            for f in ordered
        ),
        study_uid=study_uid,
        series_uid=series_uid,
        modality=h0.modality,
        body_part=h0.body_part,
        frame_of_reference_uid=h0.frame_of_reference_uid,
        is_3d=is_3d,
        study_date=h0.study_date,
    )


def _load_split_volume(
    paths: Sequence[Path],
    *,
    dtype: Literal["auto", "float32"],
    read: Mapping[Path, tuple[Dataset, int | None]],
    volume_id: str,
) -> Volume:
    from node.imaging.split import frames_of, split_series

    known = dict(read)
    for p in paths:
        if Path(p) not in known:
            try:
                known[Path(p)] = read_before_pixels(Path(p))
            except ImagingError:
                continue  # named among the split's dropped instances
    split = split_series(paths, read=known)
    chosen = split.volume(volume_id)
    if chosen.problem is not None:
        raise ImagingError(f"volume {volume_id}: {chosen.problem}")
    ordered = list(frames_of(split, volume_id))
    first = ordered[0]
    h0 = read_instance(Path(first.path), known.get(Path(first.path)))
    file_order = sorted(ordered, key=lambda f: (str(f.path), f.frame_index or 0))
    voxels = _decode_into(file_order, ordered, dtype=dtype, series_uid=split.series_uid)
    row_sp, col_sp = first.pixel_spacing or (1.0, 1.0)
    if first.position is None or first.orientation is None:
        spacing = (first.slice_thickness or 1.0, row_sp, col_sp)
        return _volume(voxels, ordered, spacing, (0.0, 0.0, 0.0), np.eye(3), h0, is_3d=False)
    ori = np.asarray(first.orientation, dtype=np.float64)
    normal = np.cross(ori[:3], ori[3:])
    normal /= np.linalg.norm(normal)
    if len(ordered) == 1:
        spacing = (first.slice_thickness or 1.0, row_sp, col_sp)
        direction = np.stack([ori[:3], ori[3:], normal])
        return _volume(voxels, ordered, spacing, first.position, direction, h0, is_3d=False)
    pos = np.asarray([f.position for f in ordered], dtype=np.float64)
    dist = (pos - pos[0]) @ normal
    step_along = float(chosen.slice_spacing or (dist[-1] / (len(ordered) - 1)))
    # the slice axis: the mean step between positions (tilted when they drift off the normal)
    axis = (pos[-1] - pos[0]) / float(dist[-1]) * step_along
    filled_at: tuple[int, ...] = ()
    if chosen.filled_slices:
        target = np.arange(chosen.slices, dtype=np.float64) * step_along
        idx = np.clip(np.searchsorted(dist, target - 1e-6), 1, len(ordered) - 1)
        lo, hi = idx - 1, idx
        w = (target - dist[lo]) / (dist[hi] - dist[lo])
        w = np.clip(w, 0.0, 1.0)
        filled = (
            voxels[lo].astype(np.float32) * (1 - w)[:, None, None]
            + voxels[hi].astype(np.float32) * w[:, None, None]
        )
        voxels = filled if voxels.dtype == np.float32 else np.rint(filled).astype(voxels.dtype)
        ordered = [ordered[int(lo[k] if w[k] < 0.5 else hi[k])] for k in range(len(target))]
        # a target slice more than 1 % of a step from every acquired one is interpolated
        nearest = np.min(np.abs(target[:, None] - dist[None, :]), axis=1)
        filled_at = tuple(int(k) for k in np.flatnonzero(nearest > 0.01 * abs(step_along)))
        log.info(
            "imaging.gap_filled",
            extra={"series_uid": split.series_uid, "filled_slices": chosen.filled_slices},
        )
    spacing_slice = float(np.linalg.norm(axis))
    direction = np.stack([ori[:3], ori[3:], axis / spacing_slice])
    volume = _volume(
        voxels, ordered, (spacing_slice, row_sp, col_sp), first.position, direction, h0, is_3d=True
    )
    return replace(volume, filled_slices=filled_at) if filled_at else volume
