"""The command line starts light: loading ``ainode``'s commands imports no heavy framework.

Each ``ainode`` command imports what it uses when it runs; a command's module must not pull in
the HTTP face, torch or MONAI at import, or every command (and every test that runs one) pays
for them.  Not a timing test: it checks which packages one import brings in.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
HEAVY = ("fastapi", "uvicorn", "torch", "monai", "highdicom", "onnxruntime", "pynetdicom")


def test_loading_the_cli_imports_no_heavy_framework() -> None:
    probe = (
        "import json, sys\n"
        "import node.cli\n"
        f"print(json.dumps(sorted(m for m in {HEAVY!r} if m in sys.modules)))\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", probe],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"},
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert json.loads(proc.stdout.splitlines()[-1]) == []
