"""``ainode train``: wired into the CLI, clear failure for an unknown model (no training in CI)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run(
        [sys.executable, "-m", "node", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        cwd=ROOT,
    )


def test_train_help_lists_options() -> None:
    out = _run("train", "--help")
    assert out.returncode == 0, out.stderr
    assert "--seed" in out.stdout and "--steps" in out.stdout


def test_train_unknown_model_fails_with_one_line() -> None:
    out = _run("train", "no-such-model")
    assert out.returncode == 2
    assert out.stderr.strip().startswith("ainode: error: no demo model 'no-such-model'")
    assert "lung-nodule-seg" in out.stderr


def test_module_entry_point_rejects_unknown_model() -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    out = subprocess.run(
        [sys.executable, "-m", "node.models.demo.train", "no-such-model"],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        cwd=ROOT,
    )
    assert out.returncode != 0
    assert "unknown demo model" in out.stderr
