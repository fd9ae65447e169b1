"""Registry discovery of each source kind, lazy loading, broken models reported."""

from __future__ import annotations

import dataclasses
import socket
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from node.errors import ModelError, NotFoundError
from node.models.base import OutputKind, Task
from node.models.bundle import BundleModel
from node.models.network import NetworkModel
from node.models.registry import discover
from node.types import Volume
from tests.models.builders import (
    MeanClassifier2d,
    ct_volume,
    unet,
    write_body_model,
    write_bundle,
    write_entry_point_package,
    write_torchscript,
)


@pytest.fixture
def no_network(monkeypatch: pytest.MonkeyPatch) -> None:
    """Any attempt to open a network connection fails (bundles must load offline)."""

    def refuse(*args: object, **kwargs: object) -> None:
        raise OSError("network access attempted during a test that must stay offline")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


def _only(paths: list[Path]):  # type: ignore[no-untyped-def]
    return discover(paths, device="cpu", builtins=False, entry_points=False)


def test_torchscript_sidecar_discovered_and_predicts(tmp_path: Path) -> None:
    sidecar = write_body_model(tmp_path / "models")
    registry = _only([tmp_path / "models"])
    [entry] = registry.entries()
    assert entry.is_ok and entry.source == "torchscript" and entry.location == str(sidecar)
    assert entry.info is not None
    assert entry.info.name == "tiny-body" and entry.info.version == "1.2"
    assert entry.info.task is Task.SEGMENTATION and entry.info.outputs == (OutputKind.LABEL_MAP,)
    assert entry.info.modalities == ("CT",) and "Not for clinical use" in entry.info.card
    model = registry.get("tiny-body")
    assert isinstance(model, NetworkModel) and model._network is None  # lazy
    volume = ct_volume((20, 40, 48))
    prediction = model.predict(volume)
    assert prediction.label_map is not None and prediction.label_map.shape == (20, 40, 48)
    np.testing.assert_array_equal(prediction.label_map, (volume.voxels >= -600).astype(np.uint8))
    assert [s.name for s in prediction.segments] == ["Body"]
    assert prediction.segments[0].property_type.value == "38266002"
    assert set(prediction.timings_seconds) == {"load", "preprocess", "forward", "postprocess"}
    again = model.predict(volume)  # reproducible, and no second load
    np.testing.assert_array_equal(again.label_map, prediction.label_map)
    assert "load" not in again.timings_seconds


def test_torchscript_file_path_and_classification(tmp_path: Path) -> None:
    write_torchscript(
        tmp_path,
        "dx-mean",
        MeanClassifier2d(),
        """\
        name: dx-mean
        task: classification
        modalities: [DX]
        dims: [2]
        normalise: {kind: percentile, low: 0, high: 100}
        classes: [bright, dark]
        """,
        suffix=".pt",
    )
    registry = _only([tmp_path / "dx-mean.pt"])  # the network file itself, sidecar found next to it
    model = registry.get("dx-mean")
    assert model.info.outputs == (OutputKind.PROBABILITIES,) and model.info.dims == (2,)
    volume = ct_volume((1, 30, 30))
    volume = dataclasses.replace(volume, modality="DX", is_3d=False)
    prediction = model.predict(volume)
    data = volume.voxels[0].astype(np.float64)
    m = ((data - data.min()) / (data.max() - data.min())).mean()
    expected = np.exp([m, 1 - m]) / np.exp([m, 1 - m]).sum()
    assert prediction.class_probabilities == pytest.approx(
        dict(zip(["bright", "dark"], expected, strict=True))
    )
    with pytest.raises(ModelError, match="modality 'CT'"):
        model.predict(ct_volume((1, 30, 30)))


@pytest.mark.parametrize("torchscript", [False, True], ids=["model.pt", "model.ts"])
def test_monai_bundle_loads_offline(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, no_network: None, torchscript: bool
) -> None:
    write_bundle(tmp_path / "models" / "lesion-unet", torchscript=torchscript)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)  # bundle_root must be the bundle, not the current directory
    registry = _only([tmp_path / "models"])
    [entry] = registry.entries()
    assert entry.is_ok, entry.error
    assert entry.source == "bundle" and entry.name == "lesion-unet"
    assert entry.info is not None and entry.info.version == "0.3.1"
    assert entry.info.description == "tiny test UNet"
    model = registry.get("lesion-unet")
    assert isinstance(model, BundleModel)
    volume = ct_volume((32, 32, 32))
    prediction = model.predict(volume)
    assert [s.name for s in prediction.segments] == ["lesion"]
    np.testing.assert_array_equal(prediction.label_map, _tiny_bundle_answer(volume))


def _tiny_bundle_answer(volume: Volume) -> np.ndarray:
    """The tiny bundle's config run by hand: scale, 16^3 windows (overlap 0.25), argmax."""
    from monai.inferers.utils import sliding_window_inference

    scaled = np.clip((volume.voxels.astype(np.float32) + 1000) / 1400, 0, 1)
    x = torch.from_numpy(scaled.transpose(2, 1, 0).copy())[None, None]  # (column, row, slice)
    with torch.no_grad():
        logits = sliding_window_inference(x, [16, 16, 16], 1, unet(), overlap=0.25)
    labels = torch.argmax(logits[0], dim=0).numpy().astype(np.uint8)
    return np.ascontiguousarray(labels.transpose(2, 1, 0))


def test_bundle_ainode_yaml_overrides_metadata(tmp_path: Path) -> None:
    write_bundle(
        tmp_path / "b",
        ainode_yaml="""\
        name: chest-lesions
        modalities: [CT]
        body_parts: [CHEST]
        """,
    )
    registry = _only([tmp_path / "b"])
    model = registry.get("chest-lesions")
    assert model.info.version == "0.3.1" and model.info.body_parts == ("CHEST",)
    assert model.info.modalities == ("CT",)
    volume = ct_volume((32, 32, 32))
    # the bundle's own transforms run; the spec's pipeline keys do not apply to bundles
    np.testing.assert_array_equal(model.predict(volume).label_map, _tiny_bundle_answer(volume))


def test_entry_point_models(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write_entry_point_package(tmp_path / "site")
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    try:
        registry = discover([], device="cpu", builtins=False)
        by_name = {e.name: e for e in registry.entries()}
        assert by_name["mean-intensity"].is_ok and by_name["mean-intensity"].source == "entry-point"
        assert "ainode-test-models" in by_name["mean-intensity"].location
        assert by_name["broken"].error is not None and "weights missing" in by_name["broken"].error
        prediction = registry.get("mean-intensity").predict(ct_volume((4, 8, 8)))
        assert sum(prediction.class_probabilities.values()) == pytest.approx(1.0)
        with pytest.raises(ModelError, match="weights missing"):
            registry.get("broken")
    finally:
        sys.modules.pop("ainode_test_models", None)


def test_broken_things_are_reported_not_fatal(tmp_path: Path) -> None:
    root = tmp_path / "models"
    write_body_model(root)
    (root / "random-folder").mkdir()
    (root / "random-folder" / "notes.txt").write_text("not a model")
    (root / "typo.yaml").write_text("name: typo\ntask: segmentation\nmodalitees: [CT]\n")
    (root / "orphan.yaml").write_text("name: orphan\n")
    (root / "badtask.yaml").write_text("name: bad\ntask: dreaming\n")
    half = root / "half-bundle"
    (half / "configs").mkdir(parents=True)
    (half / "configs" / "inference.json").write_text("{}")
    registry = _only([root, tmp_path / "missing-folder"])
    errors = {e.name: e.error for e in registry.entries() if e.error}
    assert registry.names() == ["tiny-body"]
    assert "not a model folder" in errors["random-folder"]
    assert "unknown key 'modalitees'" in errors["typo"]
    assert "no network file" in errors["orphan"]
    assert "task" in errors["badtask"]
    assert "no models/model.ts or models/model.pt" in errors["half-bundle"]
    assert "no such file" in errors["missing-folder"]
    with pytest.raises(ModelError, match="broken"):
        registry.get("typo")
    with pytest.raises(NotFoundError, match="tiny-body"):
        registry.get("nonexistent")


def test_corrupt_network_fails_at_first_use_only(tmp_path: Path) -> None:
    write_body_model(tmp_path)
    (tmp_path / "tiny-body.ts").write_bytes(b"this is not a zip archive")
    registry = _only([tmp_path])
    model = registry.get("tiny-body")  # discovery and instantiation read only the sidecar
    with pytest.raises(ModelError, match="not a TorchScript archive"):
        model.predict(ct_volume((4, 8, 8)))


def test_duplicate_names_reported(tmp_path: Path) -> None:
    write_body_model(tmp_path / "a")
    write_body_model(tmp_path / "b")
    registry = _only([tmp_path / "a", tmp_path / "b"])
    first, second = registry.entries()
    assert first.is_ok and second.error is not None and "duplicate model name" in second.error
    assert registry.names() == ["tiny-body"]


def test_builtins_are_listed() -> None:
    from node.models.builtin import builtin_models

    registry = discover([], device="cpu", entry_points=False)
    assert registry.names() == [m.info.name for m in builtin_models()]


def test_exported_program_with_sidecar(tmp_path: Path) -> None:
    """torch.export programs (.pt2, TorchScript's successor) run through the same sidecar."""
    from tests.models.builders import Threshold3d

    program = torch.export.export(Threshold3d().eval(), (torch.zeros(1, 1, 16, 32, 32),))
    torch.export.save(program, str(tmp_path / "body.pt2"))
    (tmp_path / "body.yaml").write_text(
        "name: body-export\nfile: body.pt2\nmodalities: [CT]\n"
        "normalise: {kind: window, center: -600.5, width: 1500}\nroi_size: [16, 32, 32]\n"
        "labels: {1: {name: Body}}\n"
    )
    registry = _only([tmp_path])
    volume = ct_volume((20, 40, 48))
    prediction = registry.get("body-export").predict(volume)
    np.testing.assert_array_equal(prediction.label_map, (volume.voxels >= -600).astype(np.uint8))


class _OneChannel(torch.nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x - 0.5


def test_one_channel_network_thresholds_logit_and_resamples_back(tmp_path: Path) -> None:
    from tests.models.builders import write_torchscript

    write_torchscript(
        tmp_path,
        "binary",
        _OneChannel(),
        """\
        name: binary
        modalities: [CT]
        spacing: [4.0, 2.0, 2.0]
        normalise: {kind: window, center: -600, width: 1500}
        labels: {1: {name: Dense}}
        """,
    )
    volume = ct_volume((16, 32, 32))
    volume = dataclasses.replace(volume, voxels=np.full((16, 32, 32), -1000, np.int16))
    volume.voxels[4:12, 8:24, 8:24] = 200  # a block of tissue
    prediction = _only([tmp_path]).get("binary").predict(volume)
    labels = prediction.label_map
    assert labels is not None and labels.shape == (16, 32, 32)
    # at half resolution and back, the block's faces may move by one source voxel
    assert labels[5:11, 9:23, 9:23].all()
    outside = np.ones(labels.shape, bool)
    outside[3:13, 7:25, 7:25] = False
    assert not labels[outside].any()
    assert (labels == (volume.voxels > -600)).mean() > 0.9
