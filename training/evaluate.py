"""Held-out evaluation of the demo models on freshly generated phantoms.

Used by ``training`` (to write the metrics into the model cards) and by the tests
(to check committed weights against the thresholds the cards state).  Every function takes the
seeds of the phantoms it generates, so a caller chooses a set disjoint from the training seeds.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

__all__ = ["auc", "dice", "psnr", "ssim2d"]


def dice(pred: npt.NDArray[np.bool_], truth: npt.NDArray[np.bool_]) -> float:
    """Dice coefficient 2|A∩B|/(|A|+|B|); 1.0 when both are empty."""
    inter = float(np.logical_and(pred, truth).sum())
    total = float(pred.sum()) + float(truth.sum())
    return 1.0 if total == 0 else 2.0 * inter / total


def auc(scores: Sequence[float], labels: Sequence[bool]) -> float:
    """Area under the ROC curve (Mann-Whitney U, ties count one half)."""
    s = np.asarray(scores, dtype=np.float64)
    y = np.asarray(labels, dtype=bool)
    pos, neg = s[y], s[~y]
    if len(pos) == 0 or len(neg) == 0:
        return float("nan")
    greater = (pos[:, None] > neg[None, :]).sum()
    ties = (pos[:, None] == neg[None, :]).sum()
    return float((greater + 0.5 * ties) / (len(pos) * len(neg)))


def psnr(
    estimate: npt.NDArray[np.floating], truth: npt.NDArray[np.floating], data_range: float
) -> float:
    """Peak signal-to-noise ratio in dB."""
    mse = float(np.mean((estimate.astype(np.float64) - truth.astype(np.float64)) ** 2))
    return float("inf") if mse == 0 else 10.0 * math.log10(data_range**2 / mse)


def ssim2d(a: npt.NDArray[np.floating], b: npt.NDArray[np.floating], data_range: float) -> float:
    """Mean structural similarity of two 2D images (Gaussian window sigma 1.5, Wang et al. 2004)."""
    from scipy.ndimage import gaussian_filter

    x = a.astype(np.float64)
    y = b.astype(np.float64)
    c1 = (0.01 * data_range) ** 2
    c2 = (0.03 * data_range) ** 2
    mx = gaussian_filter(x, 1.5)
    my = gaussian_filter(y, 1.5)
    sxx = gaussian_filter(x * x, 1.5) - mx * mx
    syy = gaussian_filter(y * y, 1.5) - my * my
    sxy = gaussian_filter(x * y, 1.5) - mx * my
    num = (2 * mx * my + c1) * (2 * sxy + c2)
    den = (mx * mx + my * my + c1) * (sxx + syy + c2)
    return float(np.mean(num / den))
