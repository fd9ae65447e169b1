"""``ainode models add`` / ``verify`` / ``list --json`` and the Device UID in results (real CLI)."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import textwrap
import zipfile
from pathlib import Path

import pytest

from tests.models.builders import MeanClassifier2d, write_body_model, write_torchscript
from tests.models.onnx_builders import write_onnx_model

ROOT = Path(__file__).resolve().parents[2]
CHEST = "ct/chest-ct-siemens-sensation10-b40f-30sl"


def ainode(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "node", *args],
        cwd=cwd,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=300,
    )


@pytest.fixture
def node_dir(tmp_path: Path) -> Path:
    (tmp_path / "rules.yaml").write_text(
        "version: 1\nrules:\n  - {name: ct-body, when: {Modality: CT}, then: {model: tiny-body}}\n"
    )
    (tmp_path / "ainode.yaml").write_text(
        "node: {data_dir: data}\nrules: rules.yaml\n"
        "inference: {device: cpu, torch_threads: 2, job_timeout_seconds: 240}\n"
    )
    return tmp_path


def _rows(node_dir: Path) -> dict[str, dict]:  # type: ignore[type-arg]
    listed = ainode("models", "list", "--json", cwd=node_dir)
    assert listed.returncode == 0, listed.stderr
    return {row["name"]: row for row in json.loads(listed.stdout)}


@pytest.mark.slow  # ten CLI runs, two isolated trial runs, two predicts: ~60 s on CI
def test_add_list_predict_verify_refuse(node_dir: Path, corpus: Path) -> None:
    write_body_model(node_dir / "incoming")
    added = ainode("models", "add", "incoming", "--json", cwd=node_dir)
    assert added.returncode == 0, added.stderr
    record = json.loads(added.stdout)
    store = node_dir / "data" / "models" / "tiny-body"
    assert json.loads((store / "admission.json").read_text()) == record
    assert record["format"] == "torchscript" and record["version"] == "1.2"
    for rel, digest in record["files"].items():  # every file, hashed as stored
        assert hashlib.sha256((store / "files" / rel).read_bytes()).hexdigest() == digest
    assert set(record["files"]) == {"tiny-body.yaml", "tiny-body.ts", "tiny-body.md"}
    trial = record["checks"]["isolated_load_and_run"]
    assert trial["modality"] == "CT" and trial["label_map_shape"] == trial["input_shape"]

    body = _rows(node_dir)["tiny-body"]
    assert body["status"] == "admitted" and "synthetic CT input" in body["checked"]
    assert body["device_uid"] == record["device_uid"] and body["files"] == record["files"]
    assert body["rules"] == ["ct-body"] and body["format"] == "torchscript"
    assert body["usage"]["24h"] == {
        "runs": 0,
        "failures": 0,
        "p50_seconds": None,
        "p95_seconds": None,
    }

    out = node_dir / "out"
    predicted = ainode(
        "predict", "--model", "tiny-body", "--out", str(out), str(corpus / CHEST), cwd=node_dir
    )
    assert predicted.returncode == 0, predicted.stderr
    assert json.loads((out / "prediction.json").read_text())["device_uid"] == record["device_uid"]

    ok = ainode("models", "verify", cwd=node_dir)
    assert ok.returncode == 0 and "3 files match" in ok.stdout
    network = store / "files" / "tiny-body.ts"
    network.write_bytes(network.read_bytes() + b"\0")
    changed = ainode("models", "verify", "--json", cwd=node_dir)
    assert changed.returncode == 1
    [row] = json.loads(changed.stdout)
    assert not row["ok"] and row["problems"][0].startswith("tiny-body.ts changed (sha256 ")

    assert _rows(node_dir)["tiny-body"]["status"] == "changed"
    refused = ainode(
        "predict", "--model", "tiny-body", "--out", str(out), str(corpus / CHEST), cwd=node_dir
    )
    assert refused.returncode == 2
    assert "refused: its files differ from those admitted" in refused.stderr
    assert "tiny-body.ts changed" in refused.stderr

    again = ainode("models", "add", "incoming", cwd=node_dir)  # the name is taken now
    assert again.returncode == 2 and "use --replace" in again.stderr
    replaced = ainode("models", "add", "incoming", "--replace", "--json", cwd=node_dir)
    assert replaced.returncode == 0, replaced.stderr
    assert json.loads(replaced.stdout)["device_uid"] == record["device_uid"]  # same weights
    assert ainode("models", "verify", cwd=node_dir).returncode == 0
    assert not [p for p in store.parent.iterdir() if p.name.startswith(".")]  # no leftovers


@pytest.mark.slow  # export + isolated trial run of a 3D UNet: ~15 s on CI
def test_add_onnx_zip(node_dir: Path) -> None:
    write_onnx_model(node_dir / "onnx-src", name="lung-onnx")
    archive = node_dir / "lung-onnx.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for f in (node_dir / "onnx-src").iterdir():
            zf.write(f, f"lung-onnx/{f.name}")
    added = ainode("models", "add", str(archive), cwd=node_dir)
    assert added.returncode == 0, added.stderr
    assert added.stdout.startswith("admitted lung-onnx v2.0 (onnx)")
    row = _rows(node_dir)["lung-onnx"]
    assert row["status"] == "admitted" and row["format"] == "onnx"
    assert row["device"] == "onnxruntime:CPUExecutionProvider"  # config: device cpu
    assert set(row["files"]) == {"lung-onnx.yaml", "lung-onnx.onnx"}


@pytest.mark.slow  # five CLI runs that each import torch: ~30 s on CI
def test_add_refusals(node_dir: Path) -> None:
    empty = node_dir / "empty"
    empty.mkdir()
    r = ainode("models", "add", "empty", cwd=node_dir)
    assert r.returncode == 2 and "no model found" in r.stderr

    evil = node_dir / "evil.zip"
    with zipfile.ZipFile(evil, "w") as zf:
        zf.writestr("../outside.yaml", "name: x\n")
    r = ainode("models", "add", str(evil), cwd=node_dir)
    assert r.returncode == 2 and "'../outside.yaml' escapes the archive" in r.stderr

    (node_dir / "notzip.zip").write_text("plain text")
    r = ainode("models", "add", "notzip.zip", cwd=node_dir)
    assert r.returncode == 2 and "not a readable zip file" in r.stderr

    write_body_model(node_dir / "clash", name="lung-nodule-seg")
    r = ainode("models", "add", "clash", cwd=node_dir)
    assert r.returncode == 2 and "a model named 'lung-nodule-seg' already exists" in r.stderr

    r = ainode("models", "verify", "nope", cwd=node_dir)
    assert r.returncode == 2 and "not admitted: nope" in r.stderr
    assert not (node_dir / "data" / "models").exists() or not any(
        (node_dir / "data" / "models").iterdir()
    )


@pytest.mark.slow  # one isolated trial run: ~10 s on CI
def test_add_refuses_a_model_that_fails_on_its_declared_input(node_dir: Path) -> None:
    """A 2D classifier declared as a 3D CT segmentation model: the trial run says so."""
    write_torchscript(
        node_dir / "liar",
        "liar",
        MeanClassifier2d(),
        textwrap.dedent(
            """\
            name: liar
            task: segmentation
            modalities: [CT]
            dims: [3]
            labels: {1: {name: Body}}
            """
        ),
    )
    r = ainode("models", "add", "liar", cwd=node_dir)
    assert r.returncode == 2
    assert "model 'liar' (admission trial run) failed" in r.stderr
    assert not (node_dir / "data" / "models" / "liar").exists()
