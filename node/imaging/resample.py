"""Resampling between a volume's grid and a model's spacing, and back.

The first voxel centre stays where it is; the new grid has exactly the requested spacing and
covers the same extent (rounded to whole voxels).  Resampling is separable (one
``scipy.ndimage.affine_transform`` with a diagonal matrix), so memory stays at input + output.
Images use linear interpolation (order 1), label maps nearest neighbour (order 0).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

from node.types import Volume

__all__ = ["resample_array", "resample_volume", "resampled_shape"]


def resampled_shape(
    shape: Sequence[int], from_spacing: Sequence[float], to_spacing: Sequence[float]
) -> tuple[int, ...]:
    """Shape of ``shape`` voxels at ``from_spacing`` once resampled to ``to_spacing``."""
    return tuple(
        max(1, round(n * f / t)) for n, f, t in zip(shape, from_spacing, to_spacing, strict=True)
    )


def resample_array(
    array: npt.NDArray[Any],
    from_spacing: Sequence[float],
    to_spacing: Sequence[float],
    *,
    shape: Sequence[int] | None = None,
    order: int = 1,
) -> npt.NDArray[Any]:
    """Resample ``array`` from one voxel spacing to another.

    Parameters
    ----------
    array:
        N-D array (N = len(from_spacing)).
    from_spacing, to_spacing:
        Voxel spacing in mm per axis, before and after.
    shape:
        Output shape; default ``resampled_shape``.  Pass the original shape to go back exactly
        onto the source grid (e.g. a label map predicted at model spacing).
    order:
        Spline order: 1 for images, 0 for label maps (keeps label values).

    Returns
    -------
    numpy.ndarray
        Same dtype as ``array`` for order 0, float32 otherwise.
    """
    if array.ndim != len(from_spacing) or array.ndim != len(to_spacing):
        raise ValueError(f"array has {array.ndim} axes but spacings have {len(from_spacing)}")
    out_shape = (
        tuple(shape)
        if shape is not None
        else resampled_shape(array.shape, from_spacing, to_spacing)
    )
    scale = np.asarray(to_spacing, dtype=np.float64) / np.asarray(from_spacing, dtype=np.float64)
    if out_shape == array.shape and np.allclose(scale, 1.0):
        return array.copy() if order == 0 else array.astype(np.float32)
    # images interpolate from their stored dtype straight into float32: no float copy of the input
    from scipy import ndimage  # imported on first use: the SCP process never resamples

    out: npt.NDArray[Any] = ndimage.affine_transform(
        array,
        scale,
        offset=0.0,
        output_shape=out_shape,
        output=array.dtype if order == 0 else np.float32,
        order=order,
        mode="nearest",
        prefilter=False,
    )
    return out


def resample_volume(volume: Volume, spacing: Sequence[float], *, order: int = 1) -> Volume:
    """A copy of ``volume`` resampled to ``spacing`` (slice, row, column) mm.

    Origin, direction and sources are kept (sources then no longer map 1:1 to slices; keep the
    original volume to map results back with ``resample_array(..., shape=original.shape)``).
    """
    voxels = resample_array(volume.voxels, volume.spacing, spacing, order=order)
    return dataclasses.replace(
        volume, voxels=voxels, spacing=(float(spacing[0]), float(spacing[1]), float(spacing[2]))
    )
