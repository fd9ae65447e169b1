"""lung-nodule-classify's card on freshly generated held-out phantoms (AUC and Grad-CAM
localisation), split from ``test_demo_lung.py`` so that pytest-xdist runs it beside the
segmentation and detection cards.  The seeds differ from the training seeds and from those the
training script used for the cards, so every run checks unseen phantoms.
"""

from __future__ import annotations

import pytest

from node.models.builtin.lung_nodule_classify import LungNoduleClassifier
from node.models.builtin.lung_nodule_detect import LungNoduleDetection
from node.models.builtin.lung_nodule_seg import LungNoduleSegmentation
from tests.models.cards import assert_meets_card
from training.train_models import evaluate_classifier

CLS_SEEDS = [5_200_000 + i for i in range(240)]
CLS_CHEST_SEEDS = [5_300_000 + i for i in range(8)]


@pytest.fixture(scope="module")
def classify() -> LungNoduleClassifier:
    return LungNoduleClassifier(LungNoduleDetection(LungNoduleSegmentation()))


@pytest.mark.slow
def test_classifier_auc_and_gradcam_localisation_meet_card(classify: LungNoduleClassifier) -> None:
    measured = evaluate_classifier(classify, CLS_SEEDS, chest_seeds=CLS_CHEST_SEEDS)
    assert_meets_card("lung-nodule-classify", measured)
    # attention is on the lesion, far more than a uniform map would put there
    assert measured["gradcam_heat_in_lesion"] > 2 * measured["gradcam_uniform_baseline"]
