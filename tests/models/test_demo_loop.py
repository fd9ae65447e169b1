"""The shared training loop and the evidence localisation loss of the demo classifiers."""

from __future__ import annotations

import json

import pytest
import torch

from node.models.builtin._common import ASSETS
from node.models.builtin.cxr_classify import CxrNet
from node.models.builtin.lung_nodule_detect import FEATURES, CandidateScorer
from training import loop


def _maps(hot: tuple[int, int]) -> torch.Tensor:
    maps = torch.zeros(1, 2, 8, 8)
    maps[0, 1, hot[0], hot[1]] = 6.0
    return maps


def test_localisation_loss_is_low_when_evidence_lies_in_the_lesion() -> None:
    lesion = torch.zeros(1, 32, 32, dtype=torch.bool)
    lesion[0, 8:16, 8:16] = True  # cells (2..3, 2..3) of the 8 x 8 map
    label = torch.tensor([1])
    yes = torch.tensor([True])
    inside = loop.localisation_loss(_maps((2, 3)), label, lesion, yes)
    outside = loop.localisation_loss(_maps((6, 6)), label, lesion, yes)
    assert float(inside) < 0.5 < float(outside)
    # only the position matters, not the level of the evidence
    shifted = loop.localisation_loss(_maps((2, 3)) + 5.0, label, lesion, yes)
    assert float(shifted) == pytest.approx(float(inside), abs=1e-5)
    # samples without a lesion do not contribute
    none = loop.localisation_loss(_maps((6, 6)), label, lesion, torch.tensor([False]))
    assert float(none) == 0.0


@pytest.mark.slow
def test_fit_trains_an_evidence_map_classifier_towards_the_lesion() -> None:
    torch.manual_seed(0)
    x = torch.zeros(8, 1, 64, 64)
    masks = torch.zeros(8, 64, 64, dtype=torch.bool)
    for i in range(8):
        r, c = 10 + 6 * i, 52 - 5 * i
        x[i, 0, r - 6 : r + 6, c - 6 : c + 6] = 1.0
        masks[i, r - 6 : r + 6, c - 6 : c + 6] = True
    labels = torch.ones(8, dtype=torch.long)
    labels[::2] = 0
    x[::2] = 0.0
    masks[::2] = False

    def objective(net: torch.nn.Module, step: int) -> torch.Tensor:  # noqa: ARG001
        maps, logits = loop.evidence_maps(net, x)
        loss: torch.Tensor = torch.nn.functional.cross_entropy(
            logits, labels
        ) + loop.localisation_loss(maps, labels, masks, labels == 1)
        return loss

    net = CxrNet(widths=(4, 8, 8))
    with torch.no_grad():
        before = float(objective(net.eval(), 0))
    loop.fit(net, objective, steps=15, lr=1e-2, tag="toy", log_every=1000)
    assert not net.training
    with torch.no_grad():
        assert float(objective(net, 0)) < before


def test_detection_scorer_round_trips_and_is_committed() -> None:
    scorer = CandidateScorer(
        mean=(0.0,) * len(FEATURES),
        scale=(1.0,) * len(FEATURES),
        weights=(1.0,) + (0.0,) * (len(FEATURES) - 1),
        bias=-2.0,
    )
    again = CandidateScorer.from_json(json.loads(json.dumps(scorer.to_json())))
    assert again == scorer
    assert again.score((2.0,) + (0.0,) * (len(FEATURES) - 1)) == pytest.approx(0.5)
    assert again.score((4.0,) + (9.0,) * (len(FEATURES) - 1)) > 0.8
    metrics = json.loads((ASSETS / "lung-nodule-detect" / "metrics.json").read_text("utf-8"))
    committed = CandidateScorer.from_json(metrics["scorer"])
    assert metrics["scorer"]["features"] == list(FEATURES)
    assert len(committed.weights) == len(FEATURES)
