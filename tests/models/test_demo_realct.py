"""lung-nodule-seg / -detect on the real CT series of the corpus: no error, plausible output.

The chest CT (TCIA Lung-PET-CT-Dx A0002, 30 slices of 8 mm) must show two lungs, one on each
side of the midline; the single-slice CTs (a dental/head slice, a thorax slice, a tiny 128 x 128
slice) must go through the 3D model without error, and the head slice must not be called lung.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from scipy import ndimage

from node.imaging import load_volume
from node.models.builtin.lung_nodule_detect import LungNoduleDetection
from node.models.builtin.lung_nodule_seg import LungNoduleSegmentation


@pytest.fixture(scope="module")
def seg() -> LungNoduleSegmentation:
    return LungNoduleSegmentation()


@pytest.mark.slow
def test_chest_ct_lungs_found_left_and_right(corpus: Path, seg: LungNoduleSegmentation) -> None:
    files = sorted((corpus / "ct" / "chest-ct-siemens-sensation10-b40f-30sl").glob("*.dcm"))
    assert len(files) == 30
    vol = load_volume(files, dtype="float32")
    pred = LungNoduleDetection(seg).predict(vol)
    labels = seg.predict(vol).label_map
    assert labels is not None and labels.shape == vol.voxels.shape
    voxel_ml = float(np.prod(vol.spacing)) / 1000.0
    lung = labels == 1
    lung_ml = float(lung.sum()) * voxel_ml
    # adult lungs: a few litres (the 30 x 8 mm series covers most of the thorax)
    assert 1000.0 < lung_ml < 9000.0, f"lung volume {lung_ml:.0f} ml"
    # what is called lung is air-like tissue, not soft tissue or outside air
    median_hu = float(np.median(vol.voxels[lung]))
    assert -950.0 < median_hu < -650.0, f"median HU in lung {median_hu:.0f}"
    # two big components, one on each side of the body midline
    comps, n = ndimage.label(lung)
    sizes = ndimage.sum(lung, comps, range(1, n + 1))
    big = [i + 1 for i in np.argsort(sizes)[::-1][:2] if sizes[i] * voxel_ml > 300.0]
    assert len(big) == 2, f"component sizes (ml): {sorted(sizes * voxel_ml)[-4:]}"
    cols = [ndimage.center_of_mass(comps == i)[2] for i in big]
    body_cols = np.nonzero((vol.voxels > -500).any(axis=(0, 1)))[0]
    midline = (body_cols.min() + body_cols.max()) / 2
    assert min(cols) < midline < max(cols)
    # nodule findings, if any, lie inside the body and are of plausible size
    for f in pred.findings:
        assert f.diameter_mm is not None and f.diameter_mm < 120.0


@pytest.mark.parametrize("name", ["Issue141.dcm", "SignedCT.dcm", "CT_small.dcm"])
def test_single_slice_ct_runs_without_error(
    corpus: Path, seg: LungNoduleSegmentation, name: str
) -> None:
    vol = load_volume([corpus / "ct" / "single-slices" / name], dtype="float32")
    pred = seg.predict(vol)
    assert pred.label_map is not None and pred.label_map.shape == vol.voxels.shape
    lung_fraction = float((pred.label_map == 1).mean())
    if name == "Issue141.dcm":  # head (dental) CT: no lungs
        assert lung_fraction < 0.05, f"{lung_fraction:.3f} of a head slice labelled lung"
