"""``python -m training``: the demo trainer lives outside the runtime package (no CI training)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run(
        [sys.executable, *args], capture_output=True, text=True, env=env, timeout=120, cwd=ROOT
    )


def test_training_help_lists_options() -> None:
    out = _run("-m", "training", "--help")
    assert out.returncode == 0, out.stderr
    for option in ("--seed", "--steps", "--threads", "--data"):
        assert option in out.stdout


def test_module_entry_point_rejects_unknown_model() -> None:
    out = _run("-m", "training", "no-such-model")
    assert out.returncode == 2
    assert "unknown demo model 'no-such-model'" in out.stderr
    assert "lung-nodule-seg" in out.stderr


def test_shipped_cli_has_no_train_command() -> None:
    """Training is a developer task: the installed ``ainode`` does not offer it."""
    out = _run("-m", "node", "train", "--help")
    assert out.returncode != 0
    assert "No such command 'train'" in out.stderr


def test_runtime_package_holds_no_training_code() -> None:
    """``node/`` keeps the model code and weights; trainers and cards live in ``training/``."""
    node = ROOT / "node"
    assert not (node / "models" / "demo").exists()
    offenders = [
        str(p.relative_to(ROOT))
        for p in node.rglob("*.py")
        if "import training" in p.read_text(encoding="utf-8")
        or "from training" in p.read_text(encoding="utf-8")
    ]
    assert offenders == []
