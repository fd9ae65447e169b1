"""A ``Volume`` as the MONAI ``MetaTensor`` that MONAI's ``PydicomReader`` makes of the same series.

A bundle's preprocessing starts after its file loader (``LoadImaged``); every later transform
(``EnsureChannelFirstd``, ``Orientationd``, ``Spacingd``, ``Invertd``...) reads the image's
array layout, its ``affine`` and a few meta data keys.  ``volume_metatensor`` gives them what
``monai.transforms.LoadImage(reader="PydicomReader")`` (``affine_lps_to_ras=True``,
``swap_ij=True``, ``prune_metadata=True``: its defaults) gives for the folder of the series:

* the array is float32 in physical units (Rescale Slope/Intercept applied, so CT is in HU),
  axes (column, row, slice) with no channel axis (``original_channel_dim`` NaN);
* the affine maps (column, row, slice) indices to RAS millimetres: the DICOM LPS geometry
  (PS3.3 C.7.6.2.1.1: Image Orientation/Position (Patient), Pixel Spacing, the slice normal
  times the slice spacing) with its first two rows negated;
* meta data: the pruned DICOM JSON keys ``00200037``, ``00200032``, ``00280030`` of the first
  slice, ``lastImagePositionPatient``, ``spacing``, ``spatial_shape``, ``space`` (``RAS``),
  ``original_affine``, ``affine``, ``original_channel_dim`` and ``filename_or_obj`` (the series
  UID here: there is no file name to give, and it must carry no PHI).

One difference is deliberate: the reader stacks slices by Instance Number, a ``Volume`` by
position along the slice normal (node/imaging/volume.py).  The affine says which, so the two
images are the same image in patient space; ``tests/models/test_bundle_input.py`` checks that
both give the same array and affine after ``Orientation("RAS")``, and that each voxel maps to
the same patient point.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt

from node.types import Volume

__all__ = ["lps_affine", "volume_metatensor"]

#: LPS <-> RAS: negate x and y (PS3.3 C.7.6.2.1.1 is LPS; MONAI's readers give RAS by default).
_LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])


def lps_affine(volume: Volume) -> npt.NDArray[np.float64]:
    """4x4 affine from (column, row, slice) indices of ``volume`` to LPS patient mm."""
    slice_sp, row_sp, col_sp = volume.spacing
    row_cos, col_cos, normal = np.asarray(volume.direction, dtype=np.float64)
    affine = np.eye(4)
    affine[:3, 0] = row_cos * col_sp  # along a row: next column
    affine[:3, 1] = col_cos * row_sp  # along a column: next row
    affine[:3, 2] = normal * slice_sp
    affine[:3, 3] = volume.origin
    return affine


def _ds(values: Any) -> dict[str, Any]:
    return {"vr": "DS", "Value": [float(v) for v in values]}


def volume_metatensor(volume: Volume) -> Any:
    """The ``monai.data.MetaTensor`` PydicomReader would load for ``volume``'s series.

    Returns
    -------
    monai.data.MetaTensor
        float32, shape (columns, rows, slices) for a 3D volume, (columns, rows) for a 2D one
        (a strided view of a float32 copy of the voxels, not a C-contiguous array), affine in
        RAS mm, meta as described in the module docstring.
    """
    import torch
    from monai.data.meta_tensor import MetaTensor

    lps = lps_affine(volume)
    ras = _LPS_TO_RAS @ lps
    slice_sp, row_sp, col_sp = volume.spacing
    voxels = volume.voxels
    # float32 in one sequential pass, then a (column, row, slice) strided view: the transposing
    # copy the reader makes costs seconds on a 300-slice CT and no transform needs it
    floats = voxels.astype(np.float32, copy=False)
    array = floats.transpose(2, 1, 0) if volume.is_3d else floats[0].T
    n = voxels.shape[0]
    direction = np.asarray(volume.direction, dtype=np.float64)
    meta: dict[str, Any] = {
        "00200037": _ds([*direction[0], *direction[1]]),
        "00200032": _ds(volume.origin),
        "00280030": _ds([row_sp, col_sp, slice_sp] if volume.is_3d else [row_sp, col_sp]),
        "spacing": np.asarray(
            [col_sp, row_sp, slice_sp] if volume.is_3d else [col_sp, row_sp], dtype=np.float64
        ),
        "spatial_shape": tuple(int(s) for s in array.shape),
        "space": "RAS",
        "original_affine": ras.copy(),
        "affine": torch.as_tensor(ras, dtype=torch.float64),
        "original_channel_dim": float("nan"),
        "filename_or_obj": volume.series_uid,
    }
    if volume.is_3d:
        meta["lastImagePositionPatient"] = (lps @ [0.0, 0.0, n - 1.0, 1.0])[:3]
    return MetaTensor(torch.from_numpy(array), meta=meta)
