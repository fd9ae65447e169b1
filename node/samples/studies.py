"""The bundled sample studies of ``ainode demo``: a chest CT phantom and a chest radiograph.

Both are generated on the fly (no patient data is shipped) by ``node.samples.phantoms``, the same
generator the demo models were trained on (``training/``, outside the runtime package): a chest
CT of 2.5 mm slices with lungs, vessels, heart, ribs, spine, table and three solid nodules, and a
frontal chest radiograph (a projection of a coarse chest scene) with an opacity in one lung.
The seeds are fixed, so every demo shows the same anatomy; the UIDs are fresh on every call.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from pydicom.uid import generate_uid

from node.samples.phantoms import (
    ChestPhantom,
    RadiographPhantom,
    make_chest_ct,
    make_radiograph,
)
from node.samples.writers import SamplePatient, write_ct_series, write_projection

__all__ = [
    "CT_SEED",
    "CT_SPACING",
    "CXR_SEED",
    "sample_chest_ct",
    "sample_radiograph",
    "write_sample_studies",
]

#: (slice, row, column) spacing in mm of the sample chest CT.
CT_SPACING = (2.5, 2.7, 2.7)
#: Seed of the sample chest CT phantom (three nodules, one of them irregular).
CT_SEED = 7
#: Seed of the sample chest radiograph phantom.
CXR_SEED = 11


def sample_chest_ct(seed: int = CT_SEED) -> ChestPhantom:
    """The demo's chest CT phantom, slice 0 most cranial (the order ``write_ct_series`` takes).

    The phantom generator stacks slices from inferior to superior; the sample is flipped so the
    written series starts at the apex, as scanners usually write it.  ``hu``, ``labels`` and the
    nodule masks are flipped together.
    """
    phantom = make_chest_ct(seed, spacing=CT_SPACING, n_nodules=3)
    return ChestPhantom(
        hu=np.ascontiguousarray(phantom.hu[::-1]),
        labels=np.ascontiguousarray(phantom.labels[::-1]),
        spacing=phantom.spacing,
        nodules=phantom.nodules,
        nodule_masks=tuple(np.ascontiguousarray(m[::-1]) for m in phantom.nodule_masks),
        scene=phantom.scene,
    )


def sample_radiograph(seed: int = CXR_SEED) -> RadiographPhantom:
    """The demo's frontal chest radiograph phantom (with an opacity in one lung)."""
    return make_radiograph(seed, has_opacity=True)


def write_sample_studies(out_dir: Path) -> list[Path]:
    """Write the demo's two synthetic studies under ``out_dir`` and return every file.

    ``out_dir/ct-chest/`` receives the chest CT phantom (CT Image Storage, one file per slice)
    and ``out_dir/dx-chest/`` one DX chest radiograph of a second study of the same (synthetic)
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
        sample_chest_ct().hu,
        spacing=CT_SPACING,
        out_dir=out_dir / "ct-chest",
        patient=patient,
        study_uid=generate_uid(),
    )
    cxr = sample_radiograph()
    dx = write_projection(
        np.clip(cxr.image, 0, 4095),
        pixel_spacing=cxr.spacing,
        out_dir=out_dir / "dx-chest",
        modality="DX",
        patient=patient,
        study_uid=generate_uid(),
    )
    return [*ct, dx]
