"""``ainode models list`` and ``ainode predict`` end to end (real processes, real corpus files)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import highdicom as hd
import numpy as np
import pydicom
import pytest
from typer.testing import CliRunner

from node.cli import app
from node.errors import ModelError
from tests.models.builders import write_body_model

ROOT = Path(__file__).resolve().parents[2]
CHEST = "ct/chest-ct-siemens-sensation10-b40f-30sl"


def ainode(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run(
        [sys.executable, "-m", "node", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


@pytest.fixture
def node_dir(tmp_path: Path) -> Path:
    """A config with one TorchScript test model and one broken model folder."""
    models = tmp_path / "models"
    write_body_model(models, roi="[32, 256, 256]")  # few windows: the CT is 30 x 512 x 512
    (models / "half-done").mkdir()
    (tmp_path / "ainode.yaml").write_text(
        "models: [models]\ninference: {torch_threads: 2, device: auto, job_timeout_seconds: 240}\n"
    )
    return tmp_path


def test_models_list_json(node_dir: Path) -> None:
    result = ainode("models", "list", "--json", cwd=node_dir)
    assert result.returncode == 0, result.stderr
    rows = {row["name"]: row for row in json.loads(result.stdout)}
    body = rows["tiny-body"]
    assert body["ok"] and body["source"] == "torchscript" and body["device"] == "cpu"
    assert body["version"] == "1.2" and body["task"] == "segmentation"
    assert body["modalities"] == ["CT"] and body["outputs"] == ["label_map"]
    assert body["card"] == "Test model: thresholds CT at -600 HU. Not for clinical use."
    broken = rows["half-done"]
    assert not broken["ok"] and "not a model folder" in broken["error"]


def test_models_list_text(node_dir: Path) -> None:
    result = CliRunner().invoke(app, ["models", "list", "--config", str(node_dir / "ainode.yaml")])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert any(line.startswith("tiny-body") and "torchscript" in line for line in lines)
    assert any("Not for clinical use" in line for line in lines)
    assert any(line.startswith("half-done") and "BROKEN" in line for line in lines)


def _expected_body_voxels(folder: Path) -> int:
    total = 0
    for f in folder.iterdir():
        ds = pydicom.dcmread(f)
        hu = ds.pixel_array.astype(np.int32) * int(ds.RescaleSlope) + int(ds.RescaleIntercept)
        total += int((hu >= -600).sum())
    return total


@pytest.mark.slow  # a fresh interpreter or worker imports torch + monai: ~10 s on a busy CI box
@pytest.mark.parametrize("mode", ["--in-process", "--isolate"])
def test_predict_writes_prediction_json(node_dir: Path, corpus: Path, mode: str) -> None:
    """In-process through a real `python -m node`; isolated through CliRunner + a real worker."""
    out = node_dir / "out"
    series = corpus / CHEST
    args = ["predict", "--model", "tiny-body", "--out", str(out), mode, str(series)]
    if mode == "--in-process":
        result = ainode(*args, cwd=node_dir)
        assert result.returncode == 0, result.stderr
    else:
        cli = CliRunner().invoke(app, [*args, "--config", str(node_dir / "ainode.yaml")])
        assert cli.exit_code == 0, cli.output
    summary = json.loads((out / "prediction.json").read_text())
    assert summary["model"] == {
        "name": "tiny-body",
        "version": "1.2",
        "task": "segmentation",
        "is_demo": False,
    }
    assert summary["input"]["shape"] == [30, 512, 512] and summary["input"]["modality"] == "CT"
    [label] = summary["labels"]
    assert label["name"] == "Body" and label["label"] == 1
    assert label["voxels"] == _expected_body_voxels(series)
    spacing = summary["input"]["spacing_mm"]
    assert label["volume_ml"] == pytest.approx(label["voxels"] * np.prod(spacing) / 1000, rel=1e-4)
    timings = summary["timings_seconds"]
    for key in ("load_volume", "model.preprocess", "model.forward", "model.postprocess", "total"):
        assert timings[key] >= 0
    assert summary["probabilities"] == {} and summary["detections"] == []
    # the label map is written as a DICOM-SEG over the source series, with the same label count
    assert summary["results"] == ["000-seg.dcm"]
    seg = hd.seg.segread(out / "000-seg.dcm")
    assert seg.StudyInstanceUID == pydicom.dcmread(next(series.iterdir())).StudyInstanceUID
    assert int((seg.get_volume().array > 0).sum()) == label["voxels"]


def test_predict_unknown_model_exits_2(node_dir: Path, corpus: Path) -> None:
    dx = corpus / "other-modalities/dx/dx_image.dcm"
    result = ainode("predict", "--model", "nope", "--out", "o", str(dx), cwd=node_dir)
    assert result.returncode == 2
    assert result.stderr.startswith("ainode: error: no model named 'nope' (known: ")
    assert "tiny-body" in result.stderr
    assert not (node_dir / "o").exists()


def test_predict_refuses_wrong_input(node_dir: Path, corpus: Path) -> None:
    config = ["--config", str(node_dir / "ainode.yaml")]
    dx = corpus / "other-modalities/dx/dx_image.dcm"
    runner = CliRunner()
    result = runner.invoke(app, ["predict", "--model", "tiny-body", "--out", "o", str(dx), *config])
    assert isinstance(result.exception, ModelError)
    assert "cannot run on this series: modality 'DX'" in str(result.exception)
    files = sorted((corpus / CHEST).iterdir())
    gap = [str(f) for f in files[:3] + files[4:6]]
    result = runner.invoke(app, ["predict", "--model", "tiny-body", "--out", "o", *gap, *config])
    # refused as the node's router refuses it (node.routing.qualify), with the same reason
    assert isinstance(result.exception, ModelError)
    assert "cannot run on this series: missing slices: 1 of 6 absent" in str(result.exception)


def test_predict_runs_a_gantry_tilted_series_as_the_node_does(
    node_dir: Path, tmp_path: Path
) -> None:
    """``ainode predict`` picks the volume the router would (node.routing.qualify): a tilted
    series is a sheared grid, not refused, and the SEG it writes is on the tilted slices."""
    from tests.imaging.synthetic import constructed_series, write_mr_frames

    frames = constructed_series()["gantry-tilt"]
    paths = write_mr_frames(tmp_path / "tilt", frames, rows=32, cols=32, modality="CT")
    for p in paths:  # CT values the body model thresholds: air outside, soft tissue inside
        ds = pydicom.dcmread(p)
        pixels = np.full((32, 32), -1000, dtype=np.int16)
        pixels[8:24, 8:24] = 40
        ds.PixelData = pixels.tobytes()
        ds.save_as(p)
    config = ["--config", str(node_dir / "ainode.yaml")]
    out = tmp_path / "out"
    result = CliRunner().invoke(
        app, ["predict", "--model", "tiny-body", "--out", str(out), str(tmp_path / "tilt"), *config]
    )
    assert result.exit_code == 0, result.output + repr(result.exception)
    [seg_file] = sorted(out.glob("*-seg.dcm"))
    seg = pydicom.dcmread(seg_file)
    positions = [
        tuple(float(v) for v in fg.PlanePositionSequence[0].ImagePositionPatient)
        for fg in seg.PerFrameFunctionalGroupsSequence
    ]
    sources = np.array([f["position"] for f in frames], dtype=np.float64)
    assert positions  # each frame sits on a tilted source slice
    for p in positions:
        assert np.min(np.linalg.norm(sources - np.asarray(p), axis=1)) < 1e-3, p
