"""The bundle input built from a ``Volume`` equals what MONAI's own PydicomReader loads."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from node.imaging import dicom_files, load_volume
from node.models.bundle_input import volume_metatensor

CHEST = "ct/chest-ct-siemens-sensation10-b40f-30sl"


def _reader_image(folder: Path):  # type: ignore[no-untyped-def]
    from monai.transforms.io.array import LoadImage

    with warnings.catch_warnings():
        # MONAI warns that the optional nvImageCodec decoder plugin is absent (CPU machine)
        warnings.filterwarnings("ignore", message=".*nvImageCodec.*", category=UserWarning)
        return LoadImage(reader="PydicomReader", image_only=True)(str(folder))


def test_metatensor_equals_pydicom_reader(corpus: Path) -> None:
    from monai.transforms.spatial.array import Orientation

    folder = corpus / CHEST
    theirs = _reader_image(folder)
    volume = load_volume(dicom_files([folder]))
    ours = volume_metatensor(volume)
    assert ours.shape == theirs.shape and ours.dtype == theirs.dtype == torch.float32
    assert set(ours.meta) == set(theirs.meta)
    for key in ("space", "spatial_shape", "00200037"):
        assert ours.meta[key] == theirs.meta[key], key
    np.testing.assert_allclose(ours.meta["spacing"], theirs.meta["spacing"])
    # the same image in patient space: identical after both are put in RAS order...
    orient = Orientation("RAS", labels=None)  # labels from the image's "space" (RAS)
    a: Any = orient(ours[None])
    b: Any = orient(theirs[None])
    np.testing.assert_allclose(a.affine.numpy(), b.affine.numpy(), atol=1e-4)
    np.testing.assert_array_equal(a.numpy(), b.numpy())
    # ...and voxel for voxel: each index maps to the same RAS point on both sides
    n = ours.shape[-1]
    for k in (0, n // 2, n - 1):
        point = ours.affine.numpy() @ [5.0, 7.0, k, 1.0]
        index = np.linalg.solve(theirs.affine.numpy(), point)
        assert index[:2] == pytest.approx([5.0, 7.0], abs=1e-4)
        k_theirs = int(round(index[2]))
        assert abs(index[2] - k_theirs) < 1e-4
        assert float(ours[5, 7, k]) == float(theirs[5, 7, k_theirs])
