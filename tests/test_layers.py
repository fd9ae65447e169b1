"""The layering of docs/architecture.md holds: import-linter's contracts in pyproject.toml."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_import_contracts_are_kept() -> None:
    """``lint-imports``: dicom_rules imports nothing from node; stages import only downstream."""
    lint = Path(sys.executable).with_name("lint-imports")
    assert lint.is_file(), "import-linter is missing: run 'make install-dev'"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run(
        [str(lint), "--no-cache"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    assert "0 broken" in proc.stdout and "2 kept" in proc.stdout


def test_a_broken_contract_is_reported(tmp_path: Path) -> None:
    """The check can fail: a config that forbids node.jobs from importing node.models breaks."""
    lint = Path(sys.executable).with_name("lint-imports")
    config = tmp_path / "contracts.toml"
    config.write_text(
        "[tool.importlinter]\n"
        'root_packages = ["node"]\n'
        "[[tool.importlinter.contracts]]\n"
        'name = "jobs without models"\n'
        'type = "forbidden"\n'
        'source_modules = ["node.jobs"]\n'
        'forbidden_modules = ["node.models"]\n',
        encoding="utf-8",
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run(
        [str(lint), "--no-cache", "--config", str(config)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 1 and "BROKEN" in proc.stdout
