"""ct-denoise and cxr-classify on freshly generated held-out phantoms."""

from __future__ import annotations

import numpy as np
import pytest

from node.models.builtin._common import load_metrics
from node.models.builtin.ct_denoise import CtDenoiser
from node.models.builtin.cxr_classify import CxrClassifier
from node.samples.phantoms import make_chest_ct, make_radiograph
from training.train_models import evaluate_cxr, evaluate_denoiser
from training.volumes import ct_volume, radiograph_volume


def _assert_meets(name: str, measured: dict[str, float]) -> None:
    failures = [
        f"{m} = {measured[m]:.4f} (threshold {t})"
        for m, t in load_metrics(name)["thresholds"].items()
        if measured[m] < t
    ]
    assert not failures, f"{name}: " + "; ".join(failures) + f"; all: {measured}"


@pytest.fixture(scope="module")
def denoiser() -> CtDenoiser:
    return CtDenoiser()


@pytest.fixture(scope="module")
def cxr() -> CxrClassifier:
    return CxrClassifier()


@pytest.mark.slow
def test_denoiser_improves_psnr_and_ssim_on_fresh_phantoms(denoiser: CtDenoiser) -> None:
    measured = evaluate_denoiser(denoiser, [5_500_000, 5_500_001])
    _assert_meets("ct-denoise", measured)
    assert measured["psnr_gain"] > 0.0
    assert measured["ssim_denoised"] > measured["ssim_low_dose"]


def test_denoiser_output_is_hu_on_input_grid_and_reproducible(denoiser: CtDenoiser) -> None:
    ph = make_chest_ct(5_500_010, spacing=(3.0, 2.0, 2.0), n_nodules=1)
    vol = ct_volume(ph)
    a = denoiser.predict(vol)
    b = denoiser.predict(vol)
    assert a.is_demo and a.derived_voxels is not None and b.derived_voxels is not None
    assert a.derived_voxels.shape == ph.hu.shape
    assert np.array_equal(a.derived_voxels, b.derived_voxels)
    # still HU: air stays air, lungs stay lungs
    assert float(np.median(a.derived_voxels[ph.labels == 1])) < -700.0
    assert float(a.derived_voxels[:, 0, 0].mean()) < -900.0


@pytest.mark.slow
def test_cxr_auc_and_gradcam_localisation_meet_card(cxr: CxrClassifier) -> None:
    measured = evaluate_cxr(cxr, [5_600_000 + i for i in range(120)])
    _assert_meets("cxr-classify", measured)
    # attention is on the opacity, far more than a uniform map would put there
    assert measured["gradcam_heat_in_lesion"] > 3 * measured["gradcam_uniform_baseline"]


def test_cxr_prediction_has_probabilities_and_heatmap_on_image_grid(cxr: CxrClassifier) -> None:
    ph = make_radiograph(5_600_500, has_opacity=True)
    vol = radiograph_volume(ph)
    pred = cxr.predict(vol)
    assert pred.is_demo
    assert set(pred.class_probabilities) == {"normal", "opacity"}
    assert sum(pred.class_probabilities.values()) == pytest.approx(1.0, abs=1e-3)
    (heat,) = pred.heatmaps
    assert heat.values.shape == ph.image.shape and heat.slice_index == 0
    again = cxr.predict(vol)
    assert again.class_probabilities == pred.class_probabilities
    assert np.array_equal(again.heatmaps[0].values, heat.values)


def test_cxr_handles_any_image_size(cxr: CxrClassifier) -> None:
    ph = make_radiograph(5_600_501, has_opacity=False)
    big = np.kron(ph.image, np.ones((4, 3), dtype=np.float32))  # non-square, upsampled
    vol = radiograph_volume(ph)
    vol = type(vol)(
        voxels=big[None],
        spacing=(1.0, ph.spacing[0] / 4, ph.spacing[1] / 3),
        origin=vol.origin,
        direction=vol.direction,
        sources=vol.sources,
        study_uid=vol.study_uid,
        series_uid=vol.series_uid,
        modality="DX",
        is_3d=False,
    )
    pred = cxr.predict(vol)
    assert pred.heatmaps[0].values.shape == big.shape
