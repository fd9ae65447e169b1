"""Synthetic follow-up pairs: a prior and a current chest CT phantom of one patient.

The current study is a chest phantom (``node.samples.phantoms``) rendered in place; the prior is
the same anatomy with other nodule sizes, lying differently on the table: a KNOWN affine
``P`` (patient shift and rotation, breathing-like cranio-caudal and antero-posterior scaling, a
global scale) maps a point of the current anatomy to where it lies in the prior image.  The
registration to learn is its inverse, prior -> current.

Nodule changes: the first nodule of the current study has grown (its prior radius is 0.6-0.85 x
the current one), the second is new (absent in the prior), the others are unchanged.

Landmarks (patient mm, both frames): the centres of the nodules present in both studies and
anatomical points (heart centre, the trachea's lower end, the centre of each lung, the top of
each lung dome).

Coordinates: patient (x, y, z) mm of voxel (slice k, row j, column i) is
``(-170 + i * sx, -170 + j * sy, k * sz)``, the geometry ``training.volumes.ct_volume`` gives.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import numpy as np
import numpy.typing as npt
from scipy import ndimage

from node.samples.phantoms import ChestPhantom, ChestScene, make_chest_scene, render_scene

__all__ = ["FollowupPair", "make_followup_pair", "patient_to_voxel", "voxel_to_patient"]

_ORIGIN = np.array([-170.0, -170.0, 0.0])


@dataclass(frozen=True, slots=True, eq=False)
class FollowupPair:
    """A prior and a current phantom with the known prior -> current transform and landmarks.

    ``prior_to_current`` is a 4 x 4 matrix on homogeneous patient coordinates (mm) mapping a
    point of the prior image onto the same anatomical point of the current image.
    ``landmarks_prior[i]`` and ``landmarks_current[i]`` are the same point (``landmark_names``).
    ``nodule_changes`` says per current nodule ``grown``, ``new`` or ``stable``.
    ``prior.nodules`` (and ``prior.scene``) describe the prior anatomy before its placement, in
    the current study's coordinates; in the prior image a nodule lies at
    ``inv(prior_to_current)`` applied to its centre.  ``prior.nodule_masks`` is empty.
    """

    prior: ChestPhantom
    current: ChestPhantom
    prior_to_current: npt.NDArray[np.float64]
    landmarks_prior: npt.NDArray[np.float64]
    landmarks_current: npt.NDArray[np.float64]
    landmark_names: tuple[str, ...]
    nodule_changes: tuple[str, ...]


def voxel_to_patient(
    index_zyx: npt.ArrayLike, spacing: tuple[float, float, float]
) -> npt.NDArray[np.float64]:
    """Patient (x, y, z) mm of (slice, row, column) indices (``(n, 3)`` or ``(3,)``)."""
    idx = np.asarray(index_zyx, dtype=np.float64)
    return np.asarray(_ORIGIN + idx[..., ::-1] * np.asarray(spacing)[::-1], dtype=np.float64)


def patient_to_voxel(
    point_xyz: npt.ArrayLike, spacing: tuple[float, float, float]
) -> npt.NDArray[np.float64]:
    """(slice, row, column) indices of patient (x, y, z) mm points."""
    p = np.asarray(point_xyz, dtype=np.float64)
    return np.asarray(((p - _ORIGIN) / np.asarray(spacing)[::-1])[..., ::-1], dtype=np.float64)


def _rotation(rx: float, ry: float, rz: float) -> npt.NDArray[np.float64]:
    cx, sx, cy, sy, cz, sz = (math.cos(rx), math.sin(rx), math.cos(ry), math.sin(ry),
                              math.cos(rz), math.sin(rz))  # fmt: skip
    mx = np.array([[1, 0, 0], [0, cx, -sx], [0, sx, cx]])
    my = np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
    mz = np.array([[cz, -sz, 0], [sz, cz, 0], [0, 0, 1]])
    return np.asarray(mz @ my @ mx, dtype=np.float64)


def _motion(rng: np.random.Generator, centre: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    """The current -> prior placement ``P`` (4 x 4, patient mm)."""
    deg = math.pi / 180.0
    rot = _rotation(
        rng.uniform(-3.0, 3.0) * deg, rng.uniform(-3.0, 3.0) * deg, rng.uniform(-6.0, 6.0) * deg
    )
    scale = rng.uniform(0.97, 1.03)
    breathing = np.diag([1.0, rng.uniform(0.96, 1.04), rng.uniform(0.93, 1.07)])
    linear = rot @ breathing * scale
    shift = np.array([rng.uniform(-15, 15), rng.uniform(-15, 15), rng.uniform(-20, 20)])
    out = np.eye(4)
    out[:3, :3] = linear
    out[:3, 3] = centre + shift - linear @ centre
    return out


def _scene_to_patient(zyx_mm: tuple[float, float, float]) -> npt.NDArray[np.float64]:
    """Patient (x, y, z) of a scene point (z, y, x) given in mm from the first voxel."""
    z, y, x = zyx_mm
    return np.array([x - 170.0, y - 170.0, z])


def _landmarks(
    scene: ChestScene, kept: list[int]
) -> tuple[list[str], list[npt.NDArray[np.float64]]]:
    names: list[str] = []
    points: list[npt.NDArray[np.float64]] = []
    for i in kept:
        names.append(f"nodule {i + 1}")
        points.append(_scene_to_patient(scene.nodules[i].center_mm))
    hz, hy, hx = scene.heart_center_mm
    names.append("heart centre")
    points.append(np.array([hx, hy, hz]))
    tz, ty, tx = scene.trachea.start_mm
    names.append("trachea lower end")
    points.append(np.array([tx, ty, tz]))
    for side, lung in zip(("right", "left"), scene.lungs, strict=True):
        cz, cy, cx = lung.center_mm
        names.append(f"{side} lung centre")
        points.append(np.array([cx, cy, cz]))
        names.append(f"{side} lung dome top")
        points.append(np.array([cx, cy, cz + lung.axes_mm[0] * 0.8]))
    return names, points


def make_followup_pair(
    seed: int,
    *,
    spacing: tuple[float, float, float] = (2.5, 2.0, 2.0),
    prior_spacing: tuple[float, float, float] | None = None,
) -> FollowupPair:
    """Generate one prior/current pair from ``seed`` (deterministic).

    Parameters
    ----------
    seed
        Seed of the generator; the same seed gives the same pair.
    spacing
        Voxel spacing (slice, row, column) in mm of the current study.
    prior_spacing
        Spacing of the prior (default: the current one).

    Returns
    -------
    FollowupPair
        Both phantoms, the prior -> current transform and the landmarks.
    """
    rng = np.random.default_rng(seed)
    n_nodules = int(rng.integers(2, 5))
    scene = make_chest_scene(rng, n_nodules=n_nodules)
    nodules = scene.nodules
    changes = ["grown", "new", *["stable"] * max(0, len(nodules) - 2)][: len(nodules)]
    prior_nodules = []
    for nod, change in zip(nodules, changes, strict=True):
        if change == "new":
            continue
        if change == "grown":
            nod = replace(nod, radius_mm=nod.radius_mm * float(rng.uniform(0.6, 0.85)))
        prior_nodules.append(nod)
    prior_scene = replace(scene, nodules=tuple(prior_nodules))
    p_spacing = spacing if prior_spacing is None else prior_spacing
    current = render_scene(scene, spacing, rng=rng)
    anatomy = render_scene(prior_scene, p_spacing, rng=rng)
    centre = np.array([0.0, 0.0, scene.fov_mm[0] / 2.0])
    placement = _motion(rng, centre)  # current anatomy -> prior image
    # prior voxel o -> patient q -> anatomy point P^-1 q -> anatomy voxel
    inv = np.asarray(np.linalg.inv(placement), dtype=np.float64)
    s = np.diag(np.asarray(p_spacing)[::-1])  # xyz spacing
    perm = np.eye(3)[::-1]  # zyx <-> xyz
    lin = perm @ np.linalg.inv(s) @ inv[:3, :3] @ s @ perm
    off_xyz = np.linalg.inv(s) @ (inv[:3, :3] @ _ORIGIN + inv[:3, 3] - _ORIGIN)
    hu = ndimage.affine_transform(
        anatomy.hu, lin, offset=off_xyz[::-1], order=1, mode="constant", cval=-1000.0
    ).astype(np.float32)
    labels = ndimage.affine_transform(
        anatomy.labels, lin, offset=off_xyz[::-1], order=0, mode="constant", cval=0
    )
    prior = ChestPhantom(
        hu=hu, labels=labels, spacing=p_spacing, nodules=prior_scene.nodules, scene=prior_scene
    )
    kept = [i for i, c in enumerate(changes) if c != "new"]
    names, points = _landmarks(scene, kept)
    current_pts = np.array(points)
    prior_pts = current_pts @ placement[:3, :3].T + placement[:3, 3]
    return FollowupPair(
        prior=prior,
        current=current,
        prior_to_current=inv,
        landmarks_prior=prior_pts,
        landmarks_current=current_pts,
        landmark_names=tuple(names),
        nodule_changes=tuple(changes),
    )
