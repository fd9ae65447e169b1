"""Wrap phantoms in ``node.types.Volume`` with a plausible axial geometry (no DICOM involved)."""

from __future__ import annotations

import numpy as np

from node.samples.phantoms import ChestPhantom, RadiographPhantom
from node.types import SourceRef, Volume

__all__ = ["ct_volume", "radiograph_volume"]

_CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2"
_CR_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.1"


def _uid(*parts: int) -> str:
    return "2.25." + "".join(f"{p:06d}" for p in parts).lstrip("0")


def ct_volume(phantom: ChestPhantom, *, seed: int = 0) -> Volume:
    """A CT ``Volume`` of ``phantom``: HU voxels, axial slices from inferior to superior.

    Patient x runs along the columns, y along the rows and z along the slices; the origin is
    (-170, -170, 0) mm so the volume centre lies near the patient axis.
    """
    n = phantom.hu.shape[0]
    return Volume(
        voxels=phantom.hu,
        spacing=phantom.spacing,
        origin=(-170.0, -170.0, 0.0),
        direction=np.eye(3, dtype=np.float64),
        sources=tuple(SourceRef(_uid(seed + 1, i + 1), _CT_IMAGE_STORAGE) for i in range(n)),
        study_uid=_uid(seed + 1, 900001),
        series_uid=_uid(seed + 1, 900002),
        modality="CT",
        body_part="CHEST",
        frame_of_reference_uid=_uid(seed + 1, 900003),
        is_3d=True,
    )


def radiograph_volume(phantom: RadiographPhantom, *, seed: int = 0) -> Volume:
    """A one-slice CR ``Volume`` of a radiograph phantom (is_3d False)."""
    # frontal (PA-like) view: rows run head -> feet (-z), columns run along +x
    direction = np.array([[1.0, 0.0, 0.0], [0.0, 0.0, -1.0], [0.0, 1.0, 0.0]])
    return Volume(
        voxels=phantom.image[None],
        spacing=(1.0, phantom.spacing[0], phantom.spacing[1]),
        origin=(-170.0, 0.0, 0.0),
        direction=direction,
        sources=(SourceRef(_uid(seed + 1, 1), _CR_IMAGE_STORAGE),),
        study_uid=_uid(seed + 1, 900001),
        series_uid=_uid(seed + 1, 900002),
        modality="CR",
        body_part="CHEST",
        frame_of_reference_uid=None,
        is_3d=False,
    )
