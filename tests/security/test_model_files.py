"""Model files are code: pickled payloads are refused, never run; only configured folders load.

The payload is a pickle whose ``__reduce__`` opens (creates) a marker file.  Unpickled with plain
``pickle`` it does create the marker (checked first, so the test can fail); put into a configured
model folder as a TorchScript file or a bundle's ``models/model.pt``, loading must fail with a
``ModelError`` and the marker must not exist.
"""

from __future__ import annotations

import ast
import json
import os
import pickle
from pathlib import Path

import pytest
import torch

from node.errors import ModelError
from node.models.registry import discover

ROOT = Path(__file__).resolve().parents[2]


class _Payload:
    """Unpickling this calls ``open(marker, "w")``: the marker appears iff code ran."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[str, str]]:
        return (open, (str(self.marker), "w"))


def _torch_pickle(path: Path, marker: Path) -> None:
    """A torch.save zip archive whose data.pkl holds the payload (what a .pt usually is)."""
    torch.save({"weight": _Payload(marker)}, path)


def _raw_pickle(path: Path, marker: Path) -> None:
    path.write_bytes(pickle.dumps(_Payload(marker), protocol=2))  # torch.load's own protocol


def test_payload_runs_code_when_unpickled_plainly(tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    data = pickle.dumps(_Payload(marker))
    handle = pickle.loads(data)  # noqa: S301 - proving the payload is live
    handle.close()
    assert marker.exists()


def _sidecar(folder: Path, name: str, network: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    sidecar = folder / f"{name}.yaml"
    sidecar.write_text(f"name: {name}\nfile: {network}\nmodalities: [CT]\n")
    return sidecar


@pytest.mark.parametrize("writer", [_torch_pickle, _raw_pickle], ids=["torch-save", "pickle"])
def test_pickled_torchscript_file_is_refused(tmp_path: Path, writer) -> None:  # type: ignore[no-untyped-def]
    marker = tmp_path / "ran"
    folder = tmp_path / "models"
    _sidecar(folder, "evil", "evil.pt")
    writer(folder / "evil.pt", marker)
    registry = discover([folder], builtins=False, entry_points=False)
    model = registry.get("evil")
    with pytest.raises(ModelError):
        model.load()  # type: ignore[attr-defined]
    assert not marker.exists()


@pytest.mark.parametrize("writer", [_torch_pickle, _raw_pickle], ids=["torch-save", "pickle"])
def test_pickled_bundle_weights_are_refused(tmp_path: Path, writer) -> None:  # type: ignore[no-untyped-def]
    marker = tmp_path / "ran"
    bundle = tmp_path / "models" / "evil-bundle"
    (bundle / "configs").mkdir(parents=True)
    (bundle / "models").mkdir()
    (bundle / "configs" / "inference.json").write_text(
        json.dumps({"network_def": {"_target_": "torch.nn.Identity"}})
    )
    writer(bundle / "models" / "model.pt", marker)
    registry = discover([tmp_path / "models"], builtins=False, entry_points=False)
    model = registry.get("evil-bundle")
    with pytest.raises(ModelError) as err:
        model.load()  # type: ignore[attr-defined]
    assert "evil-bundle" in str(err.value)
    assert not marker.exists()


def test_sidecar_cannot_point_outside_its_folder(tmp_path: Path) -> None:
    outside = tmp_path / "elsewhere.ts"
    outside.write_bytes(b"not loaded")
    folder = tmp_path / "models"
    _sidecar(folder, "escape", "../elsewhere.ts")
    registry = discover([folder], builtins=False, entry_points=False)
    entry = next(e for e in registry.entries() if e.location.endswith("escape.yaml"))
    assert entry.error is not None and "inside the sidecar's folder" in entry.error
    with pytest.raises(ModelError):
        registry.get("escape")


def test_world_writable_model_folder_is_refused(tmp_path: Path) -> None:
    folder = tmp_path / "models"
    _sidecar(folder, "planted", "planted.ts")
    (folder / "planted.ts").write_bytes(b"x")
    os.chmod(folder, 0o777)
    try:
        registry = discover([folder], builtins=False, entry_points=False)
    finally:
        os.chmod(folder, 0o755)
    assert registry.names() == []
    (entry,) = registry.entries()
    assert entry.error is not None and "writable by every user" in entry.error
    assert "planted" not in registry.names()
    # the same folder, admin-owned again, is described normally
    assert discover([folder], builtins=False, entry_points=False).names() == ["planted"]


def _calls(tree: ast.AST, dotted: str) -> list[ast.Call]:
    mod, _, fn = dotted.rpartition(".")
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
            value = node.func.value
            if node.func.attr == fn and isinstance(value, ast.Name) and value.id == mod:
                out.append(node)
    return out


def test_every_torch_load_in_the_product_uses_weights_only() -> None:
    """Static check over node/ and bench/: torch.load(..., weights_only=True), no pickle.load."""
    found = 0
    for path in [*(ROOT / "node").rglob("*.py"), *(ROOT / "bench").rglob("*.py")]:
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        for call in _calls(tree, "torch.load"):
            found += 1
            flags = {k.arg: k.value for k in call.keywords}
            value = flags.get("weights_only")
            assert isinstance(value, ast.Constant) and value.value is True, (
                f"{path}:{call.lineno}: torch.load without weights_only=True"
            )
        for name in ("pickle.load", "pickle.loads", "dill.load", "joblib.load"):
            assert not _calls(tree, name), f"{path}: {name} on model or user data"
    assert found >= 2  # built-in weights and bundle weights


def test_rule_parser_has_no_code_execution() -> None:
    """dicom_rules reads YAML safely and never evaluates text (issue 3)."""
    for path in (ROOT / "dicom_rules").rglob("*.py"):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
                assert node.func.id not in {"eval", "exec", "compile", "__import__"}, (
                    f"{path}:{node.lineno}: {node.func.id}()"
                )
            # ruamel.yaml: only the safe and round-trip loaders (no Python object tags)
            if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "YAML":
                typ = {k.arg: k.value for k in node.keywords}.get("typ")
                assert isinstance(typ, ast.Constant) and typ.value in {"safe", "rt"}, (
                    f"{path}:{node.lineno}: YAML loader {ast.dump(typ) if typ else 'default'}"
                )
