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


def test_gantry_tilted_volume_equals_pydicom_reader(tmp_path: Path) -> None:
    """A gantry-tilted series, loaded as the router loads its volume (a sheared grid), gives the
    bundle the image PydicomReader gives: its affine's slice column is the tilted step between
    slice positions, so every voxel lands on the same patient point."""
    from node.imaging.split import split_series
    from tests.imaging.synthetic import constructed_series, write_mr_frames

    paths = write_mr_frames(tmp_path / "tilt", constructed_series()["gantry-tilt"], modality="CT")
    split = split_series(paths)
    [chosen] = split.volumes
    assert chosen.tilt_degrees == pytest.approx(15.0, abs=0.1)
    volume = load_volume(paths, volume_id=chosen.volume_id)
    ours = volume_metatensor(volume)
    theirs = _reader_image(tmp_path / "tilt")
    assert ours.shape == theirs.shape
    np.testing.assert_allclose(ours.affine.numpy(), theirs.affine.numpy(), atol=1e-4)
    np.testing.assert_array_equal(ours.numpy(), theirs.numpy())
    # the affine is sheared: the slice step is not along the slice normal
    step = ours.affine.numpy()[:3, 2]
    normal = np.cross(ours.affine.numpy()[:3, 0], ours.affine.numpy()[:3, 1])
    cosine = abs(step @ normal) / (np.linalg.norm(step) * np.linalg.norm(normal))
    assert np.degrees(np.arccos(cosine)) == pytest.approx(15.0, abs=0.1)
