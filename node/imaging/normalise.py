"""Intensity normalisation for model inputs: HU windows, z-score, percentile scaling.

All functions return new float32 arrays and leave their input untouched.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt

__all__ = ["HU_WINDOWS", "percentile_scale", "window", "zscore"]

#: Common CT windows as (centre, width) in HU (the usual radiology presets).
HU_WINDOWS: dict[str, tuple[float, float]] = {
    "lung": (-600.0, 1500.0),
    "mediastinum": (40.0, 400.0),
    "abdomen": (40.0, 400.0),
    "liver": (60.0, 160.0),
    "bone": (400.0, 1800.0),
    "brain": (40.0, 80.0),
}


def window(
    voxels: npt.NDArray[Any],
    center: float,
    width: float,
    *,
    out_range: tuple[float, float] = (0, 1),
) -> npt.NDArray[np.float32]:
    """Map ``[center - width/2, center + width/2]`` linearly onto ``out_range``, clipping outside.

    This is the linear VOI window of PS3.3 C.11.2.1.2 without its half-pixel offsets.

    Raises
    ------
    ValueError
        ``width`` is not positive.
    """
    if width <= 0:
        raise ValueError(f"window width must be positive, got {width}")
    lo = center - width / 2.0
    scaled = (voxels.astype(np.float32) - np.float32(lo)) / np.float32(width)
    np.clip(scaled, 0.0, 1.0, out=scaled)
    a, b = out_range
    if (a, b) != (0, 1):
        scaled *= np.float32(b - a)
        scaled += np.float32(a)
    return scaled


def zscore(
    voxels: npt.NDArray[Any], *, mask: npt.NDArray[np.bool_] | None = None, eps: float = 1e-6
) -> npt.NDArray[np.float32]:
    """Subtract the mean and divide by the standard deviation (of the voxels under ``mask``)."""
    data = voxels.astype(np.float32)
    sample = data[mask] if mask is not None else data
    if sample.size == 0:
        raise ValueError("z-score mask selects no voxel")
    mean = np.float32(sample.mean(dtype=np.float64))
    std = np.float32(sample.std(dtype=np.float64))
    data -= mean
    data /= max(std, np.float32(eps))
    return data


def percentile_scale(
    voxels: npt.NDArray[Any], *, low: float = 0.5, high: float = 99.5, clip: bool = True
) -> npt.NDArray[np.float32]:
    """Map the ``low``..``high`` percentiles onto 0..1 (robust scaling for MR, US, radiographs)."""
    if not 0 <= low < high <= 100:
        raise ValueError(f"need 0 <= low < high <= 100, got {low}, {high}")
    data = voxels.astype(np.float32)
    p_lo, p_hi = np.percentile(data, [low, high])
    span = float(p_hi - p_lo) or 1.0
    data -= np.float32(p_lo)
    data /= np.float32(span)
    if clip:
        np.clip(data, 0.0, 1.0, out=data)
    return data
