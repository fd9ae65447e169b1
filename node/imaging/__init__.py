"""Series on disk -> ``Volume`` (voxels in physical units + geometry + source references).

Models never see pydicom: this package is where pixels are decoded and checked.
"""

from __future__ import annotations

from node.imaging.normalise import HU_WINDOWS, percentile_scale, window, zscore
from node.imaging.resample import resample_array, resample_volume, resampled_shape
from node.imaging.volume import dicom_files, load_volume

__all__ = [
    "HU_WINDOWS",
    "dicom_files",
    "load_volume",
    "percentile_scale",
    "resample_array",
    "resample_volume",
    "resampled_shape",
    "window",
    "zscore",
]
