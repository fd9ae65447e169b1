"""Intensity normalisation and resampling to model spacing and back."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from node.imaging import (
    HU_WINDOWS,
    percentile_scale,
    resample_array,
    resample_volume,
    resampled_shape,
    window,
    zscore,
)
from node.types import SourceRef, Volume


def test_window_maps_and_clips() -> None:
    center, width = HU_WINDOWS["lung"]
    hu = np.array([-2000, center - width / 2, center, center + width / 2, 3000], np.int16)
    np.testing.assert_allclose(window(hu, center, width), [0, 0, 0.5, 1, 1])
    np.testing.assert_allclose(window(hu, center, width, out_range=(-1, 1)), [-1, -1, 0, 1, 1])
    with pytest.raises(ValueError):
        window(hu, 0, 0)


def test_zscore_with_and_without_mask() -> None:
    rng = np.random.default_rng(0)
    data = rng.normal(50, 10, (8, 16, 16)).astype(np.float32)
    z = zscore(data)
    assert z.dtype == np.float32
    assert abs(float(z.mean())) < 1e-4 and abs(float(z.std()) - 1) < 1e-4
    mask = data > 50
    zm = zscore(data, mask=mask)
    assert abs(float(zm[mask].mean())) < 1e-4
    assert data.mean() > 40  # input untouched


def test_percentile_scale() -> None:
    data = np.arange(1000, dtype=np.float32)
    out = percentile_scale(data, low=10, high=90)
    assert out.min() == 0 and out.max() == 1
    assert out[500] == pytest.approx((500 - 99.9) / (899.1 - 99.9), abs=1e-4)


def test_resample_keeps_physical_positions() -> None:
    """A linear ramp in mm stays the same ramp: value at voxel i equals i * spacing."""
    z = np.arange(20, dtype=np.float32)[:, None, None] * 2.5
    ramp = np.broadcast_to(z, (20, 4, 4)).copy()
    out = resample_array(ramp, (2.5, 1, 1), (1.0, 1, 1))
    assert out.shape == resampled_shape(ramp.shape, (2.5, 1, 1), (1.0, 1, 1)) == (50, 4, 4)
    # inside the original extent the interpolated ramp is exact
    np.testing.assert_allclose(out[:48, 0, 0], np.arange(48) * 1.0, atol=1e-4)


def test_label_round_trip_to_model_spacing_and_back() -> None:
    labels = np.zeros((30, 64, 64), np.uint8)
    labels[10:20, 20:40, 16:48] = 1
    labels[12:16, 25:30, 20:26] = 2
    small = resample_array(labels, (1.0, 0.7, 0.7), (2.0, 1.4, 1.4), order=0)
    assert small.dtype == np.uint8 and set(np.unique(small)) == {0, 1, 2}
    back = resample_array(small, (2.0, 1.4, 1.4), (1.0, 0.7, 0.7), shape=labels.shape, order=0)
    assert back.shape == labels.shape
    agree = (back == labels).mean()
    assert agree > 0.98, agree


def test_resample_volume_updates_spacing() -> None:
    vol = Volume(
        voxels=np.zeros((10, 32, 32), np.int16),
        spacing=(5.0, 0.5, 0.5),
        origin=(1.0, 2.0, 3.0),
        direction=np.eye(3),
        sources=tuple(SourceRef(f"1.2.{i}", "1.2.840.10008.5.1.4.1.1.2") for i in range(10)),
        study_uid="1.2.3",
        series_uid="1.2.4",
    )
    out = resample_volume(vol, (2.0, 1.0, 1.0))
    assert out.voxels.shape == (25, 16, 16) and out.spacing == (2.0, 1.0, 1.0)
    assert out.origin == vol.origin and dataclasses.replace(out, voxels=vol.voxels) is not None
