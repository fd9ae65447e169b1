"""ONNX models: an export of the built-in lung-nodule-seg UNet runs on onnxruntime and gives the
PyTorch network's answer (logits, label map, ``ainode predict``)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from node.errors import ModelError
from node.imaging import dicom_files, load_volume
from node.models.devices import onnx_providers
from node.models.network import NetworkModel, read_spec, spec_info
from node.models.onnx import OnnxNetwork
from node.models.registry import discover
from node.types import Prediction, Volume
from tests.models.onnx_builders import demo_unet, export_onnx, write_onnx_model

ROOT = Path(__file__).resolve().parents[2]
CHEST = "ct/chest-ct-siemens-sensation10-b40f-30sl"


@pytest.fixture(scope="module")
def onnx_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("onnx") / "models"
    write_onnx_model(folder)
    return folder


@pytest.fixture(scope="module")
def chest_reference(onnx_dir: Path, corpus: Path) -> tuple[Volume, Prediction]:
    """The real chest CT and the PyTorch network's prediction on it (same sidecar)."""
    volume = load_volume(dicom_files([corpus / CHEST]))
    spec = read_spec(onnx_dir / "lung-onnx.yaml")
    reference = NetworkModel(
        spec_info(spec, source="torch"), spec, lambda dev: demo_unet(), device=torch.device("cpu")
    )
    return volume, reference.predict(volume)


def test_onnx_logits_equal_pytorch(onnx_dir: Path) -> None:
    """Same logits on a shape the export never saw (dynamic axes), through onnxruntime's CPU EP."""
    net = OnnxNetwork(onnx_dir / "lung-onnx.onnx", preference="cpu")
    assert net.providers == ["CPUExecutionProvider"]
    x = torch.from_numpy(np.random.default_rng(7).normal(size=(1, 1, 40, 64, 56)).astype("f4"))
    with torch.inference_mode():
        expected = demo_unet()(x)
    got = net(x)
    assert got.shape == expected.shape == (1, 3, 40, 64, 56)
    np.testing.assert_allclose(got.numpy(), expected.numpy(), rtol=1e-4, atol=1e-4)


@pytest.mark.slow  # two 3D UNet runs on a 30-slice CT: ~8 s on a busy CI box
def test_onnx_model_matches_pytorch_on_real_ct(
    onnx_dir: Path, chest_reference: tuple[Volume, Prediction]
) -> None:
    registry = discover([onnx_dir], device="cpu", builtins=False, entry_points=False)
    [entry] = registry.entries()
    assert entry.is_ok and entry.source == "onnx", entry.error
    assert entry.info is not None and entry.info.source == "onnx"
    assert entry.info.modalities == ("CT",) and entry.info.body_parts == ("CHEST",)
    volume, torch_pred = chest_reference
    onnx_pred = registry.get("lung-onnx").predict(volume)
    assert onnx_pred.label_map is not None and torch_pred.label_map is not None
    lung = int((torch_pred.label_map == 1).sum())
    assert lung > 100_000  # a real answer, not an empty map
    same = float((onnx_pred.label_map == torch_pred.label_map).mean())
    assert same >= 0.9999, f"ONNX and PyTorch label maps agree on {same:.6f} of voxels"
    assert [s.name for s in onnx_pred.segments] == ["Lung", "Nodule"]


@pytest.mark.slow  # a fresh interpreter imports torch + monai + onnxruntime: ~10 s on CI
def test_ainode_predict_runs_onnx(
    onnx_dir: Path, corpus: Path, chest_reference: tuple[Volume, Prediction], tmp_path: Path
) -> None:
    (tmp_path / "ainode.yaml").write_text(
        f"models: [{onnx_dir}]\ninference: {{device: cuda, torch_threads: 2}}\n"
    )
    out = tmp_path / "out"
    result = subprocess.run(
        [sys.executable, "-m", "node", "predict", "--model", "lung-onnx", "--device", "cpu"]
        + ["--out", str(out)]
        + [str(corpus / CHEST)],
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    summary = json.loads((out / "prediction.json").read_text())
    assert summary["model"]["name"] == "lung-onnx"
    labels = {label["name"]: label["voxels"] for label in summary["labels"]}
    reference = chest_reference[1]
    assert reference.label_map is not None
    expected = int((reference.label_map == 1).sum())
    assert labels["Lung"] == pytest.approx(expected, rel=1e-3)
    assert summary["results"] == ["000-seg.dcm"]


def test_broken_onnx_models_are_reported(tmp_path: Path) -> None:
    models = tmp_path / "models"
    models.mkdir()
    (models / "missing.yaml").write_text("name: missing\nfile: nothere.onnx\n")
    (models / "garbage.onnx").write_bytes(b"not a protobuf")
    (models / "garbage.yaml").write_text("name: garbage\n")
    registry = discover([models], device="cpu", builtins=False, entry_points=False)
    rows = {e.name: e for e in registry.entries()}
    assert not rows["missing"].is_ok and "'nothere.onnx' not found" in str(rows["missing"].error)
    assert rows["garbage"].is_ok  # described from the YAML; the file is read on first use
    model = registry.get("garbage")
    assert isinstance(model, NetworkModel)
    with pytest.raises(ModelError, match="garbage.onnx is not a loadable ONNX model"):
        model.load()


def test_onnx_file_path_with_file_key(tmp_path: Path) -> None:
    """A configured ``.onnx`` path finds its sidecar; ``file:`` may name the network."""
    sidecar = write_onnx_model(tmp_path / "m", name="named", file=True)
    registry = discover(
        [sidecar.with_suffix(".onnx")], device="cpu", builtins=False, entry_points=False
    )
    [entry] = registry.entries()
    assert entry.is_ok and entry.source == "onnx" and entry.location == str(sidecar)


def test_onnx_providers_follow_the_device() -> None:
    import onnxruntime

    assert onnx_providers("cpu") == ["CPUExecutionProvider"]
    auto = onnx_providers("auto")
    assert auto[-1] == "CPUExecutionProvider"
    has_gpu = "CUDAExecutionProvider" in onnxruntime.get_available_providers()
    if has_gpu:  # a GPU build: cuda:1 is asked of every GPU provider
        assert ("CUDAExecutionProvider", {"device_id": 1}) in onnx_providers("cuda:1")
    else:  # this CPU build: asking for a GPU is refused with what is installed
        with pytest.raises(ModelError, match="onnxruntime has no GPU provider"):
            onnx_providers("cuda:1")
    with pytest.raises(ModelError, match="not one of auto, cpu, cuda, cuda:N"):
        onnx_providers("gpu0")


def test_export_is_deterministic(tmp_path: Path) -> None:
    """The export is a pure function of the network (so its SHA-256 identifies the weights)."""
    a = export_onnx(demo_unet(), tmp_path / "a.onnx").read_bytes()
    b = export_onnx(demo_unet(), tmp_path / "b.onnx").read_bytes()
    assert a == b
