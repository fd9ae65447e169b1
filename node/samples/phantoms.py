"""Synthetic chest phantoms for training and testing the demo models (no real patient data).

A chest CT phantom is first drawn as a *scene* in millimetres (body, fat, muscle, spine, ribs,
table, trachea, heart, two lungs with vessels and 0-4 nodules) and then rendered on any voxel grid,
so the same anatomy can be sampled at different spacings.  Nodules carry a benign/malignant label
that follows a simple, plausible generative rule: irregular margins (lobulated or spiculated) and
no calcification mean malignant; smooth round nodules, often calcified and usually smaller, are
benign.  Radiograph phantoms are projections of coarse CT scenes, optionally with an opacity
(consolidation) in one lung.

Axes follow ``node.types.Volume``: arrays are (slice, row, column) = (z, y, x), x runs from the
patient's right to left, y from anterior to posterior and z from inferior to superior.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt
from scipy import ndimage

__all__ = [
    "LABEL_BACKGROUND",
    "LABEL_LUNG",
    "LABEL_NODULE",
    "ChestPhantom",
    "ChestScene",
    "NoduleSpec",
    "NoduleCrop",
    "RadiographPhantom",
    "make_chest_ct",
    "make_chest_scene",
    "make_nodule_crop",
    "make_radiograph",
    "render_scene",
]

LABEL_BACKGROUND = 0
LABEL_LUNG = 1
LABEL_NODULE = 2

FloatArray = npt.NDArray[np.float32]


@dataclass(frozen=True, slots=True)
class NoduleSpec:
    """One nodule of a scene, in scene millimetres (z, y, x) from the volume's first voxel."""

    center_mm: tuple[float, float, float]
    radius_mm: float
    margin: str  # "round" | "lobulated" | "spiculated"
    calcification: str  # "none" | "central" | "diffuse"
    hu: float
    is_malignant: bool
    bumps: tuple[tuple[float, float, float, float, float], ...] = ()  # (dz, dy, dx, amp, power)
    axes: tuple[float, float, float] = (1.0, 1.0, 1.0)

    @property
    def extent_mm(self) -> float:
        """Radius of a sphere that contains the whole nodule, spicules included."""
        amp = sum(b[3] for b in self.bumps)
        return self.radius_mm * max(self.axes) * (1.0 + amp) + 1.0

    @property
    def diameter_mm(self) -> float:
        """Nominal (core) diameter in mm."""
        return 2.0 * self.radius_mm

    def inside(self, dz: FloatArray, dy: FloatArray, dx: FloatArray) -> npt.NDArray[np.bool_]:
        """Mask of the offsets (mm, broadcastable) that lie inside the nodule."""
        az, ay, ax = self.axes
        dist = np.sqrt((dz / az) ** 2 + (dy / ay) ** 2 + (dx / ax) ** 2) + 1e-6
        radius = np.full(np.broadcast(dz, dy, dx).shape, self.radius_mm, dtype=np.float32)
        for bz, by, bx, amp, power in self.bumps:
            cos = (dz * bz + dy * by + dx * bx) / dist
            radius = radius + self.radius_mm * amp * np.clip(cos, 0.0, 1.0) ** power
        return np.asarray(dist <= radius)


@dataclass(frozen=True, slots=True)
class _Lung:
    center_mm: tuple[float, float, float]
    axes_mm: tuple[float, float, float]
    dome_mm: float
    hu: float


@dataclass(frozen=True, slots=True)
class _Tube:
    start_mm: tuple[float, float, float]
    end_mm: tuple[float, float, float]
    radius_mm: float


@dataclass(frozen=True, slots=True)
class ChestScene:
    """A chest described in millimetres, renderable on any grid (see ``render_scene``)."""

    fov_mm: tuple[float, float, float]
    body_axes_mm: tuple[float, float]
    fat_mm: float
    lungs: tuple[_Lung, _Lung]
    heart_center_mm: tuple[float, float, float]
    heart_axes_mm: tuple[float, float, float]
    vessels: tuple[_Tube, ...]
    trachea: _Tube
    nodules: tuple[NoduleSpec, ...]
    rib_period_mm: float
    rib_phase_mm: float
    noise_hu: float
    texture_seed: int
    opacity: tuple[float, float, float, float] | None = None  # (z, y, x, radius) consolidation


@dataclass(frozen=True, slots=True, eq=False)
class ChestPhantom:
    """A rendered chest CT phantom: HU voxels, ground-truth labels and the nodule list."""

    hu: FloatArray
    labels: npt.NDArray[np.uint8]
    spacing: tuple[float, float, float]
    nodules: tuple[NoduleSpec, ...]
    nodule_masks: tuple[npt.NDArray[np.bool_], ...] = field(default=())
    scene: ChestScene | None = None

    def nodule_centers_voxel(self) -> list[tuple[float, float, float]]:
        """Nodule centres as fractional (slice, row, column) indices on this grid."""
        return [
            (
                n.center_mm[0] / self.spacing[0],
                n.center_mm[1] / self.spacing[1],
                n.center_mm[2] / self.spacing[2],
            )
            for n in self.nodules
        ]


@dataclass(frozen=True, slots=True, eq=False)
class RadiographPhantom:
    """A synthetic frontal chest radiograph (rows = superior..inferior, columns = right..left)."""

    image: FloatArray  # (rows, columns), arbitrary units 0..~4000 like a CR/DX pixel value
    spacing: tuple[float, float]
    has_opacity: bool
    opacity_mask: npt.NDArray[np.bool_]


def _u(rng: np.random.Generator, lo: float, hi: float) -> float:
    return float(rng.uniform(lo, hi))


def _unit(rng: np.random.Generator) -> tuple[float, float, float]:
    v = rng.normal(size=3)
    v /= np.linalg.norm(v) + 1e-9
    return float(v[0]), float(v[1]), float(v[2])


def _make_nodule(
    rng: np.random.Generator, center: tuple[float, float, float], is_malignant: bool
) -> NoduleSpec:
    if is_malignant:
        diameter = _u(rng, 8.0, 26.0)
        margin = "spiculated" if rng.random() < 0.55 else "lobulated"
        calcification = "none"
        hu = _u(rng, -10.0, 60.0)
    else:
        diameter = _u(rng, 5.0, 15.0)
        margin = "round"
        roll = rng.random()
        calcification = "diffuse" if roll < 0.35 else "central" if roll < 0.7 else "none"
        hu = _u(rng, 30.0, 80.0)
    radius = diameter / 2.0
    bumps: list[tuple[float, float, float, float, float]] = []
    if margin == "spiculated":
        for _ in range(int(rng.integers(7, 13))):
            d = _unit(rng)
            bumps.append((d[0], d[1], d[2], _u(rng, 0.7, 1.3), _u(rng, 40.0, 90.0)))
    elif margin == "lobulated":
        for _ in range(int(rng.integers(3, 6))):
            d = _unit(rng)
            bumps.append((d[0], d[1], d[2], _u(rng, 0.3, 0.55), _u(rng, 3.0, 6.0)))
    axes = (1.0, 1.0, 1.0) if margin == "round" else (_u(rng, 0.8, 1.1), 1.0, _u(rng, 0.9, 1.2))
    return NoduleSpec(
        center_mm=center,
        radius_mm=radius,
        margin=margin,
        calcification=calcification,
        hu=hu,
        is_malignant=is_malignant,
        bumps=tuple(bumps),
        axes=axes,
    )


def _inside_lung(lung: _Lung, z: float, y: float, x: float, margin: float) -> bool:
    cz, cy, cx = lung.center_mm
    az, ay, ax = (a - margin for a in lung.axes_mm)
    if min(az, ay, ax) <= 0:
        return False
    r2 = ((y - cy) / ay) ** 2 + ((x - cx) / ax) ** 2
    if r2 + ((z - cz) / az) ** 2 > 1.0:
        return False
    base = cz - lung.axes_mm[0] * 0.55 + lung.dome_mm * max(0.0, 1.0 - r2)
    return z > base + margin


def make_chest_scene(
    rng: np.random.Generator,
    *,
    n_nodules: int | None = None,
    with_opacity: bool = False,
    noise_hu: float | None = None,
) -> ChestScene:
    """Draw a random chest scene (anatomy, vessels, nodules) in millimetres.

    Parameters
    ----------
    rng
        Source of randomness (the scene is a pure function of its state).
    n_nodules
        Number of nodules; default random 0-4 (about one scan in eight without nodules).
    with_opacity
        Add a consolidation-like opacity in one lung (used for radiograph phantoms).
    noise_hu
        Standard deviation of the quantum noise; default random 8-25 HU.

    Returns
    -------
    ChestScene
        The scene; render it with ``render_scene``.
    """
    fov = (_u(rng, 190.0, 230.0), 340.0, 340.0)
    bx, by = _u(rng, 140.0, 165.0), _u(rng, 95.0, 120.0)
    fat = _u(rng, 6.0, 22.0)
    wall = fat + 10.0
    zc = fov[0] * 0.48
    lungs = []
    for side in (-1.0, 1.0):
        ax = _u(rng, 50.0, 62.0)
        cx = side * (_u(rng, 28.0, 36.0) + ax)
        lungs.append(
            _Lung(
                center_mm=(zc + _u(rng, -5, 5), _u(rng, -8.0, 4.0), cx),
                axes_mm=(_u(rng, 85.0, 100.0), by * _u(rng, 0.68, 0.78), ax),
                dome_mm=_u(rng, 18.0, 32.0),
                hu=_u(rng, -870.0, -790.0),
            )
        )
    heart_c = (zc - _u(rng, 25.0, 40.0), _u(rng, -30.0, -15.0), _u(rng, 10.0, 22.0))
    heart_axes = (_u(rng, 45.0, 55.0), _u(rng, 45.0, 55.0), _u(rng, 50.0, 62.0))
    vessels = [tube for lung in lungs for tube in _vessel_tree(rng, lung)]
    top = fov[0] + 10.0
    trachea = _Tube(
        (lungs[0].center_mm[0] + 40.0, -20.0, 0.0), (top, -25.0, 0.0), _u(rng, 7.0, 9.0)
    )
    if n_nodules is None:
        n_nodules = int(rng.choice([0, 1, 1, 2, 2, 3, 3, 4]))
    nodules = _place_nodules(rng, lungs, n_nodules, body_axes=(by, bx), wall=wall)
    opacity = None
    if with_opacity:
        lung = lungs[int(rng.integers(0, 2))]
        cz, cy, cx = lung.center_mm
        opacity = (
            cz + _u(rng, -35.0, 25.0),
            cy + _u(rng, -20.0, 20.0),
            cx + _u(rng, -20.0, 20.0),
            _u(rng, 18.0, 38.0),
        )
    return ChestScene(
        fov_mm=fov,
        body_axes_mm=(by, bx),
        fat_mm=fat,
        lungs=(lungs[0], lungs[1]),
        heart_center_mm=heart_c,
        heart_axes_mm=heart_axes,
        vessels=tuple(vessels),
        trachea=trachea,
        nodules=tuple(nodules),
        rib_period_mm=_u(rng, 22.0, 28.0),
        rib_phase_mm=_u(rng, 0.0, 20.0),
        noise_hu=_u(rng, 8.0, 25.0) if noise_hu is None else noise_hu,
        texture_seed=int(rng.integers(0, 2**31 - 1)),
        opacity=opacity,
    )


def _vessel_tree(rng: np.random.Generator, lung: _Lung) -> list[_Tube]:
    """Vessels from the lung's hilum: 8-13 branches, each with one side branch."""
    vessels: list[_Tube] = []
    cz, cy, cx = lung.center_mm
    hilum = (
        cz + _u(rng, -5, 10),
        cy + _u(rng, -5, 5),
        cx - math.copysign(lung.axes_mm[2] * 0.55, cx),
    )
    for _ in range(int(rng.integers(8, 14))):
        d = np.array(_unit(rng))
        d[2] = math.copysign(abs(d[2]) + 0.3, cx)
        d /= np.linalg.norm(d)
        length = _u(rng, 35.0, 80.0)
        end = tuple(float(h + length * c) for h, c in zip(hilum, d, strict=True))
        r0 = _u(rng, 1.2, 2.6)
        vessels.append(_Tube(hilum, (end[0], end[1], end[2]), r0))
        mid = tuple(float(h + 0.6 * length * c) for h, c in zip(hilum, d, strict=True))
        d2 = np.array(_unit(rng)) * 0.6 + d
        d2 /= np.linalg.norm(d2)
        end2 = tuple(float(m + _u(rng, 20.0, 45.0) * c) for m, c in zip(mid, d2, strict=True))
        vessels.append(_Tube((mid[0], mid[1], mid[2]), (end2[0], end2[1], end2[2]), r0 * 0.6))
    return vessels


def _place_nodules(
    rng: np.random.Generator,
    lungs: list[_Lung],
    n_nodules: int,
    *,
    body_axes: tuple[float, float],
    wall: float,
) -> list[NoduleSpec]:
    """Up to ``n_nodules`` nodules inside the lungs, clear of the chest wall and of each other
    (400 tries at most)."""
    by, bx = body_axes
    nodules: list[NoduleSpec] = []
    attempts = 0
    while len(nodules) < n_nodules and attempts < 400:
        attempts += 1
        nod = _make_nodule(rng, (0.0, 0.0, 0.0), bool(rng.random() < 0.5))
        lung = lungs[int(rng.integers(0, 2))]
        cz, cy, cx = lung.center_mm
        az, ay, ax = lung.axes_mm
        z = cz + _u(rng, -az, az)
        y = cy + _u(rng, -ay, ay)
        x = cx + _u(rng, -ax, ax)
        ext = nod.extent_mm
        margin = min(ext, nod.radius_mm * 1.6) + 3.0
        if not _inside_lung(lung, z, y, x, margin):
            continue
        if (y / (by - wall - margin)) ** 2 + (x / (bx - wall - margin)) ** 2 > 1.0:
            continue
        dx = x + 170.0
        dy = y + 170.0
        if any(
            math.dist((z, dy, dx), other.center_mm) < ext + other.extent_mm + 4.0
            for other in nodules
        ):
            continue
        nodules.append(
            NoduleSpec(
                center_mm=(z, dy, dx),
                radius_mm=nod.radius_mm,
                margin=nod.margin,
                calcification=nod.calcification,
                hu=nod.hu,
                is_malignant=nod.is_malignant,
                bumps=nod.bumps,
                axes=nod.axes,
            )
        )
    return nodules


def _tube_mask(tube: _Tube, z: FloatArray, y: FloatArray, x: FloatArray) -> npt.NDArray[np.bool_]:
    a = np.array(tube.start_mm)
    b = np.array(tube.end_mm)
    ab = b - a
    denom = float(ab @ ab) + 1e-9
    t = ((z - a[0]) * ab[0] + (y - a[1]) * ab[1] + (x - a[2]) * ab[2]) / denom
    t = np.clip(t, 0.0, 1.0)
    d2 = (z - a[0] - t * ab[0]) ** 2 + (y - a[1] - t * ab[1]) ** 2 + (x - a[2] - t * ab[2]) ** 2
    radius = tube.radius_mm * (1.0 - 0.4 * t)
    return np.asarray(d2 <= radius**2)


def _box(
    lo_mm: npt.NDArray[np.float64],
    hi_mm: npt.NDArray[np.float64],
    spacing: tuple[float, float, float],
    shape: tuple[int, int, int],
) -> tuple[slice, slice, slice] | None:
    sl = []
    for lo, hi, s, n in zip(lo_mm, hi_mm, spacing, shape, strict=True):
        i0 = max(0, int(math.floor(lo / s)))
        i1 = min(n, int(math.ceil(hi / s)) + 1)
        if i1 <= i0:
            return None
        sl.append(slice(i0, i1))
    return sl[0], sl[1], sl[2]


def render_scene(
    scene: ChestScene,
    spacing: tuple[float, float, float],
    *,
    rng: np.random.Generator | None = None,
    extra_noise_hu: float = 0.0,
    detail: bool = True,
) -> ChestPhantom:
    """Render ``scene`` on a grid of ``spacing`` (slice, row, column) mm covering its field of view.

    Parameters
    ----------
    scene
        The scene from ``make_chest_scene``.
    spacing
        Voxel spacing in mm.
    rng
        Noise source; None renders without quantum noise (the "clean" image).
    extra_noise_hu
        Additional noise standard deviation (simulates a low-dose acquisition).
    detail
        Render lung texture and scanner blur (off for cheap projections).

    Returns
    -------
    ChestPhantom
        HU voxels (float32), labels (0 background, 1 lung, 2 nodule) and per-nodule masks.
    """
    shape = (
        int(round(scene.fov_mm[0] / spacing[0])),
        int(round(scene.fov_mm[1] / spacing[1])),
        int(round(scene.fov_mm[2] / spacing[2])),
    )
    z = (np.arange(shape[0], dtype=np.float32) * spacing[0]).reshape(-1, 1, 1)
    y = (np.arange(shape[1], dtype=np.float32) * spacing[1] - 170.0).reshape(1, -1, 1)
    x = (np.arange(shape[2], dtype=np.float32) * spacing[2] - 170.0).reshape(1, 1, -1)
    by, bx = scene.body_axes_mm
    hu = np.full(shape, -1000.0, dtype=np.float32)
    labels = np.zeros(shape, dtype=np.uint8)
    e_body = (y / by) ** 2 + (x / bx) ** 2
    body2d = e_body[0] <= 1.0
    inner2d = ((y / (by - scene.fat_mm)) ** 2 + (x / (bx - scene.fat_mm)) ** 2)[0] <= 1.0
    hu[:, body2d] = -100.0
    hu[:, inner2d] = 40.0
    # table under the patient (posterior)
    table = (np.abs(y[0] - (by + 18.0)) <= 3.0) & (np.abs(x[0]) <= 200.0)
    hu[:, np.broadcast_to(table, body2d.shape)] = 150.0
    # ribs: thin elliptic shell around the lungs, present in periodic bands along z
    shell = (y / (by - scene.fat_mm - 12.0)) ** 2 + (x / (bx - scene.fat_mm - 12.0)) ** 2
    shell2d = (shell[0] >= 0.80) & (shell[0] <= 0.93) & (np.abs(x[0]) > 25.0)
    band = ((z[:, 0, 0] + scene.rib_phase_mm) % scene.rib_period_mm) < 9.0
    rib_mask = band[:, None, None] & shell2d[None]
    hu[rib_mask] = 450.0
    # spine (posterior) and heart
    spine2d = ((y[0] - by * 0.72) ** 2 + x[0] ** 2) <= 16.0**2
    hu[:, spine2d] = 550.0
    hcz, hcy, hcx = scene.heart_center_mm
    haz, hay, hax = scene.heart_axes_mm
    heart = ((z - hcz) / haz) ** 2 + ((y - hcy) / hay) ** 2 + ((x - hcx) / hax) ** 2 <= 1.0
    lung_mask = _render_lungs(scene, hu, heart, (z, y, x))
    hu[heart & ~lung_mask & np.broadcast_to(inner2d, shape)] = 45.0
    if detail:
        texture_rng = np.random.default_rng(scene.texture_seed)
        texture = ndimage.gaussian_filter(
            texture_rng.normal(size=shape).astype(np.float32), sigma=3.0 / np.array(spacing)
        )
        texture *= 25.0 / (float(texture.std()) + 1e-6)
        hu[lung_mask] += texture[lung_mask]
    labels[lung_mask] = LABEL_LUNG
    # trachea (air, not lung)
    trachea = _tube_mask(scene.trachea, z, y, x)
    hu[trachea] = -990.0
    # vessels (inside lungs only; they belong to the lung label)
    for tube in scene.vessels:
        lo = np.minimum(tube.start_mm, tube.end_mm) - tube.radius_mm - 1.0
        hi = np.maximum(tube.start_mm, tube.end_mm) + tube.radius_mm + 1.0
        lo[1:] += 170.0
        hi[1:] += 170.0
        box = _box(lo, hi, spacing, shape)
        if box is None:
            continue
        m = _tube_mask(tube, z[box[0]], y[:, box[1]], x[:, :, box[2]]) & lung_mask[box]
        hu[box][m] = 40.0
    # opacity (consolidation): soft-tissue density inside the lung, stays lung-labelled
    opacity_mask = np.zeros(shape, dtype=bool)
    if scene.opacity is not None:
        oz, oy, ox, orad = scene.opacity
        blob = ((z - oz) ** 2 + (y - oy) ** 2 * 1.3 + (x - ox) ** 2) <= orad**2
        opacity_mask = blob & lung_mask
        hu[opacity_mask] = np.maximum(hu[opacity_mask], -80.0)
    masks = _render_nodules(scene, hu, labels, lung_mask, spacing, (z, y, x))
    # scanner blur, then noise
    if detail:
        hu = ndimage.gaussian_filter(hu, sigma=0.6 / np.array(spacing)).astype(np.float32)
    sigma = math.hypot(scene.noise_hu, extra_noise_hu)
    if rng is not None and sigma > 0:
        noise = ndimage.gaussian_filter(rng.normal(size=shape).astype(np.float32), sigma=0.5)
        noise *= sigma / (float(noise.std()) + 1e-6)
        hu += noise
    return ChestPhantom(
        hu=hu,
        labels=labels,
        spacing=spacing,
        nodules=scene.nodules,
        nodule_masks=tuple(masks),
        scene=scene,
    )


def _render_lungs(
    scene: ChestScene, hu: npt.NDArray[np.float32], heart: npt.NDArray[np.bool_], grid: Any
) -> npt.NDArray[np.bool_]:
    """Draw the lungs (inside the chest wall, outside the heart) into ``hu``; their mask."""
    z, y, x = grid
    shape = hu.shape
    by, bx = scene.body_axes_mm
    # lungs
    lung_mask = np.zeros(shape, dtype=bool)
    wall = scene.fat_mm + 10.0  # fat, then muscle and ribs around the lungs
    lung_space = ((y / (by - wall)) ** 2 + (x / (bx - wall)) ** 2) <= 1.0
    for lung in scene.lungs:
        cz, cy, cx = lung.center_mm
        az, ay, ax = lung.axes_mm
        r2 = ((y - cy) / ay) ** 2 + ((x - cx) / ax) ** 2
        inside = (r2 + ((z - cz) / az) ** 2 <= 1.0) & (
            z > cz - az * 0.55 + lung.dome_mm * np.clip(1.0 - r2, 0.0, None)
        )
        inside &= ~heart
        inside &= lung_space  # lungs stay inside the chest wall
        hu[inside] = lung.hu
        lung_mask |= inside
    return lung_mask


def _render_nodules(
    scene: ChestScene,
    hu: npt.NDArray[np.float32],
    labels: npt.NDArray[np.uint8],
    lung_mask: npt.NDArray[np.bool_],
    spacing: tuple[float, float, float],
    grid: Any,
) -> list[npt.NDArray[np.bool_]]:
    """Draw the nodules (inside the lungs) into ``hu`` and ``labels``; one mask per nodule."""
    z, y, x = grid
    shape = hu.shape
    # nodules
    masks = []
    for nod in scene.nodules:
        ext = nod.extent_mm
        c = np.array(nod.center_mm, dtype=np.float64)
        box = _box(c - ext, c + ext, spacing, shape)
        full = np.zeros(shape, dtype=bool)
        if box is not None:
            dz = z[box[0]] - c[0]
            dy = y[:, box[1]] + 170.0 - c[1]
            dx = x[:, :, box[2]] + 170.0 - c[2]
            m = nod.inside(dz, dy, dx) & lung_mask[box]
            sub = hu[box]
            sub[m] = nod.hu
            if nod.calcification == "diffuse":
                sub[m] = 380.0
            elif nod.calcification == "central":
                core = (dz**2 + dy**2 + dx**2) <= (0.5 * nod.radius_mm) ** 2
                sub[m & core] = 650.0
            hu[box] = sub
            full[box] = m
            labels[full] = LABEL_NODULE
        masks.append(full)
    return masks


def make_chest_ct(
    seed: int,
    *,
    spacing: tuple[float, float, float] | None = None,
    n_nodules: int | None = None,
) -> ChestPhantom:
    """Generate one noisy chest CT phantom from ``seed`` (deterministic).

    Parameters
    ----------
    seed
        Seed of the generator; the same seed gives the same phantom.
    spacing
        Voxel spacing (slice, row, column) in mm; default random: 1.5-3.0 mm slices and
        1.4-2.2 mm pixels.
    n_nodules
        Number of nodules; default random 0-4.

    Returns
    -------
    ChestPhantom
        The rendered phantom.
    """
    rng = np.random.default_rng(seed)
    scene = make_chest_scene(rng, n_nodules=n_nodules)
    if spacing is None:
        px = _u(rng, 1.4, 2.2)
        spacing = (_u(rng, 1.5, 3.0), px, px)
    return render_scene(scene, spacing, rng=rng)


def make_radiograph(seed: int, *, has_opacity: bool | None = None) -> RadiographPhantom:
    """Generate a frontal chest radiograph phantom (a projection of a coarse chest scene).

    Parameters
    ----------
    seed
        Seed of the generator.
    has_opacity
        Whether to include a lung opacity; default random (50 %).

    Returns
    -------
    RadiographPhantom
        Image of 2.5 mm pixels (about 90 x 136), rows from superior to inferior.
    """
    rng = np.random.default_rng(seed)
    if has_opacity is None:
        has_opacity = bool(rng.random() < 0.5)
    scene = make_chest_scene(rng, n_nodules=0, with_opacity=has_opacity, noise_hu=0.0)
    spacing = (2.5, 8.0, 2.5)
    ph = render_scene(scene, spacing, rng=None, detail=False)
    mu = np.clip(ph.hu + 1000.0, 0.0, None) / 1000.0  # relative attenuation (water = 1)
    path = mu.sum(axis=1) * spacing[1] / 10.0  # (z, x) in cm of water equivalent
    image = 4000.0 * (1.0 - np.exp(-0.09 * path))
    image *= _u(rng, 0.85, 1.15)
    image += rng.normal(scale=_u(rng, 20.0, 60.0), size=image.shape)
    image = image[::-1].astype(np.float32)  # rows superior -> inferior
    if scene.opacity is not None:
        oz, _, ox, orad = scene.opacity
        zz = (np.arange(image.shape[0]) * spacing[0])[::-1].reshape(-1, 1)
        xx = (np.arange(image.shape[1]) * spacing[2] - 170.0).reshape(1, -1)
        lung_proj = (ph.labels == LABEL_LUNG).any(axis=1)[::-1]
        mask = (((zz - oz) ** 2 + (xx - ox) ** 2) <= orad**2) & lung_proj
    else:
        mask = np.zeros(image.shape, dtype=bool)
    return RadiographPhantom(
        image=np.ascontiguousarray(image),
        spacing=(spacing[0], spacing[2]),
        has_opacity=has_opacity,
        opacity_mask=mask,
    )


@dataclass(frozen=True, slots=True, eq=False)
class NoduleCrop:
    """A small CT region (about 64 mm wide) around one nodule, with the nodule's mask."""

    hu: FloatArray
    mask: npt.NDArray[np.bool_]
    spacing: tuple[float, float, float]
    nodule: NoduleSpec

    @property
    def center_index(self) -> tuple[float, float, float]:
        """The nodule centre as a fractional (slice, row, column) index."""
        c = self.nodule.center_mm
        return (c[0] / self.spacing[0], c[1] / self.spacing[1], c[2] / self.spacing[2])


def make_nodule_crop(seed: int, *, is_malignant: bool | None = None) -> NoduleCrop:
    """Render one nodule in lung parenchyma (with vessels and sometimes a pleural wall).

    Cheap to generate in the thousands; the nodule follows the same generative rule as in
    ``make_chest_scene``.

    Parameters
    ----------
    seed
        Seed of the generator.
    is_malignant
        Class of the nodule; default random (50 %).

    Returns
    -------
    NoduleCrop
        HU voxels of about 64 mm per side, the nodule mask and spacing.
    """
    rng = np.random.default_rng(seed)
    if is_malignant is None:
        is_malignant = bool(rng.random() < 0.5)
    px = _u(rng, 1.4, 2.2)
    spacing = (_u(rng, 1.5, 3.0), px, px)
    size_mm = 72.0
    shape = tuple(int(round(size_mm / s)) for s in spacing)
    z = (np.arange(shape[0], dtype=np.float32) * spacing[0]).reshape(-1, 1, 1)
    y = (np.arange(shape[1], dtype=np.float32) * spacing[1]).reshape(1, -1, 1)
    x = (np.arange(shape[2], dtype=np.float32) * spacing[2]).reshape(1, 1, -1)
    center = (
        size_mm / 2 + _u(rng, -3, 3),
        size_mm / 2 + _u(rng, -3, 3),
        size_mm / 2 + _u(rng, -3, 3),
    )
    base = _make_nodule(rng, (0.0, 0.0, 0.0), is_malignant)
    nod = NoduleSpec(
        center_mm=center,
        radius_mm=base.radius_mm,
        margin=base.margin,
        calcification=base.calcification,
        hu=base.hu,
        is_malignant=base.is_malignant,
        bumps=base.bumps,
        axes=base.axes,
    )
    hu = np.full(shape, _u(rng, -870.0, -790.0), dtype=np.float32)
    texture = ndimage.gaussian_filter(
        rng.normal(size=shape).astype(np.float32), sigma=3.0 / np.array(spacing)
    )
    hu += texture * (25.0 / (float(texture.std()) + 1e-6))
    lung = np.ones(shape, dtype=bool)
    if rng.random() < 0.3:  # pleura / chest wall on one side, beyond the nodule
        axis = int(rng.integers(1, 3))
        coord = (y, x)[axis - 1]
        wall = center[axis] + nod.extent_mm + _u(rng, 3.0, 12.0)
        lung = np.broadcast_to(coord < wall, shape).copy()
        hu[~lung] = 40.0
    for _ in range(int(rng.integers(1, 4))):
        d = np.array(_unit(rng))
        offset = np.array(_unit(rng)) * _u(rng, nod.radius_mm + 2.0, 25.0)
        mid = np.array(center) + offset
        tube = _Tube(
            (float(mid[0] - 40 * d[0]), float(mid[1] - 40 * d[1]), float(mid[2] - 40 * d[2])),
            (float(mid[0] + 40 * d[0]), float(mid[1] + 40 * d[1]), float(mid[2] + 40 * d[2])),
            _u(rng, 1.0, 2.5),
        )
        hu[_tube_mask(tube, z, y, x) & lung] = 40.0
    mask = nod.inside(z - center[0], y - center[1], x - center[2]) & lung
    hu[mask] = nod.hu
    if nod.calcification == "diffuse":
        hu[mask] = 380.0
    elif nod.calcification == "central":
        core = ((z - center[0]) ** 2 + (y - center[1]) ** 2 + (x - center[2]) ** 2) <= (
            0.5 * nod.radius_mm
        ) ** 2
        hu[mask & core] = 650.0
    hu = ndimage.gaussian_filter(hu, sigma=0.6 / np.array(spacing)).astype(np.float32)
    noise = ndimage.gaussian_filter(rng.normal(size=shape).astype(np.float32), sigma=0.5)
    hu += noise * (_u(rng, 8.0, 25.0) / (float(noise.std()) + 1e-6))
    return NoduleCrop(hu=hu, mask=mask, spacing=spacing, nodule=nod)
