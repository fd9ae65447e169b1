"""The built-in demo models as a set: cheap instantiation, declared contract, weights and cards."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from node.models.base import Model, Task
from node.models.builtin import BUILTIN_NAMES, builtin_models
from node.models.builtin._common import ASSETS, load_metrics
from node.samples.phantoms import make_radiograph
from training import cards
from training.volumes import radiograph_volume


def test_builtin_models_are_the_six_demo_models_and_load_no_weights() -> None:
    models = builtin_models()
    assert [m.info.name for m in models] == list(BUILTIN_NAMES)
    for m in models:
        assert isinstance(m, Model)
        assert m.info.is_demo
        assert m.info.body_parts == ("CHEST",)
        assert m.info.modalities
        assert "NOT FOR CLINICAL USE" in m.info.card
        lazy = getattr(m, "_net", None)
        if lazy is not None:
            assert lazy._net is None, f"{m.info.name} loaded weights at instantiation"


def test_model_info_declares_inputs_and_outputs() -> None:
    by_name = {m.info.name: m.info for m in builtin_models()}
    assert by_name["lung-nodule-seg"].task is Task.SEGMENTATION
    assert by_name["lung-nodule-detect"].task is Task.DETECTION
    assert by_name["lung-nodule-classify"].task is Task.CLASSIFICATION
    assert by_name["ct-denoise"].task is Task.ENHANCEMENT
    assert by_name["report-text"].task is Task.REPORT
    assert by_name["cxr-classify"].modalities == ("CR", "DX")
    assert by_name["cxr-classify"].dims == (2,)
    assert by_name["lung-nodule-seg"].dims == (3,)
    assert by_name["lung-nodule-seg"].metrics["lung_dice"] > 0.0


@pytest.mark.parametrize("name", [n for n in BUILTIN_NAMES if n != "report-text"])
def test_weights_are_small_state_dicts_and_cards_state_thresholds(name: str) -> None:
    folder = ASSETS / name
    metrics = json.loads((folder / "metrics.json").read_text(encoding="utf-8"))
    assert metrics["heldout"], "held-out metrics missing"
    assert metrics["thresholds"] == cards.thresholds(name, metrics["heldout"])
    card = (folder / "MODEL_CARD.md").read_text(encoding="utf-8")
    for metric, value in metrics["thresholds"].items():
        assert f"| {metric} |" in card
        assert f"{value:g}" in card
    weights = folder / "weights.pt"
    if name == "lung-nodule-detect":
        assert not weights.exists()  # no own weights: reuses the segmentation network
        assert metrics["operating_point"]["min_score"] > 0
        return
    assert weights.stat().st_size < 1_000_000
    state = torch.load(weights, map_location="cpu", weights_only=True)
    assert all(isinstance(v, torch.Tensor) for v in state.values())


def test_thresholds_sit_a_noise_margin_below_the_measured_value() -> None:
    for name, rules in cards.RULES.items():
        heldout = load_metrics(name).get("heldout", {})
        thr = cards.thresholds(name, heldout)
        card = (ASSETS / name / "MODEL_CARD.md").read_text(encoding="utf-8")
        for metric, (target, margin, higher) in rules.items():
            if metric not in heldout:
                continue
            value = heldout[metric]
            if higher:
                assert thr[metric] <= value
                if target is not None and value - margin >= target:
                    assert thr[metric] >= target  # a robustly reached target is held by the test
            else:
                assert thr[metric] >= value
            if target is not None and (value < target if higher else value > target):
                assert "NOT reached" in card


def test_ct_models_refuse_a_radiograph_and_cxr_refuses_ct() -> None:
    vol = radiograph_volume(make_radiograph(1))
    by_name = {m.info.name: m for m in builtin_models()}
    assert by_name["lung-nodule-seg"].accepts(vol) is not None
    assert by_name["cxr-classify"].accepts(vol) is None
    ct_like = type(vol)(
        voxels=np.zeros((4, 8, 8), np.float32),
        spacing=(1.0, 1.0, 1.0),
        origin=(0.0, 0.0, 0.0),
        direction=np.eye(3),
        sources=(),
        study_uid="1.2",
        series_uid="1.3",
        modality="CT",
    )
    assert by_name["cxr-classify"].accepts(ct_like) is not None
