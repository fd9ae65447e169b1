"""Test-time intensity-based refinement of an affine CT registration (``chest-ct-register``).

The keypoint network of ``ct_register`` gives a close but coarse affine (a median TRE of
several mm on held-out pairs).  This module refines it on the two images themselves, the way
classical registration does, with the network's estimate as the starting point: a
coarse-to-fine pyramid (12, 6, 3 and 1.5 mm by default), at each level a fixed set of points on
the current ("fixed") CT, the prior ("moving") CT sampled trilinearly at their mapped positions
(``torch.nn.functional.grid_sample``; both volumes block-averaged to about the level's spacing),
and the 12 affine parameters moved by L-BFGS (strong Wolfe line search, bounded iterations) to
maximise the normalised cross-correlation of the two intensity sets (HU clipped to a window
that keeps lung, soft tissue and bone edges).

Only points that the level's starting estimate maps at least ``MARGIN_MM`` inside the prior's
field of view count, and that set is fixed for the level: the objective is then smooth with an
exact gradient, and no point crosses the edge of the prior's field of view during the level.
(Counting every point mapped inside the prior, as the estimate moves, held the optimiser a few
mm from the truth on tuning pairs: points near the cranio-caudal edge, which each scan cuts
elsewhere, pulled it.)

Deterministic for a given pair and thread count: the points are drawn with a fixed seed and
the optimisation runs bounded iterations.  A refinement that ends with a worse correlation than
the network's estimate (at the finest level) is discarded: the estimate is kept.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
import torch
import torch.nn.functional as F  # noqa: N812

from node.types import Volume

__all__ = ["LEVELS", "POINTS", "WINDOW_HU", "Level", "refine_affine"]

FloatMatrix = npt.NDArray[np.float64]

#: (point spacing in mm, L-BFGS iterations, first step scale) of each pyramid level, coarse
#: first.
Level = tuple[float, int, float]
LEVELS: tuple[Level, ...] = ((12.0, 40, 1.0), (6.0, 40, 1.0), (3.0, 30, 1.0), (1.5, 20, 1.0))
#: Points of the fixed image per level (drawn among its lattice at the level's spacing).
POINTS = 60_000
#: HU window of the compared intensities.
WINDOW_HU = (-1000.0, 300.0)
#: Margin (mm) inside the prior's field of view of the points that count (see ``_Level``).
MARGIN_MM = 15.0
#: Scale of the 9 linear parameters (a unit step is 1 % of shear or scale).
_LINEAR_SCALE = 0.01


def _index_to_patient(volume: Volume) -> FloatMatrix:
    """4 x 4 map of (slice, row, column, 1) indices to patient (x, y, z, 1) mm."""
    d = np.asarray(volume.direction, dtype=np.float64)
    sz, sy, sx = volume.spacing
    out = np.eye(4)
    out[:3, 0] = d[2] * sz
    out[:3, 1] = d[1] * sy
    out[:3, 2] = d[0] * sx
    out[:3, 3] = volume.origin
    return out


class _Windowed:
    """A volume's HU clipped to ``WINDOW_HU`` and shifted so air is 0, made once per
    registration; ``pooled`` block-averages it to a level's spacing (anti-aliasing)."""

    def __init__(self, volume: Volume) -> None:
        lo, hi = WINDOW_HU
        vox = torch.as_tensor(np.asarray(volume.voxels), dtype=torch.float32)
        self.voxels = torch.clamp(vox, lo, hi).sub_(lo)[None, None]  # one copy
        self.spacing = volume.spacing
        self.index_to_patient = _index_to_patient(volume)

    def pooled(self, spacing_mm: float) -> tuple[torch.Tensor, FloatMatrix]:
        """(1, 1, D, H, W) tensor at about ``spacing_mm`` and its index -> patient map."""
        factors = tuple(max(1, int(spacing_mm // s)) for s in self.spacing)
        if factors == (1, 1, 1):
            return self.voxels, self.index_to_patient
        vox = F.avg_pool3d(self.voxels, kernel_size=factors, stride=factors, ceil_mode=True)
        index_to_patient = self.index_to_patient
        pooled = np.eye(4)
        pooled[:3, :3] = index_to_patient[:3, :3] @ np.diag(factors)
        pooled[:3, 3] = index_to_patient[:3, 3] + index_to_patient[:3, :3] @ (
            (np.asarray(factors) - 1) / 2.0
        )
        return vox.contiguous(), pooled


def _normaliser(shape: tuple[int, ...], index_to_patient: FloatMatrix) -> FloatMatrix:
    """4 x 4 map of patient mm to grid_sample's normalised (x=column, y=row, z=slice) coords."""
    n = np.asarray(shape[-3:], dtype=np.float64)
    norm = np.diag(np.append(2.0 / np.maximum(n - 1, 1), 1.0))
    norm[:3, 3] = -1.0
    out = norm @ np.linalg.inv(index_to_patient)
    return np.asarray(out[[2, 1, 0, 3], :], dtype=np.float64)


def _points(volume: Volume, spacing_mm: float, count: int) -> FloatMatrix:
    """(N, 4) homogeneous patient points of the fixed volume's lattice at ``spacing_mm``: every
    lattice point, or ``count`` of them drawn at random (fixed seed) when there are more."""
    axes = [
        np.arange(0.0, n - 1 + 1e-6, max(1.0, spacing_mm / s))
        for n, s in zip(volume.voxels.shape, volume.spacing, strict=True)
    ]
    if np.prod([len(a) for a in axes]) > count:
        rng = np.random.default_rng(0)
        idx = np.stack([a[rng.integers(0, len(a), size=count)] for a in axes], axis=1)
    else:
        idx = np.stack(np.meshgrid(*axes, indexing="ij"), axis=-1).reshape(-1, 3)
    homogeneous = np.concatenate([idx, np.ones((len(idx), 1))], axis=1)
    return np.asarray(homogeneous @ _index_to_patient(volume).T, dtype=np.float64)


def _sample(image: torch.Tensor, coords: torch.Tensor) -> torch.Tensor:
    """Trilinear samples of ``image`` (1, 1, D, H, W) at normalised ``coords`` (N, 3); 0 outside."""
    out = F.grid_sample(
        image, coords.view(1, -1, 1, 1, 3), mode="bilinear", padding_mode="zeros",
        align_corners=True,
    )  # fmt: skip
    return out.view(-1)


def _ncc(a: torch.Tensor, b: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """Weighted normalised cross-correlation of two sample sets."""
    total = w.sum().clamp_min(1e-6)
    da = a - (w * a).sum() / total
    db = b - (w * b).sum() / total
    cov = (w * da * db).sum()
    var = (w * da * da).sum() * (w * db * db).sum()
    return cov / var.clamp_min(1e-12).sqrt()


class _Level:
    """One pyramid level: fixed points and intensities, the pooled prior and its extent."""

    def __init__(
        self,
        moving: _Windowed,
        fixed: _Windowed,
        fixed_volume: Volume,
        spacing_mm: float,
        count: int,
    ) -> None:
        fixed_image, fixed_map = fixed.pooled(spacing_mm)
        self.moving, moving_map = moving.pooled(spacing_mm)
        # the prior's field of view less a margin: a point counts when the level's start maps
        # it at least MARGIN_MM inside, so a few mm of motion never carries it out of view
        self.extent = torch.zeros_like(self.moving)
        pooled_mm = np.linalg.norm(moving_map[:3, :3], axis=0)
        cut = [max(1, int(np.ceil(MARGIN_MM / s))) for s in pooled_mm]
        shape = self.moving.shape[-3:]
        if all(2 * c < n for c, n in zip(cut, shape, strict=True)):
            self.extent[..., cut[0] : -cut[0], cut[1] : -cut[1], cut[2] : -cut[2]] = 1.0
        else:
            self.extent.fill_(1.0)  # a thin volume: its whole field of view counts
        self.points = _points(fixed_volume, spacing_mm, count)
        to_fixed = _normaliser(fixed_image.shape, fixed_map)
        fixed_coords = torch.as_tensor(self.points @ to_fixed.T, dtype=torch.float32)[:, :3]
        self.fixed_values = _sample(fixed_image, fixed_coords)
        self.to_moving = _normaliser(self.moving.shape, moving_map)
        self.centre = self.points[:, :3].mean(axis=0)

    def correlation(self, fixed_to_moving: FloatMatrix) -> float:
        """NCC of the level's points under a fixed -> moving patient map (the points that map
        inside the prior's field of view)."""
        m = torch.as_tensor(fixed_to_moving, dtype=torch.float32)
        with torch.no_grad():
            return float(self._loss_terms(m, self._inside(m)))

    def _coords(self, fixed_to_moving: torch.Tensor) -> torch.Tensor:
        m = torch.as_tensor(self.to_moving, dtype=torch.float32) @ fixed_to_moving
        pts = torch.as_tensor(self.points, dtype=torch.float32)
        return (pts @ m.T)[:, :3]

    def _inside(self, fixed_to_moving: torch.Tensor) -> torch.Tensor:
        """1 for each point mapped inside the prior's field of view less the margin, else 0."""
        with torch.no_grad():
            return (_sample(self.extent, self._coords(fixed_to_moving)) > 0.999).float()

    def _loss_terms(self, fixed_to_moving: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        values = _sample(self.moving, self._coords(fixed_to_moving))
        return _ncc(self.fixed_values, values, weights)

    def optimise(self, estimate: FloatMatrix, iterations: int, lr: float) -> FloatMatrix:
        """L-BFGS (strong Wolfe line search) on the 12 parameters of an affine about the points'
        centre, composed (in the fixed space) onto ``estimate``; returns the refined fixed ->
        moving map.  ``iterations`` bounds the L-BFGS iterations, ``lr`` scales its first step."""
        base = torch.as_tensor(estimate, dtype=torch.float32)
        centre = torch.as_tensor(self.centre, dtype=torch.float32)
        # the points counted are fixed for the level (those the start maps inside the prior), so
        # the objective is smooth and its gradient exact: no escape by mapping points outside
        weights = self._inside(base)
        params = torch.zeros(12, dtype=torch.float32, requires_grad=True)
        opt = torch.optim.LBFGS(
            [params],
            lr=lr,
            max_iter=iterations,
            max_eval=iterations * 2,
            tolerance_grad=1e-9,
            tolerance_change=1e-9,
            history_size=20,
            line_search_fn="strong_wolfe",
        )

        def closure() -> torch.Tensor:
            opt.zero_grad()
            loss = -self._loss_terms(base @ _delta(params, centre), weights)
            loss.backward()  # type: ignore[no-untyped-call]  # torch stub gap
            return loss

        opt.step(closure)  # type: ignore[no-untyped-call]  # torch stub gap
        with torch.no_grad():
            delta = _delta(params, centre).double().numpy()
        return np.asarray(estimate @ delta, dtype=np.float64)


def _delta(params: torch.Tensor, centre: torch.Tensor) -> torch.Tensor:
    """4 x 4 affine x -> c + (I + L)(x - c) + t from 12 parameters (9 of L, scaled; 3 of t)."""
    lin = torch.eye(3, dtype=params.dtype) + params[:9].view(3, 3) * _LINEAR_SCALE
    top = torch.cat([lin, (centre + params[9:] - lin @ centre)[:, None]], dim=1)
    bottom = torch.tensor([[0.0, 0.0, 0.0, 1.0]], dtype=params.dtype)
    return torch.cat([top, bottom], dim=0)


def refine_affine(
    moving: Volume,
    fixed: Volume,
    fixed_to_moving: FloatMatrix,
    *,
    levels: tuple[Level, ...] = LEVELS,
    points: int = POINTS,
) -> FloatMatrix:
    """Refine a fixed -> moving patient affine by maximising the images' correlation.

    Parameters
    ----------
    moving, fixed
        The prior and the current CT (HU), any spacing and orientation.
    fixed_to_moving
        The starting estimate (4 x 4, fixed patient mm -> moving patient mm).
    levels
        (point spacing mm, iterations, learning rate) per pyramid level, coarse first.
    points
        Fixed-image points per level.

    Returns
    -------
    numpy.ndarray
        The refined 4 x 4 fixed -> moving map; ``fixed_to_moving`` itself when the refinement
        did not raise the correlation at the finest level.
    """
    estimate = np.asarray(fixed_to_moving, dtype=np.float64)
    if not levels:
        return estimate
    last: _Level | None = None
    windowed_moving, windowed_fixed = _Windowed(moving), _Windowed(fixed)
    for spacing_mm, iterations, lr in levels:
        last = _Level(windowed_moving, windowed_fixed, fixed, spacing_mm, points)
        estimate = last.optimise(estimate, iterations, lr)
    assert last is not None
    if last.correlation(estimate) < last.correlation(fixed_to_moving):
        return np.asarray(fixed_to_moving, dtype=np.float64)
    return estimate
