"""The synthetic phantoms and the metric functions the demo-model tests rely on."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from node.samples.phantoms import (
    LABEL_LUNG,
    LABEL_NODULE,
    make_chest_ct,
    make_nodule_crop,
    make_radiograph,
)
from training import evaluate as ev
from training.volumes import ct_volume, radiograph_volume


def test_chest_phantom_is_deterministic_per_seed() -> None:
    a, b, c = make_chest_ct(11), make_chest_ct(11), make_chest_ct(12)
    assert np.array_equal(a.hu, b.hu) and np.array_equal(a.labels, b.labels)
    assert a.hu.shape != c.hu.shape or not np.array_equal(a.hu, c.hu)


def test_chest_phantom_anatomy_and_labels_are_consistent() -> None:
    ph = make_chest_ct(21, n_nodules=3)
    assert ph.hu.dtype == np.float32 and ph.labels.dtype == np.uint8
    lung = ph.labels == LABEL_LUNG
    assert -900 < float(np.median(ph.hu[lung])) < -700
    assert float(np.median(ph.hu[ph.labels == 0][:1000])) < -900  # the corner is outside air
    # two lungs
    _, n = ndimage.label(lung)
    assert n >= 2
    assert len(ph.nodules) == 3 == len(ph.nodule_masks)
    for nod, mask in zip(ph.nodules, ph.nodule_masks, strict=True):
        assert mask.any()
        assert (ph.labels[mask] == LABEL_NODULE).all()
        # the nodule sits in the lung: its dilated rim is lung (or another nodule)
        rim = ndimage.binary_dilation(mask, iterations=2) & ~mask
        assert float((ph.labels[rim] > 0).mean()) > 0.9
        centre = tuple(int(round(v)) for v in np.asarray(nod.center_mm) / ph.spacing)
        assert ph.labels[centre] == LABEL_NODULE


def test_spacing_varies_and_field_of_view_stays_physical() -> None:
    phantoms = [make_chest_ct(s) for s in range(31, 35)]
    spacings = {p.spacing for p in phantoms}
    assert len(spacings) == 4
    for p in phantoms:
        extent = np.asarray(p.hu.shape) * np.asarray(p.spacing)
        assert 180 < extent[0] < 240 and 330 < extent[1] < 350


def test_malignancy_follows_the_generative_rule() -> None:
    crops = [make_nodule_crop(s) for s in range(200)]
    malignant = [c for c in crops if c.nodule.is_malignant]
    benign = [c for c in crops if not c.nodule.is_malignant]
    assert 60 < len(malignant) < 140
    assert all(c.nodule.margin in ("lobulated", "spiculated") for c in malignant)
    assert all(c.nodule.calcification == "none" for c in malignant)
    assert all(c.nodule.margin == "round" for c in benign)
    assert np.mean([c.nodule.diameter_mm for c in malignant]) > np.mean(
        [c.nodule.diameter_mm for c in benign]
    )
    assert any(c.nodule.calcification != "none" for c in benign)
    for c in crops[:20]:
        idx = tuple(int(round(v)) for v in c.center_index)
        assert c.mask[idx]


def test_radiograph_phantom_opacity() -> None:
    with_op = make_radiograph(5, has_opacity=True)
    without = make_radiograph(5, has_opacity=False)
    assert with_op.has_opacity and with_op.opacity_mask.any()
    assert not without.has_opacity and not without.opacity_mask.any()
    vol = radiograph_volume(with_op)
    assert vol.voxels.shape == (1, *with_op.image.shape) and not vol.is_3d
    assert vol.modality == "CR"


def test_ct_volume_geometry() -> None:
    ph = make_chest_ct(41)
    vol = ct_volume(ph, seed=41)
    assert vol.voxels is ph.hu and vol.spacing == ph.spacing
    assert len(vol.sources) == ph.hu.shape[0]
    assert len({s.sop_uid for s in vol.sources}) == ph.hu.shape[0]
    assert vol.modality == "CT" and vol.body_part == "CHEST"


def test_metric_functions() -> None:
    a = np.zeros((4, 4), bool)
    a[:2] = True
    b = np.zeros((4, 4), bool)
    b[1:3] = True
    assert ev.dice(a, b) == pytest.approx(0.5)
    assert ev.dice(np.zeros(3, bool), np.zeros(3, bool)) == 1.0
    assert ev.auc([0.9, 0.8, 0.1, 0.2], [True, True, False, False]) == 1.0
    assert ev.auc([0.1, 0.2, 0.9, 0.8], [True, True, False, False]) == 0.0
    assert ev.auc([0.5, 0.5], [True, False]) == 0.5
    img = np.random.default_rng(0).normal(size=(32, 32))
    assert ev.ssim2d(img, img, 10.0) == pytest.approx(1.0)
    assert ev.psnr(img + 0.1, img, 1.0) == pytest.approx(20.0)
