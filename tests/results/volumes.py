"""TEST-ONLY: build a ``Volume`` from corpus files with pydicom (until node/imaging is merged).

Single-frame series are sorted by Image Position (Patient) along the slice normal; an enhanced
multi-frame instance is split through its per-frame functional groups (frame numbers kept).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pydicom
from pydicom.dataset import Dataset

from node.types import SourceRef, Volume


def _direction(iop: Any) -> np.ndarray:
    row = np.asarray(iop[:3], dtype=float)
    col = np.asarray(iop[3:], dtype=float)
    return np.stack([row, col, np.cross(row, col)])


def _volume(
    slices: list[tuple[np.ndarray, np.ndarray, SourceRef]],
    direction: np.ndarray,
    pixel_spacing: Any,
    header: Dataset,
) -> Volume:
    normal = direction[2]
    slices.sort(key=lambda s: float(np.dot(s[1], normal)))
    positions = [float(np.dot(s[1], normal)) for s in slices]
    dz = (
        positions[1] - positions[0]
        if len(positions) > 1
        else float(header.get("SliceThickness", 1.0) or 1.0)
    )
    voxels = np.stack([s[0] for s in slices]).astype(np.float32)
    return Volume(
        voxels=voxels,
        spacing=(abs(dz), float(pixel_spacing[0]), float(pixel_spacing[1])),
        origin=tuple(float(v) for v in slices[0][1]),  # type: ignore[arg-type]
        direction=direction,
        sources=tuple(s[2] for s in slices),
        study_uid=str(header.StudyInstanceUID),
        series_uid=str(header.SeriesInstanceUID),
        modality=header.get("Modality"),
        body_part=header.get("BodyPartExamined"),
        frame_of_reference_uid=header.get("FrameOfReferenceUID"),
        is_3d=len(slices) > 1,
    )


def load_volume(paths: list[Path]) -> Volume:
    """Volume of single-frame files, or of ONE enhanced multi-frame file."""
    datasets = [pydicom.dcmread(p) for p in paths]
    first = datasets[0]
    if int(first.get("NumberOfFrames", 1) or 1) > 1:
        assert len(datasets) == 1, "one multi-frame instance per volume in tests"
        return _enhanced_volume(first)
    slices = []
    for ds in datasets:
        hu = ds.pixel_array.astype(np.float32) * float(ds.get("RescaleSlope", 1)) + float(
            ds.get("RescaleIntercept", 0)
        )
        ref = SourceRef(sop_uid=str(ds.SOPInstanceUID), sop_class_uid=str(ds.SOPClassUID))
        ipp = np.asarray(ds.get("ImagePositionPatient", [0, 0, 0]), dtype=float)
        slices.append((hu, ipp, ref))
    iop = first.get("ImageOrientationPatient", [1, 0, 0, 0, 1, 0])
    spacing = first.get("PixelSpacing") or first.get("ImagerPixelSpacing") or [1.0, 1.0]
    return _volume(slices, _direction(iop), spacing, first)


def _enhanced_volume(ds: Dataset) -> Volume:
    shared = ds.SharedFunctionalGroupsSequence[0]
    frames = ds.pixel_array
    slices = []
    iop = None
    spacing = None
    for i, fg in enumerate(ds.PerFrameFunctionalGroupsSequence):
        orient = fg.get("PlaneOrientationSequence") or shared.get("PlaneOrientationSequence")
        measures = fg.get("PixelMeasuresSequence") or shared.get("PixelMeasuresSequence")
        iop = orient[0].ImageOrientationPatient
        spacing = measures[0].PixelSpacing
        ipp = np.asarray(fg.PlanePositionSequence[0].ImagePositionPatient, dtype=float)
        ref = SourceRef(
            sop_uid=str(ds.SOPInstanceUID), sop_class_uid=str(ds.SOPClassUID), frame_number=i + 1
        )
        slices.append((frames[i].astype(np.float32), ipp, ref))
    assert iop is not None and spacing is not None
    return _volume(slices, _direction(iop), spacing, ds)
