"""``device: auto | cpu | cuda | cuda:N`` for torch and onnxruntime, in the CLI that runs models.

This machine (and CI) has no GPU: the CUDA paths are checked for their refusal only.  What ran
on a GPU is recorded in docs/models.md.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from node.errors import ModelError
from node.models.devices import describe_device, parse_device
from node.models.runtime import select_device

ROOT = Path(__file__).resolve().parents[2]
NO_GPU = "checks the refusal on a machine without CUDA"


def test_parse_device() -> None:
    assert parse_device("AUTO") == ("auto", None) and parse_device("") == ("auto", None)
    assert parse_device("cpu") == ("cpu", None) and parse_device("cuda") == ("cuda", None)
    assert parse_device(" cuda:2 ") == ("cuda", 2)
    for bad in ("cuda:x", "gpu", "cuda:-1", "mps"):
        with pytest.raises(ModelError, match="not one of auto, cpu, cuda, cuda:N"):
            parse_device(bad)


def test_describe_device_reports_both_runtimes() -> None:
    auto = describe_device("auto")
    assert auto["torch"] == ("cuda" if torch.cuda.is_available() else "cpu")
    assert auto["onnxruntime"][-1] == "CPUExecutionProvider" and auto["error"] is None
    assert describe_device("cpu")["onnxruntime"] == ["CPUExecutionProvider"]


@pytest.mark.skipif(torch.cuda.is_available(), reason=NO_GPU)
def test_cuda_index_refused_without_gpu() -> None:
    with pytest.raises(ModelError, match="torch sees no CUDA device"):
        select_device("cuda:1")
    assert describe_device("cuda:1")["error"] is not None


def _ainode(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "node", *args],
        cwd=cwd,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=300,
    )


@pytest.mark.slow  # three CLI runs that import torch: ~10 s on CI
@pytest.mark.skipif(torch.cuda.is_available(), reason=NO_GPU)
def test_predict_and_worker_refuse_a_missing_gpu(tmp_path: Path, corpus: Path) -> None:
    dx = corpus / "other-modalities/dx/dx_image.dcm"
    r = _ainode(
        tmp_path, "predict", "--model", "cxr-classify", "--device", "cuda:1", "--out", "o", str(dx)
    )
    assert r.returncode == 2 and "'cuda:1' but torch sees no CUDA device" in r.stderr
    (tmp_path / "worker.yaml").write_text("queue: redis://127.0.0.1:9/0\n")
    r = _ainode(tmp_path, "worker", "--config", "worker.yaml", "--device", "cuda")
    assert r.returncode == 2 and r.stderr.startswith("--device: inference.device is 'cuda'")
    r = _ainode(tmp_path, "worker", "--config", "worker.yaml", "--device", "tpu")
    assert r.returncode == 2 and "not one of auto, cpu, cuda, cuda:N" in r.stderr
