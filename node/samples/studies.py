"""The bundled sample studies of ``ainode demo``: a chest CT phantom and a chest radiograph.

Both are generated on the fly (no patient data is shipped): a small CT volume (128 x 128 x 80,
2.5 mm slices) with a body ellipse, two lungs near -800 HU, mediastinum, spine and a few solid
nodules; and a 256 x 256 PA chest radiograph of a similar thorax.  The generators are private so
that richer phantoms (``node.models.demo.phantoms``) can replace them without changing callers.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import numpy.typing as npt
from pydicom.uid import generate_uid

from node.samples.writers import SamplePatient, write_ct_series, write_projection

__all__ = ["CT_SHAPE", "CT_SPACING", "NODULES_MM", "write_sample_studies"]

#: (slices, rows, columns) of the sample chest CT.
CT_SHAPE = (80, 128, 128)
#: (slice, row, column) spacing in mm of the sample chest CT.
CT_SPACING = (2.5, 2.7, 2.7)
#: Nodules of the sample CT: centre (slice, row, column) in voxels and radius in mm.
NODULES_MM: tuple[tuple[tuple[int, int, int], float], ...] = (
    ((30, 54, 38), 6.0),
    ((45, 70, 90), 8.0),
    ((55, 52, 84), 4.5),
)


def _ellipse(
    shape: tuple[int, int], center: tuple[float, float], radii: tuple[float, float]
) -> npt.NDArray[np.bool_]:
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    inside = ((yy - center[0]) / radii[0]) ** 2 + ((xx - center[1]) / radii[1]) ** 2 <= 1
    return np.asarray(inside, dtype=bool)


def _chest_ct_phantom(seed: int = 7) -> npt.NDArray[np.float32]:
    """A chest CT phantom in HU, shape ``CT_SHAPE``: air, fat, muscle, lungs, spine, nodules."""
    rng = np.random.default_rng(seed)
    slices, rows, cols = CT_SHAPE
    vol = np.full(CT_SHAPE, -1000.0, dtype=np.float32)
    dz, dy, dx = CT_SPACING
    for k in range(slices):
        # the thorax narrows a little towards the apex (slice 0 is cranial)
        t = k / (slices - 1)
        scale = 0.85 + 0.15 * np.sin(np.pi * min(1.0, 0.3 + t))
        body = _ellipse((rows, cols), (rows * 0.52, cols / 2), (rows * 0.36 * scale, cols * 0.46))
        inner = _ellipse((rows, cols), (rows * 0.52, cols / 2), (rows * 0.32 * scale, cols * 0.42))
        img = vol[k]
        img[body] = -90.0  # subcutaneous fat
        img[inner] = 40.0  # muscle / soft tissue
        lung_r = (rows * 0.24 * scale, cols * 0.15)
        in_lungs = 0.1 < t < 0.95
        if in_lungs:
            for cx in (cols * 0.31, cols * 0.69):
                lung = _ellipse((rows, cols), (rows * 0.48, cx), lung_r)
                img[lung] = -820.0
        heart_r = (rows * 0.13, cols * 0.12) if t > 0.45 else (rows * 0.08, cols * 0.07)
        img[_ellipse((rows, cols), (rows * 0.44, cols * 0.53), heart_r)] = 45.0
        img[_ellipse((rows, cols), (rows * 0.35, cols * 0.5), (rows * 0.04, cols * 0.04))] = 160.0
        spine = _ellipse((rows, cols), (rows * 0.78, cols / 2), (rows * 0.06, cols * 0.05))
        img[spine] = 700.0
    zz, yy, xx = np.mgrid[:slices, :rows, :cols]
    for (cz, cy, cx), radius_mm in NODULES_MM:
        dist = np.sqrt(((zz - cz) * dz) ** 2 + ((yy - cy) * dy) ** 2 + ((xx - cx) * dx) ** 2)
        vol[dist <= radius_mm] = 30.0
    vol += rng.normal(0.0, 12.0, size=vol.shape).astype(np.float32)
    return vol


def _chest_radiograph_phantom(seed: int = 11) -> npt.NDArray[np.float32]:
    """A 256 x 256 PA chest radiograph in detector units 0..4095 (bright = attenuating)."""
    rng = np.random.default_rng(seed)
    rows = cols = 256
    img = np.full((rows, cols), 200.0, dtype=np.float32)
    body = _ellipse((rows, cols), (rows * 0.55, cols / 2), (rows * 0.5, cols * 0.44))
    img[body] = 2600.0
    for cx in (cols * 0.32, cols * 0.68):
        lung = _ellipse((rows, cols), (rows * 0.5, cx), (rows * 0.3, cols * 0.15))
        img[lung] = 900.0
    img[_ellipse((rows, cols), (rows * 0.62, cols * 0.54), (rows * 0.16, cols * 0.14))] = 2300.0
    img[:, int(cols * 0.47) : int(cols * 0.53)] += (
        700.0 * body[:, int(cols * 0.47) : int(cols * 0.53)]
    )
    yy = np.arange(rows)[:, None]
    for r in range(8):  # ribs: faint horizontal bands across the lungs
        y0 = rows * (0.26 + r * 0.07)
        img += 250.0 * (np.abs(yy - y0) < 3) * body
    img[_ellipse((rows, cols), (rows * 0.42, cols * 0.30), (6, 6))] += 600.0  # nodule
    img += rng.normal(0.0, 25.0, size=img.shape).astype(np.float32)
    return np.clip(img, 0, 4095)


def write_sample_studies(out_dir: Path) -> list[Path]:
    """Write the demo's two synthetic studies under ``out_dir`` and return every file.

    ``out_dir/ct-chest/`` receives the chest CT phantom (80 CT Image Storage slices) and
    ``out_dir/dx-chest/`` one DX chest radiograph of a second study of the same (synthetic)
    patient.  All UIDs are fresh on every call.

    Parameters
    ----------
    out_dir:
        Folder to write into (created).

    Returns
    -------
    list[Path]
        The CT slices in order, then the radiograph.
    """
    patient = SamplePatient()
    ct = write_ct_series(
        _chest_ct_phantom(),
        spacing=CT_SPACING,
        out_dir=out_dir / "ct-chest",
        patient=patient,
        study_uid=generate_uid(),
    )
    dx = write_projection(
        _chest_radiograph_phantom(),
        out_dir=out_dir / "dx-chest",
        modality="DX",
        patient=patient,
        study_uid=generate_uid(),
    )
    return [*ct, dx]
