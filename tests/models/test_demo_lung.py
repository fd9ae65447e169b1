"""lung-nodule-seg / -detect / -classify on freshly generated held-out chest phantoms.

The seeds here differ from the training seeds (seed * 100_000 + i) and from the held-out seeds
the training script used for the cards (900_000 + ...), so every run checks unseen phantoms.
"""

from __future__ import annotations

import numpy as np
import pytest

from node.models.builtin._common import voxel_to_patient
from node.models.builtin.lung_nodule_classify import LungNoduleClassifier
from node.models.builtin.lung_nodule_detect import LungNoduleDetection
from node.models.builtin.lung_nodule_seg import LungNoduleSegmentation
from node.samples.phantoms import make_chest_ct
from node.types import Volume
from tests.models.cards import assert_meets_card
from training.train_models import (
    evaluate_detection,
    evaluate_segmentation,
)
from training.volumes import ct_volume

SEG_SEEDS = [5_000_000 + i for i in range(16)]  # pooled nodule Dice varies between small sets
DET_SEEDS = [5_100_000 + i for i in range(16)]


@pytest.fixture(scope="module")
def seg() -> LungNoduleSegmentation:
    return LungNoduleSegmentation()


@pytest.fixture(scope="module")
def detect(seg: LungNoduleSegmentation) -> LungNoduleDetection:
    return LungNoduleDetection(seg)


@pytest.fixture(scope="module")
def classify(detect: LungNoduleDetection) -> LungNoduleClassifier:
    return LungNoduleClassifier(detect)


@pytest.mark.slow
def test_segmentation_dice_on_fresh_phantoms_meets_card(seg: LungNoduleSegmentation) -> None:
    assert_meets_card("lung-nodule-seg", evaluate_segmentation(seg, SEG_SEEDS))


@pytest.mark.slow
def test_detection_sensitivity_and_false_positives_meet_card(detect: LungNoduleDetection) -> None:
    assert_meets_card("lung-nodule-detect", evaluate_detection(detect, DET_SEEDS))


def test_segmentation_label_map_on_input_grid_with_coded_segments(
    seg: LungNoduleSegmentation,
) -> None:
    ph = make_chest_ct(5_400_000, spacing=(2.8, 1.5, 1.5), n_nodules=2)
    pred = seg.predict(ct_volume(ph))
    assert pred.is_demo and pred.model_name == "lung-nodule-seg"
    assert pred.label_map is not None and pred.label_map.shape == ph.hu.shape
    assert pred.label_map.dtype == np.uint8
    assert set(np.unique(pred.label_map)) <= {0, 1, 2}
    by_label = {s.label: s for s in pred.segments}
    assert (by_label[1].category.value, by_label[1].property_type.value) == ("91723000", "39607008")
    assert (by_label[2].category.value, by_label[2].property_type.value) == ("49755003", "27925004")
    assert all(s.category.scheme == "SCT" for s in pred.segments)
    assert {"load", "preprocess", "forward", "postprocess"} <= set(pred.timings_seconds)


def test_segmentation_is_reproducible(seg: LungNoduleSegmentation) -> None:
    vol = ct_volume(make_chest_ct(5_400_001, n_nodules=1))
    a = seg.predict(vol).label_map
    b = seg.predict(vol).label_map
    assert a is not None and b is not None
    assert np.array_equal(a, b)


def test_detection_reports_patient_coordinates_and_sizes(detect: LungNoduleDetection) -> None:
    ph = make_chest_ct(5_400_002, spacing=(2.0, 1.6, 1.6), n_nodules=3)
    base = ct_volume(ph)
    # a geometry that is not the identity: rows run posterior->anterior, shifted origin
    direction = np.array([[1.0, 0.0, 0.0], [0.0, -1.0, 0.0], [0.0, 0.0, 1.0]])
    vol = Volume(
        voxels=base.voxels,
        spacing=base.spacing,
        origin=(-10.0, 250.0, -400.0),
        direction=direction,
        sources=base.sources,
        study_uid=base.study_uid,
        series_uid=base.series_uid,
        modality="CT",
        body_part="CHEST",
    )
    pred = detect.predict(vol)
    assert pred.is_demo and pred.findings
    assert pred.label_map is not None and pred.label_map.shape == ph.hu.shape
    for f in pred.findings:
        s, r, c = f.center_voxel
        expected = (-10.0 + c * 1.6, 250.0 - r * 1.6, -400.0 + s * 2.0)
        assert np.allclose(f.center_xyz, expected, atol=2.0)
        assert np.allclose(voxel_to_patient(vol, (s, r, c)), expected)
        assert 0.0 <= f.score <= 1.0
        assert f.volume_mm3 is not None and f.volume_mm3 > 0
        assert f.segment_label is not None
        assert int((pred.label_map == f.segment_label).sum()) > 0
    # true nodules are found (sensitivity < 1: at least one), with a diameter of the right size
    found = 0
    for nod in ph.nodules:
        centre = np.asarray(nod.center_mm) / np.asarray(ph.spacing)
        near = [
            f
            for f in pred.findings
            if np.linalg.norm((np.asarray(f.center_voxel) - centre) * ph.spacing)
            <= nod.radius_mm + 3
        ]
        if not near:
            continue
        found += 1
        f = near[0]
        assert f.diameter_mm is not None
        if nod.margin == "round":
            assert abs(f.diameter_mm - nod.diameter_mm) <= 2.5 * max(ph.spacing)
    assert found >= 1


def test_classifier_pipeline_gives_probability_and_heatmap_per_nodule(
    classify: LungNoduleClassifier,
) -> None:
    ph = make_chest_ct(5_400_003, n_nodules=3)
    vol = ct_volume(ph)
    pred = classify.predict(vol)
    assert pred.is_demo
    assert pred.findings and len(pred.heatmaps) == len(pred.findings)
    for f, h in zip(pred.findings, pred.heatmaps, strict=True):
        assert f.malignancy_probability is not None and 0.0 <= f.malignancy_probability <= 1.0
        assert pred.class_probabilities[f"{f.tracking_id}:malignant"] == f.malignancy_probability
        assert h.slice_index == f.center_voxel[0]
        assert h.values.shape == ph.hu.shape[1:]
        assert h.values.dtype == np.float32
        assert float(h.values.min()) >= 0.0 and float(h.values.max()) <= 1.0
        # the hottest pixel lies near the nodule (within its radius + 8 mm)
        peak = np.unravel_index(int(np.argmax(h.values)), h.values.shape)
        dist = np.hypot(
            (peak[0] - f.center_voxel[1]) * ph.spacing[1],
            (peak[1] - f.center_voxel[2]) * ph.spacing[2],
        )
        assert dist <= (f.diameter_mm or 0) / 2 + 12.0
    again = classify.predict(vol)
    assert [f.malignancy_probability for f in again.findings] == [
        f.malignancy_probability for f in pred.findings
    ]
