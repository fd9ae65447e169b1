"""Test-only helper: a ``Volume`` from CT files with pydicom (until node/imaging is merged).

Slices are sorted by ImagePositionPatient projected on the slice normal, RescaleSlope/Intercept
applied (PS3.3 C.7.6.2, C.11.1.1.2).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pydicom

from node.types import SourceRef, Volume


def ct_volume_from_files(paths: list[Path]) -> Volume:
    """HU volume of one CT series (single-frame instances)."""
    dss = [pydicom.dcmread(p) for p in paths]
    iop = np.asarray(dss[0].ImageOrientationPatient, dtype=np.float64)
    row, col = iop[:3], iop[3:]
    normal = np.cross(row, col)
    dss.sort(key=lambda d: float(np.dot(np.asarray(d.ImagePositionPatient, float), normal)))
    pos = np.array([np.dot(np.asarray(d.ImagePositionPatient, float), normal) for d in dss])
    if len(dss) > 1:
        slice_spacing = float(np.median(np.diff(pos)))
    else:
        slice_spacing = float(getattr(dss[0], "SliceThickness", 1.0) or 1.0)
    vox = np.stack(
        [
            d.pixel_array.astype(np.float32) * float(getattr(d, "RescaleSlope", 1))
            + float(getattr(d, "RescaleIntercept", 0))
            for d in dss
        ]
    )
    ps = [float(v) for v in dss[0].PixelSpacing]  # row spacing, column spacing
    return Volume(
        voxels=vox,
        spacing=(slice_spacing, ps[0], ps[1]),
        origin=tuple(float(v) for v in dss[0].ImagePositionPatient),  # type: ignore[arg-type]
        direction=np.stack([row, col, normal]),
        sources=tuple(SourceRef(str(d.SOPInstanceUID), str(d.SOPClassUID)) for d in dss),
        study_uid=str(dss[0].StudyInstanceUID),
        series_uid=str(dss[0].SeriesInstanceUID),
        modality=str(dss[0].Modality),
        body_part=str(getattr(dss[0], "BodyPartExamined", "") or "") or None,
        frame_of_reference_uid=str(getattr(dss[0], "FrameOfReferenceUID", "") or "") or None,
        is_3d=True,
    )
