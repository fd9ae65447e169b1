"""Helpers shared by the Python checkers in tools/checkers (not a public module).

Every checker prints findings as ``PATH: Error - ...`` (or ``Warning``), ends with a one-line
summary, and exits 0 when clean, 1 on a real problem, 2 on a usage error or a missing tool.
"""

from __future__ import annotations

import os
import shutil
import sys
from collections.abc import Iterator
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
INSTALL = "tools/checkers/install (or: make install-dev)"
SR_CLASS_PREFIX = "1.2.840.10008.5.1.4.1.1.88."
KOS_CLASS = "1.2.840.10008.5.1.4.1.1.88.59"


def missing_tool(prog: str, what: str) -> int:
    """Report a missing external program, naming the command that installs it; exit status 2."""
    print(f"{prog}: {what} is not installed; run {INSTALL}", file=sys.stderr)
    return 2


def need(prog: str, *commands: str) -> str | None:
    """The first of ``commands`` that is missing from PATH, if any."""
    for command in commands:
        if shutil.which(command) is None and not Path(command).is_file():
            return command
    return None


def use_pydicom(prog: str) -> None:
    """Import pydicom, re-running this script under the project's Python when this one lacks it."""
    try:
        import pydicom  # noqa: F401
    except ImportError:
        for candidate in (os.environ.get("AINODE_PYTHON"), str(ROOT / ".venv" / "bin" / "python")):
            if candidate and Path(candidate).is_file() and os.environ.get("_AINODE_REEXEC") != "1":
                os.environ["_AINODE_REEXEC"] = "1"
                os.execv(candidate, [candidate, sys.argv[0], *sys.argv[1:]])
        sys.exit(missing_tool(prog, "pydicom (the project's .venv: make install-dev)"))


def is_part10(path: Path) -> bool:
    """True when the file has the DICOM Part 10 preamble ("DICM" at offset 128)."""
    try:
        with path.open("rb") as f:
            f.seek(128)
            return f.read(4) == b"DICM"
    except OSError:
        return False


def walk(args: list[str]) -> Iterator[tuple[Path, bool]]:
    """(path, named explicitly) for every file under the arguments, folders in sorted order.

    A path that does not exist is yielded as explicit so the caller reports it."""
    for arg in args:
        path = Path(arg)
        if path.is_dir():
            for found in sorted(p for p in path.rglob("*") if p.is_file()):
                yield found, False
        else:
            yield path, True
