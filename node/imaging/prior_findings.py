"""Nodules of a prior study read back from ainode's own TID 1500 SR of it (issue 21 §3).

ainode's SR (``node/results/sr.py``) gives each finding measurement groups (PS3.16 TID 1500
row 8, TID 1410/1411) that share one Tracking Identifier (DCM 112039) and Tracking Unique
Identifier (DCM 112040).  Read here, per tracking UID:

* the centre: a SCOORD3D POINT in the prior series' Frame of Reference, else the middle of the
  first SCOORD (the outline drawn round the centre, or the long-axis line through it) on an image
  of the prior series, turned into patient coordinates with that series' geometry;
* the Long axis NUM (SCT 103339001) as the diameter and the Volume NUM (SCT 118565006).

Groups with a Time Point (UMLS C2348792) context are measurements of an earlier study that the
SR repeats (docs/followup.md), not findings of the SR's own study, and are skipped.  Only findings
whose type is Nodule (SCT 27925004) are read.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pydicom
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError

from node.types import PriorFinding, Volume

__all__ = ["read_prior_findings"]

log = logging.getLogger(__name__)

_MEASUREMENT_GROUP = ("125007", "DCM")
_TRACKING_ID = ("112039", "DCM")
_TRACKING_UID = ("112040", "DCM")
_TIME_POINT = ("C2348792", "UMLS")
_FINDING = ("121071", "DCM")
_NODULE = ("27925004", "SCT")
_LONG_AXIS = ("103339001", "SCT")
_VOLUME = ("118565006", "SCT")


def _concept(item: Dataset, key: str = "ConceptNameCodeSequence") -> tuple[str, str] | None:
    seq = item.get(key)
    if not seq:
        return None
    code = seq[0]
    return str(code.get("CodeValue", "")), str(code.get("CodingSchemeDesignator", ""))


def _walk(items: Sequence[Dataset]) -> Iterator[Dataset]:
    for item in items:
        yield item
        yield from _walk(item.get("ContentSequence", []))


@dataclass
class _Nodule:
    tracking_id: str = ""
    center_xyz: tuple[float, float, float] | None = None
    diameter_mm: float | None = None
    volume_mm3: float | None = None
    is_nodule: bool = False
    points: list[tuple[float, float, float]] = field(default_factory=list)


class _Geometry:
    """Where a SCOORD on an image of the prior series lies in patient coordinates."""

    def __init__(self, volume: Volume) -> None:
        self.volume = volume
        self.slices = {(s.sop_uid, s.frame_number): k for k, s in enumerate(volume.sources)}

    def point(self, item: Dataset) -> tuple[float, float, float] | None:
        """Patient (x, y, z) of the middle of a SCOORD item's points, or None."""
        refs = [c for c in item.get("ContentSequence", []) if c.get("ValueType") == "IMAGE"]
        if not refs or not refs[0].get("ReferencedSOPSequence"):
            return None
        ref = refs[0].ReferencedSOPSequence[0]
        frames = ref.get("ReferencedFrameNumber")
        frame = int(frames[0] if isinstance(frames, Sequence) else frames) if frames else None
        k = self.slices.get((str(ref.ReferencedSOPInstanceUID), frame))
        if k is None:
            return None
        pts = np.asarray(item.GraphicData, dtype=np.float64).reshape(-1, 2)
        if len(pts) > 2 and np.allclose(pts[0], pts[-1]):
            pts = pts[:-1]  # a closed outline repeats its first point
        col, row = pts.mean(axis=0) - 0.5  # pixel (c, r) has its centre at (c + .5, r + .5)
        v = self.volume
        d = np.asarray(v.direction, dtype=np.float64)
        pos = (
            np.asarray(v.origin, dtype=np.float64)
            + col * v.spacing[2] * d[0]
            + row * v.spacing[1] * d[1]
            + k * v.spacing[0] * d[2]
        )
        return float(pos[0]), float(pos[1]), float(pos[2])


def _number(item: Dataset) -> float | None:
    seq = item.get("MeasuredValueSequence")
    if not seq or "NumericValue" not in seq[0]:
        return None
    return float(seq[0].NumericValue)


def _read_group(group: Dataset, nodule: _Nodule, geometry: _Geometry) -> None:
    """Fold one measurement group's items into ``nodule``."""
    for item in _walk(group.get("ContentSequence", [])):
        concept, kind = _concept(item), item.get("ValueType")
        if concept == _TRACKING_ID and kind == "TEXT":
            nodule.tracking_id = str(item.TextValue)
        elif concept == _FINDING and kind == "CODE":
            nodule.is_nodule = nodule.is_nodule or _concept(item, "ConceptCodeSequence") == _NODULE
        elif kind == "NUM" and concept == _LONG_AXIS and nodule.diameter_mm is None:
            nodule.diameter_mm = _number(item)
        elif kind == "NUM" and concept == _VOLUME and nodule.volume_mm3 is None:
            nodule.volume_mm3 = _number(item)
        elif kind == "SCOORD3D" and nodule.center_xyz is None:
            frame = str(item.get("ReferencedFrameOfReferenceUID", ""))
            same = geometry.volume.frame_of_reference_uid in (None, frame)
            data = list(item.GraphicData)
            if same and item.get("GraphicType") == "POINT" and len(data) == 3:
                nodule.center_xyz = (float(data[0]), float(data[1]), float(data[2]))
        elif kind == "SCOORD" and not nodule.points:
            point = geometry.point(item)
            if point is not None:
                nodule.points.append(point)


def _findings_of(sr: Dataset, volume: Volume) -> tuple[tuple[PriorFinding, ...], int]:
    """The current-time-point nodules of one SR, in the order of their first group, and how
    many of its nodules could not be placed in ``volume`` (an SR of another series)."""
    geometry = _Geometry(volume)
    nodules: dict[str, _Nodule] = {}
    for group in _walk(sr.get("ContentSequence", [])):
        if group.get("ValueType") != "CONTAINER" or _concept(group) != _MEASUREMENT_GROUP:
            continue
        children = group.get("ContentSequence", [])
        if any(_concept(c) == _TIME_POINT for c in children):
            continue  # an earlier study's measurements repeated by a follow-up SR
        uids = [str(c.UID) for c in children if _concept(c) == _TRACKING_UID and "UID" in c]
        if not uids:
            continue
        _read_group(group, nodules.setdefault(uids[0], _Nodule()), geometry)
    out = []
    unplaced = 0
    for uid, n in nodules.items():
        centre = n.center_xyz or (n.points[0] if n.points else None)
        if not n.is_nodule:
            continue
        if centre is None:
            unplaced += 1
            continue
        out.append(
            PriorFinding(
                tracking_id=n.tracking_id or uid,
                center_xyz=centre,
                diameter_mm=n.diameter_mm,
                volume_mm3=n.volume_mm3,
                tracking_uid=uid,
            )
        )
    return tuple(out), unplaced


def _candidates(paths: Sequence[Path], model_name: str | None) -> list[Dataset]:
    """ainode's SRs among ``paths``, the ``model_name`` ones first, newest first within."""
    found: list[tuple[bool, str, Dataset]] = []
    for path in paths:
        try:
            ds = pydicom.dcmread(path, stop_before_pixels=True)
        except (InvalidDicomError, OSError, ValueError) as exc:
            log.debug("prior_findings.unreadable", extra={"error": type(exc).__name__})
            continue
        if ds.get("Modality") != "SR" or str(ds.get("Manufacturer", "")) != "ainode":
            continue
        mine = model_name is not None and str(ds.get("ManufacturerModelName", "")) == model_name
        when = f"{ds.get('ContentDate', '')}{ds.get('ContentTime', '')}"
        found.append((mine, when, ds))
    found.sort(key=lambda t: (t[0], t[1]), reverse=True)
    return [ds for _, _, ds in found]


def read_prior_findings(
    paths: Sequence[Path], volume: Volume, *, model_name: str | None = None
) -> tuple[PriorFinding, ...] | None:
    """The nodules ainode's own SR of a prior study reports, located in ``volume``.

    Parameters
    ----------
    paths
        ainode's result files of the prior study (``PriorInput.result_files``): SR, SEG, ...
    volume
        The prior series the SR describes (its geometry places the SR's image coordinates).
    model_name
        The model whose SR is preferred (Manufacturer's Model Name, PS3.3 C.7.5.1); others'
        SRs are read when it made none.

    Returns
    -------
    tuple[PriorFinding, ...] | None
        The nodules of the first SR (preferred model first, newest first) that places any in
        this series, each with its Tracking Identifier and Tracking UID; an empty tuple when
        ainode's SRs report no nodule at all; None when no ainode SR is among ``paths`` or their
        nodules lie on another series (then the caller finds the prior's nodules itself).
    """
    candidates = _candidates(paths, model_name)
    if not candidates:
        return None
    unplaced = 0
    for sr in candidates:
        found, missed = _findings_of(sr, volume)
        if found:
            return found
        unplaced += missed
    return None if unplaced else ()
