"""What every discovered model can read, described by a child process (``ModelInfo`` as JSON).

The router checks each series against its models' requirements (``ModelInfo.refusal``) before it
creates a job.  Discovering the models imports torch and MONAI, which would hold the node
process's interpreter for seconds while it receives instances; so the node asks a child process
(``python -m node.models.describe --device D PATH...``) once, and rebuilds the ``ModelInfo``
values from its JSON.
"""

from __future__ import annotations

import argparse
import dataclasses
import enum
import json
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from node.errors import ModelError
from node.models.base import ModelInfo, OutputKind, Task

__all__ = ["describe_models", "info_from_json", "info_to_json"]


def info_to_json(info: ModelInfo) -> dict[str, Any]:
    """A ``ModelInfo`` as plain JSON (enums as their values, tuples as lists)."""
    out: dict[str, Any] = {}
    for f in dataclasses.fields(info):
        value = getattr(info, f.name)
        if isinstance(value, enum.Enum):
            value = value.value
        elif isinstance(value, tuple):
            value = [v.value if isinstance(v, enum.Enum) else v for v in value]
        out[f.name] = value
    return out


def info_from_json(data: dict[str, Any]) -> ModelInfo:
    """The ``ModelInfo`` of ``info_to_json`` (unknown keys are ignored)."""
    kwargs: dict[str, Any] = {}
    for f in dataclasses.fields(ModelInfo):
        if f.name not in data:
            continue
        value = data[f.name]
        if f.name == "task":
            value = Task(value)
        elif f.name == "outputs":
            value = tuple(OutputKind(v) for v in value)
        elif isinstance(value, list):
            value = tuple(value)
        kwargs[f.name] = value
    return ModelInfo(**kwargs)


def _cache_key(paths: Sequence[Path], device: str) -> str:
    """What the description depends on: ainode's model code, installed entry points, and the
    configured model files (path, size, modification time)."""
    import hashlib
    import importlib.metadata

    import node.models as models_pkg

    h = hashlib.sha256(f"{sys.executable}\n{device}\n".encode())
    code = Path(models_pkg.__file__).parent
    for f in sorted(code.rglob("*.py")):
        st = f.stat()
        h.update(f"{f}:{st.st_size}:{st.st_mtime_ns}\n".encode())
    for ep in sorted(importlib.metadata.entry_points(group="ainode.models"), key=str):
        h.update(f"ep:{ep.name}={ep.value}\n".encode())
    for root in paths:
        files = sorted(Path(root).rglob("*")) if Path(root).is_dir() else [Path(root)]
        for f in files:
            if f.is_file():
                st = f.stat()
                h.update(f"{f}:{st.st_size}:{st.st_mtime_ns}\n".encode())
    return h.hexdigest()


def describe_models(
    paths: Sequence[Path],
    *,
    device: str = "auto",
    timeout_seconds: float = 600.0,
    cache: Path | None = None,
) -> dict[str, ModelInfo]:
    """Every model a registry with ``paths`` would discover, by name, from a child process.

    ``cache``: a JSON file remembering the answer while nothing it depends on changed (the model
    code, entry points, the configured model files), so a restarted node routes at once.

    Raises
    ------
    ModelError
        The child failed or did not answer in time.
    """
    key = _cache_key(paths, device) if cache is not None else ""
    if cache is not None:
        try:
            stored = json.loads(cache.read_text(encoding="utf-8"))
            if stored.get("key") == key:
                return {d["name"]: info_from_json(d) for d in stored["models"]}
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            pass  # absent or unreadable: describe again
    cmd = [sys.executable, "-m", "node.models.describe", "--device", device, *map(str, paths)]
    try:
        run = subprocess.run(
            cmd, capture_output=True, text=True, timeout=timeout_seconds, check=False
        )
    except subprocess.TimeoutExpired as exc:
        raise ModelError(f"describing the models took over {timeout_seconds:g} s") from exc
    if run.returncode != 0:
        last = (run.stderr.strip().splitlines() or ["no output"])[-1]
        raise ModelError(f"describing the models failed: {last}")
    models = json.loads(run.stdout)
    if cache is not None:
        tmp = cache.with_name(cache.name + ".tmp")
        try:
            tmp.write_text(json.dumps({"key": key, "models": models}), encoding="utf-8")
            tmp.replace(cache)
        except OSError:
            pass  # a cache only
    return {d["name"]: info_from_json(d) for d in models}


def main(argv: Sequence[str] | None = None) -> None:
    """Print the discovered models' infos as a JSON list (the child's side)."""
    parser = argparse.ArgumentParser(prog="python -m node.models.describe")
    parser.add_argument("--device", default="auto")
    parser.add_argument("paths", nargs="*", type=Path)
    args = parser.parse_args(argv)
    from node.models.registry import discover

    registry = discover(args.paths, device=args.device)
    infos = [info_to_json(e.info) for e in registry.entries() if e.info is not None]
    json.dump(infos, sys.stdout)


if __name__ == "__main__":
    main()
