"""Series -> volumes, from headers only (no pixel is read), by the evidence dcm2niix uses.

A DICOM series often holds more than one volume.  Frames are grouped by what distinguishes
volumes in practice (and in dcm2niix, the field's reference converter):

* image size and orientation (Image Orientation (Patient), PS3.3 C.7.6.2.1.1), clustered within
  1e-3;
* echo number, else echo time (multi-echo);
* image type / frame type (magnitude vs phase, original vs derived);
* diffusion b-value and gradient direction (PS3.3 C.8.13.5.9; GE's private b-value and
  direction tags too);
* temporal position and, for enhanced multi-frame, stack ID and the dimension index values other
  than the in-stack position (PS3.3 C.7.6.17).

Within one group, a slice position that occurs more than once (a second acquisition at the same
positions, time points without a temporal tag, diffusion directions without a readable
direction) starts one volume per repetition, in acquisition order (Acquisition Number,
temporal position, trigger time, Instance Number).

Then each volume's geometry is checked: slices sorted along the normal; positions that drift
linearly off the normal are a gantry tilt (kept as a sheared grid, the angle reported); a gap of
whole missing slices is filled by interpolation when it is small (at most
``MAX_FILLED_PER_GAP`` per gap and ``MAX_FILLED_SHARE`` of the volume), otherwise it is the
volume's ``problem`` ("missing slices").  Localizers are recognised by Image Type (LOCALIZER,
SCOUT...), by their description, and as multi-planar surveys (several orthogonal planes of a few
slices each) even when Image Type does not say so.
"""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from pydicom.dataset import Dataset

from node.errors import ImagingError
from node.imaging.decode import read_before_pixels
from node.imaging.evidence import FrameEvidence, frame_evidence, pixel_problem
from node.imaging.frames import FrameHeader, read_instance
from node.types import SeriesVolume

__all__ = [
    "MAX_FILLED_PER_GAP",
    "MAX_FILLED_SHARE",
    "DroppedInstance",
    "SeriesSplit",
    "orientation_name",
    "split_series",
]

log = logging.getLogger(__name__)

#: A gap of at most this many missing slices in a row is filled by interpolation...
MAX_FILLED_PER_GAP = 2
#: ...when all filled slices together are at most this share of the volume.
MAX_FILLED_SHARE = 0.1
_ORIENTATION_TOLERANCE = 1e-3
_POSITION_TOLERANCE_MM = 1e-3
#: A multi-planar survey: 2+ mutually orthogonal planes, each with at most this many slices.
_SURVEY_MAX_SLICES = 11
_LOCALIZER_TYPES = frozenset({"LOCALIZER", "SCOUT", "TOPOGRAM", "SCANOGRAM", "SURVEY"})
_LOCALIZER_TEXT = re.compile(
    r"(localiz|localis|scout|survey|topogram|scanogram|surview|3[-_ ]?plane|three[-_ ]?plane"
    r"|tri[-_ ]?pilot|(^|[^a-z])loc([^a-z]|$))",
    re.IGNORECASE,
)


@dataclass(frozen=True, slots=True)
class DroppedInstance:
    """An instance left out of every volume, and why (the file stays stored as received)."""

    sop_uid: str  # the file name when the header has no SOP Instance UID
    reason: str


@dataclass(frozen=True, slots=True)
class SeriesSplit:
    """The volumes of one series and the instances that are in none of them."""

    series_uid: str
    volumes: tuple[SeriesVolume, ...]
    dropped: tuple[DroppedInstance, ...] = ()
    frames: Mapping[str, tuple[FrameHeader, ...]] = field(default_factory=dict, repr=False)
    #: instances that are no image (an SR or a document filed in an image series): not part of
    #: any volume, and no reason to refuse the series
    not_images: tuple[DroppedInstance, ...] = ()

    def volume(self, volume_id: str) -> SeriesVolume:
        """The volume called ``volume_id`` (ImagingError if the series has none of that id)."""
        for v in self.volumes:
            if v.volume_id == volume_id:
                return v
        known = ", ".join(v.volume_id for v in self.volumes) or "none"
        raise ImagingError(f"series {self.series_uid} has no volume {volume_id!r} (it has {known})")


def orientation_name(orientation: Sequence[float] | None) -> str:
    """AXIAL, CORONAL or SAGITTAL when the slice normal is within ~35 degrees of that axis,
    else OBLIQUE; NONE without orientation (the same classes as ``dicom_rules``)."""
    if orientation is None or len(orientation) != 6:
        return "NONE"
    normal = np.cross(np.asarray(orientation[:3]), np.asarray(orientation[3:]))
    n = float(np.linalg.norm(normal))
    if n < 1e-6:
        return "NONE"
    axis = int(np.argmax(np.abs(normal)))
    if abs(normal[axis]) / n < 0.8:
        return "OBLIQUE"
    return ("SAGITTAL", "CORONAL", "AXIAL")[axis]


# ---------------------------------------------------------------- geometry
def _cluster_orientations(frames: Sequence[FrameEvidence]) -> list[int]:
    reps: list[np.ndarray[Any, Any]] = []
    out = []
    for f in frames:
        ori = f.header.orientation
        if ori is None:
            out.append(-1)
            continue
        v = np.asarray(ori, dtype=np.float64)
        for k, r in enumerate(reps):
            if float(np.max(np.abs(v - r))) <= _ORIENTATION_TOLERANCE:
                out.append(k)
                break
        else:
            reps.append(v)
            out.append(len(reps) - 1)
    return out


def _normal(ori: Sequence[float]) -> np.ndarray[Any, Any]:
    o = np.asarray(ori, dtype=np.float64)
    n = np.cross(o[:3], o[3:])
    norm = float(np.linalg.norm(n))
    return n / norm if norm > 1e-6 else n


@dataclass(slots=True)
class _Geometry:
    ordered: list[FrameEvidence]
    slice_spacing: float | None
    tilt_degrees: float = 0.0
    filled: int = 0
    problem: str | None = None


def _geometry(frames: list[FrameEvidence]) -> _Geometry:
    first = frames[0].header
    if first.orientation is None or any(f.header.position is None for f in frames):
        if len(frames) == 1:
            return _Geometry(frames, first.slice_thickness)
        return _Geometry(
            frames,
            None,
            problem=f"{len(frames)} frames without plane positions (cine or projection images) "
            "are not a volume",
        )
    normal = _normal(first.orientation)
    if float(np.linalg.norm(normal)) < 0.5:
        return _Geometry(frames, None, problem="ImageOrientationPatient is not two cosines")
    positions = np.asarray([f.header.position for f in frames], dtype=np.float64)
    dist = positions @ normal
    order = np.argsort(dist, kind="stable")
    ordered = [frames[i] for i in order]
    if len(frames) == 1:
        return _Geometry(ordered, first.slice_thickness)
    dist = dist[order]
    steps = np.diff(dist)
    if float(np.min(steps)) < _POSITION_TOLERANCE_MM:
        return _Geometry(ordered, None, problem="duplicate slice positions")
    base = float(np.min(steps))
    ratios = steps / base
    tol = 0.01 + 0.02 / base
    geo = _Geometry(ordered, base)
    if float(np.max(np.abs(ratios - 1.0))) > tol:
        whole = np.rint(ratios)
        if float(np.max(np.abs(ratios - whole))) > max(tol, 0.05):
            geo.problem = (
                f"non-uniform slice spacing ({base:.3f} to {float(np.max(steps)):.3f} mm between "
                "slices)"
            )
            return geo
        missing = int(np.sum(whole - 1))
        total = len(frames) + missing
        if int(np.max(whole)) - 1 <= MAX_FILLED_PER_GAP and missing <= MAX_FILLED_SHARE * total:
            geo.filled = missing
        else:
            k = int(np.argmax(whole))
            geo.problem = (
                f"missing slices: {missing} of {total} absent (largest gap "
                f"{float(steps[k]):.2f} mm after slice {k + 1}, spacing {base:.2f} mm)"
            )
            return geo
    # gantry tilt: positions drift off the normal linearly with the distance along it
    p = positions[order]
    inplane = p - p[0] - np.outer(dist - dist[0], normal)
    drift = float(np.max(np.linalg.norm(inplane, axis=1)))
    span = float(dist[-1] - dist[0])
    if drift > 0.01 * span + 0.1:
        shear = inplane[-1] / span
        fit = np.outer(dist - dist[0], shear)
        if float(np.max(np.linalg.norm(inplane - fit, axis=1))) > 0.05 * drift + 0.1:
            geo.problem = "slice positions do not lie on a line (curved or mixed acquisition)"
            return geo
        geo.tilt_degrees = round(math.degrees(math.atan(float(np.linalg.norm(shear)))), 2)
    return geo


# ---------------------------------------------------------------- the split
def _distinct_positions(frames: Sequence[FrameEvidence]) -> bool:
    seen: set[tuple[int, int, int]] = set()
    for f in frames:
        pos = f.header.position
        if pos is None:
            return len(frames) == 1
        key = tuple(int(round(c / _POSITION_TOLERANCE_MM / 10)) for c in pos)
        if key in seen:
            return False
        seen.add(key)  # type: ignore[arg-type]
    return True


def _repetitions(frames: list[FrameEvidence]) -> list[list[FrameEvidence]]:
    """Split frames whose positions repeat into one list per repetition, in acquisition order."""
    if all(f.header.position is None for f in frames) or _distinct_positions(frames):
        return [frames]
    count: dict[tuple[int, ...], int] = {}
    reps: list[list[FrameEvidence]] = []
    for f in sorted(frames, key=lambda f: f.order):
        pos = f.header.position
        key = (
            tuple(int(round(c / _POSITION_TOLERANCE_MM / 10)) for c in pos)
            if pos is not None
            else (-1,)
        )
        k = count.get(key, 0)
        count[key] = k + 1
        while len(reps) <= k:
            reps.append([])
        reps[k].append(f)
    return reps


def split_series(
    paths: Sequence[Path],
    *,
    read: Mapping[Path, tuple[Dataset, int | None]] | None = None,
) -> SeriesSplit:
    """Split the files of one series into volumes, reading headers only.

    Parameters
    ----------
    paths:
        The stored files of one series.
    read:
        Headers already read with ``node.imaging.decode.read_before_pixels``, by path.

    Returns
    -------
    SeriesSplit
        The volumes (in a stable order: orientation group, then distinguishing values, then
        repetition) and the instances left out (unreadable header, undecodable pixel data as far
        as the header shows, duplicate SOP Instance UID).
    """
    read_in = _read_frames(paths, read or {})
    frames = read_in.frames
    if not frames:
        return SeriesSplit(
            read_in.series_uid, (), tuple(read_in.dropped), not_images=tuple(read_in.not_images)
        )
    raw = _labelled_groups(frames)
    # orientation distinguishes only when the series has several
    n_clusters = len({c for _, _, c in raw})
    volumes = _volumes(read_in.series_uid, read_in.modality, read_in.body_part, raw, n_clusters)
    return SeriesSplit(
        read_in.series_uid,
        tuple(v for v, _ in volumes),
        tuple(read_in.dropped),
        frames={v.volume_id: tuple(f.header for f in fs) for v, fs in volumes},
        not_images=tuple(read_in.not_images),
    )


@dataclass
class _ReadFrames:
    """The frames of a series' image instances, and the instances left out, in file order."""

    frames: list[FrameEvidence] = field(default_factory=list)
    dropped: list[DroppedInstance] = field(default_factory=list)
    not_images: list[DroppedInstance] = field(default_factory=list)
    series_uid: str = ""
    modality: str | None = None
    body_part: str | None = None


def _read_frames(
    paths: Sequence[Path], known: Mapping[Path, tuple[Dataset, int | None]]
) -> _ReadFrames:
    out = _ReadFrames()
    seen: set[tuple[str, int | None]] = set()
    for path in paths:
        path = Path(path)
        try:
            ds, offset = known.get(path) or read_before_pixels(path)
            if "Rows" not in ds or "Columns" not in ds:
                sop = str(ds.get("SOPInstanceUID") or path.name)
                out.not_images.append(DroppedInstance(sop, "no image (no Rows/Columns)"))
                continue
            inst = read_instance(path, (ds, offset))
        except ImagingError as exc:
            out.dropped.append(DroppedInstance(path.name, str(exc)))
            continue
        sop = inst.frames[0].sop_uid if inst.frames else path.name
        problem = pixel_problem(path, ds, offset)
        if problem is not None:
            out.dropped.append(DroppedInstance(sop, problem))
            continue
        out.series_uid = out.series_uid or inst.series_uid
        out.modality = out.modality or inst.modality
        out.body_part = out.body_part or inst.body_part
        shared_seq = ds.get("SharedFunctionalGroupsSequence")
        shared = shared_seq[0] if shared_seq else None
        per_frame = ds.get("PerFrameFunctionalGroupsSequence")
        for fh in inst.frames:
            if (fh.sop_uid, fh.frame_index) in seen:
                out.dropped.append(
                    DroppedInstance(fh.sop_uid, f"{path.name}: same SOP instance twice")
                )
                break
            seen.add((fh.sop_uid, fh.frame_index))
            pf = (
                per_frame[fh.frame_index]
                if per_frame is not None and fh.frame_index is not None
                else None
            )
            out.frames.append(frame_evidence(ds, fh, pf, shared))
    return out


def _labelled_groups(
    frames: list[FrameEvidence],
) -> list[tuple[dict[str, str], list[FrameEvidence], int]]:
    """Group frames by size, orientation and distinguishing values, split repetitions, and
    label each group with what tells it apart; each with its orientation cluster."""
    clusters = _cluster_orientations(frames)
    groups: dict[tuple[Any, ...], list[FrameEvidence]] = {}
    for f, c in zip(frames, clusters, strict=True):
        key = (
            f.header.rows,
            f.header.columns,
            f.header.samples_per_pixel,
            c,
            *sorted(f.facts.items()),
        )
        groups.setdefault(key, []).append(f)
    raw: list[tuple[dict[str, str], list[FrameEvidence], int]] = []
    ranked: list[tuple[tuple[Any, ...], list[FrameEvidence]]] = sorted(
        groups.items(), key=lambda kv: (kv[0][3], min(f.order for f in kv[1]), _sort_key(kv[0]))
    )
    for gkey, members in ranked:
        cluster = int(gkey[3])
        reps = _repetitions(members)
        for r, rep in enumerate(reps):
            label = dict(rep[0].facts)
            if len(reps) > 1:
                acqs = {int(f.order[0]) for f in rep}
                label["rep"] = str(r + 1)
                if len(acqs) == 1 and len({int(f.order[0]) for f in members}) == len(reps):
                    label.pop("rep")
                    label["acq"] = str(next(iter(acqs)))
            if (rep[0].header.rows, rep[0].header.columns) != (
                frames[0].header.rows,
                frames[0].header.columns,
            ):
                label["size"] = f"{rep[0].header.columns}x{rep[0].header.rows}"
            raw.append((label, rep, cluster))
    return raw


def _sort_key(key: tuple[Any, ...]) -> tuple[Any, ...]:
    out: list[Any] = list(key[:4])
    for k, v in key[4:]:
        try:
            n: float | None = float(v.split(",")[0]) if isinstance(v, str) else None
        except ValueError:
            n = None
        out.append((k, 0 if n is not None else 1, n if n is not None else 0.0, v))
    return tuple(out)


def _volumes(
    series_uid: str,
    modality: str | None,
    body_part: str | None,
    raw: list[tuple[dict[str, str], list[FrameEvidence], int]],
    n_clusters: int,
) -> list[tuple[SeriesVolume, list[FrameEvidence]]]:
    orient = {c: orientation_name(fs[0].header.orientation) for _, fs, c in raw}
    labels = []
    for label, _fs, c in raw:
        lab = dict(label)
        if n_clusters > 1:
            ori = orient[c]
            same = [k for k, v in orient.items() if v == ori]
            lab = {"plane": ori if len(same) == 1 else f"{ori}{same.index(c) + 1}", **lab}
        labels.append(lab)
    # keep only the keys whose values differ between volumes (the identity stays short)
    varying = {k for lab in labels for k in lab if len({str(x.get(k)) for x in labels}) > 1}
    survey = _is_survey(raw, orient)
    out: list[tuple[SeriesVolume, list[FrameEvidence]]] = []
    for (_, fs, c), lab in zip(raw, labels, strict=True):
        ident = tuple((k, v) for k, v in lab.items() if k in varying)
        geo = _geometry(fs)
        h = geo.ordered[0].header
        localizer = _localizer_reason(geo.ordered[0], survey)
        vid = series_uid if not ident else series_uid + "/" + ";".join(f"{k}={v}" for k, v in ident)
        vol = SeriesVolume(
            volume_id=vid,
            series_uid=series_uid,
            label=ident,
            modality=modality,
            body_part=body_part,
            orientation=orient[c],
            rows=h.rows,
            columns=h.columns,
            slices=len(fs) + geo.filled,
            pixel_spacing=h.pixel_spacing,
            slice_spacing=geo.slice_spacing,
            slice_thickness=h.slice_thickness,
            image_type=geo.ordered[0].image_type,
            echo_number=geo.ordered[0].echo_number,
            b_value=geo.ordered[0].b_value,
            is_localizer=localizer is not None,
            localizer_reason=localizer,
            tilt_degrees=geo.tilt_degrees,
            filled_slices=geo.filled,
            problem=geo.problem,
            sources=tuple(
                (
                    f.header.sop_uid,
                    None if f.header.frame_index is None else f.header.frame_index + 1,
                )
                for f in geo.ordered
            ),
        )
        out.append((vol, geo.ordered))
    return out


def _is_survey(
    raw: list[tuple[dict[str, str], list[FrameEvidence], int]], orient: Mapping[int, str]
) -> bool:
    """Several mutually orthogonal planes of a few slices each: a multi-planar survey."""
    planes = {c for _, _, c in raw if c >= 0}
    if len(planes) < 2:
        return False
    normals = {}
    for _, fs, c in raw:
        if c >= 0:
            if len(fs) > _SURVEY_MAX_SLICES:
                return False
            ori = fs[0].header.orientation
            assert ori is not None
            normals[c] = _normal(ori)
    keys = sorted(normals)
    orthogonal = any(
        abs(float(normals[a] @ normals[b])) < 0.3 for i, a in enumerate(keys) for b in keys[i + 1 :]
    )
    return orthogonal


def _localizer_reason(f: FrameEvidence, survey: bool) -> str | None:
    hit = _LOCALIZER_TYPES.intersection(f.image_type)
    if hit:
        return f"ImageType {sorted(hit)[0]}"
    if survey:
        return "multi-planar survey (orthogonal planes of a few slices each)"
    if f.text.strip() and _LOCALIZER_TEXT.search(f.text):
        return "described as a localizer"
    return None


def frames_of(split: SeriesSplit, volume_id: str) -> tuple[FrameHeader, ...]:
    """The frame headers of one volume of ``split``, in slice order."""
    try:
        return split.frames[volume_id]
    except KeyError:
        split.volume(volume_id)  # raises with the known ids
        raise
