"""``node.types.label_counts`` (used by the SEG builder and the prediction summary) equals
``np.bincount`` on every kind of label map the models hand over."""

from __future__ import annotations

import numpy as np
import pytest

from node.types import label_counts


@pytest.mark.parametrize(
    ("shape", "highest", "dtype"),
    [
        ((6, 16, 16), 2, np.uint8),  # few labels: counted by compares
        ((6, 16, 16), 200, np.uint8),  # many labels per slice: per-slice bincount
        ((4, 8, 8), 0, np.uint8),  # all background
        ((5, 12, 12), 70, np.uint16),
        ((3, 4, 5), 40, np.int32),
        ((9,), 3, np.uint8),  # 1-D: one value per "slice"
        ((0, 4, 4), 1, np.uint8),  # empty
    ],
)
def test_label_counts_equal_bincount(shape: tuple[int, ...], highest: int, dtype: type) -> None:
    rng = np.random.default_rng(20261207)
    labels: np.ndarray = rng.integers(0, highest + 1, size=shape).astype(dtype)
    if labels.ndim == 3 and labels.shape[0] > 2:
        labels[1] = 0  # an empty slice among full ones
        labels[2, :2] = highest  # the highest label only in one slice's corner
    counts = label_counts(labels)
    assert counts.dtype == np.int64
    np.testing.assert_array_equal(counts, np.bincount(labels.ravel(), minlength=1))


def test_label_counts_on_a_sparse_volume() -> None:
    labels = np.zeros((40, 64, 64), dtype=np.uint8)
    labels[10:12, 5:9, 7:9] = 3
    labels[30, 60:, 60:] = 1
    counts = label_counts(labels)
    assert counts.tolist() == [labels.size - 16 - 16, 16, 0, 16]


def test_label_counts_refuse_negative_labels() -> None:
    with pytest.raises(ValueError, match="negative"):
        label_counts(np.array([[0, -1], [2, 3]], dtype=np.int16))
