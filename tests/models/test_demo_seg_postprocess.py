"""Postprocessing of lung-nodule-seg: label resampling and nodule refinement at input resolution."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from node.models.builtin._common import ModelGrid
from node.models.builtin.lung_nodule_seg import GROW_MM, refine_nodules


def _smooth_probabilities(shape: tuple[int, int, int], seed: int) -> torch.Tensor:
    """(3, z, y, x) softmax of smooth random logits: label regions with real boundaries."""
    rng = np.random.default_rng(seed)
    coarse = torch.from_numpy(rng.normal(size=(1, 3, 4, 5, 5)).astype(np.float32) * 4)
    logits = torch.nn.functional.interpolate(coarse, size=shape, mode="trilinear")[0]
    return torch.softmax(logits, dim=0)


def _full_resampling_argmax(grid: ModelGrid, probs: torch.Tensor) -> np.ndarray:
    """Reference: resample every class to every input voxel, then argmax (ties: lowest class)."""
    full = torch.stack([grid.values_to_input(p) for p in probs])
    return np.asarray(full.argmax(dim=0).numpy(), dtype=np.uint8)


@pytest.mark.parametrize(
    ("shape", "spacing"),
    [
        ((37, 61, 59), (2.0, 0.9, 0.9)),  # pooled in-plane, linear along z
        ((9, 40, 44), (5.0, 0.7, 1.3)),  # model grid finer than the input along z
        ((23, 30, 30), (1.0, 2.5, 2.5)),
    ],
)
def test_label_resampling_equals_resampling_every_class_everywhere(
    shape: tuple[int, int, int], spacing: tuple[float, float, float]
) -> None:
    grid = ModelGrid.make(shape, spacing, 2.5)
    for seed in range(3):
        probs = _smooth_probabilities(grid.shape, seed)
        fast = grid.labels_to_input(probs, chunk=4)
        reference = _full_resampling_argmax(grid, probs)
        assert fast.shape == shape
        assert len(np.unique(reference)) == 3  # the case has boundaries between all classes
        assert np.array_equal(fast, reference)


def _ball(shape: tuple[int, int, int], centre: tuple[float, ...], radius: float) -> np.ndarray:
    z, y, x = np.indices(shape, dtype=np.float64)
    return np.asarray(
        (z - centre[0]) ** 2 + (y - centre[1]) ** 2 + (x - centre[2]) ** 2 <= radius**2
    )


def test_refinement_redraws_a_coarse_nodule_and_leaves_a_vessel_out() -> None:
    shape = (60, 60, 60)  # 1 mm voxels
    spacing = (1.0, 1.0, 1.0)
    nodule = _ball(shape, (30, 30, 30), 8.0)
    z, y, x = np.indices(shape)
    vessel = ((y - 30) ** 2 + (z - 30) ** 2 <= 4) & (x > 30)  # a tube leaving the nodule
    hu = np.full(shape, -850.0, dtype=np.float32)
    hu[vessel] = 40.0
    hu[nodule] = 40.0
    labels = np.ones(shape, dtype=np.uint8)  # all lung
    coarse = _ball(shape, (31, 29, 30), 6.5) | (_ball(shape, (30, 30, 30), 9.5) & (z < 27))
    labels[coarse] = 2  # too small on one side, spilling into lung on the other
    near_nodule = _ball(shape, (30, 30, 30), 10.5).astype(np.float32)

    def probability(box: tuple[slice, slice, slice]) -> np.ndarray:
        return near_nodule[box]

    refined = refine_nodules(labels.copy(), hu, spacing, probability)
    got = refined == 2
    dice = 2 * (got & nodule).sum() / (got.sum() + nodule.sum())
    coarse_dice = 2 * (coarse & nodule).sum() / (coarse.sum() + nodule.sum())
    assert dice > 0.97 > coarse_dice
    # spilled lung voxels went back to lung; the vessel stays lung beyond the allowed reach
    assert (refined[coarse & ~nodule & (hu < -400)] == 1).all()
    radius = (3 * coarse.sum() / (4 * np.pi)) ** (1 / 3)
    beyond = vessel & (x > 30 + 8 + max(GROW_MM, 0.75 * radius) + 1.5)
    assert beyond.any() and not got[beyond].any()
    assert set(np.unique(refined)) == {1, 2}


def test_refinement_leaves_a_ground_glass_nodule_as_drawn() -> None:
    shape = (40, 40, 40)
    hu = np.full(shape, -850.0, dtype=np.float32)
    ggo = _ball(shape, (20, 20, 20), 6.0)
    hu[ggo] = -600.0  # ground glass: below the solid threshold
    labels = np.ones(shape, dtype=np.uint8)
    labels[_ball(shape, (20, 20, 20), 5.0)] = 2
    refined = refine_nodules(
        labels.copy(), hu, (1.0, 1.0, 1.0), lambda b: np.ones(hu[b].shape, dtype=np.float32)
    )
    assert np.array_equal(refined, labels)
