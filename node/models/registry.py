"""Model discovery: built-ins, ``ainode.models`` entry points, MONAI bundles, TorchScript, ONNX.

Sources, in order (the first model of a name wins; a later one is reported as a duplicate):

1. built-ins: ``node.models.builtin.builtin_models()``;
2. Python entry points in group ``ainode.models``: each names a ``Model`` subclass (with a class
   attribute ``info``), a ``Model`` instance, or a no-argument factory returning one, so a third
   party can ``pip install`` a model;
3. each path of the ``models`` config key: a MONAI bundle folder, a TorchScript or ONNX sidecar
   (``*.yaml``) or network file with one, or a folder holding several of those.

Nothing here loads network weights: entries are described at discovery and instantiated by
``get``; networks load on first ``predict``.  A model that cannot be described (broken folder,
bad sidecar, failing entry point) becomes an entry with ``error`` set: listed, never fatal.
"""

from __future__ import annotations

import importlib.metadata
import logging
import stat
import threading
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch

from node.errors import AinodeError, ModelError, NotFoundError
from node.models.base import Model, ModelInfo
from node.models.bundle import is_bundle, load_bundle
from node.models.identity import Identity, identify
from node.models.onnx import is_onnx_sidecar, load_onnx
from node.models.runtime import select_device
from node.models.torchscript import SIDECAR_SUFFIXES, load_torchscript

__all__ = ["ENTRY_POINT_GROUP", "ModelEntry", "Registry", "discover", "untrusted_reason"]

log = logging.getLogger(__name__)

ENTRY_POINT_GROUP = "ainode.models"


@dataclass(slots=True)
class ModelEntry:
    """One discovered model, or one thing that failed to become a model (``error`` set)."""

    name: str
    source: str  # builtin | entry-point | bundle | torchscript | onnx
    location: str  # module path, entry point or file/folder
    info: ModelInfo | None = None
    error: str | None = None
    factory: Callable[[], Model] | None = field(default=None, repr=False)

    @property
    def is_ok(self) -> bool:
        """True when the model can be instantiated."""
        return self.error is None and self.factory is not None

    def as_json(self, device: str, *, card: Callable[[str], str] | None = None) -> dict[str, Any]:
        """The entry as JSON (``ainode models list --json``, ``GET /api/models``).

        ``card`` shortens the model card (the CLI prints a one-line summary); the full card
        otherwise.
        """
        out: dict[str, Any] = {
            "name": self.name,
            "source": self.source,
            "location": self.location,
            "ok": self.is_ok,
            "error": self.error,
            "device": device if self.is_ok else None,
        }
        info = self.info
        if info is not None:
            out.update(
                version=info.version,
                task=info.task.value,
                outputs=[o.value for o in info.outputs],
                modalities=list(info.modalities),
                body_parts=list(info.body_parts),
                dims=list(info.dims),
                is_demo=info.is_demo,
                description=info.description,
                card=card(info.card) if card is not None else info.card,
                metrics=dict(info.metrics),
            )
        return out


class Registry:
    """The models a node can run, instantiated lazily and cached."""

    def __init__(self, entries: Sequence[ModelEntry], *, device: torch.device) -> None:
        self.device = device
        self._entries: list[ModelEntry] = []
        self._models: dict[str, Model] = {}
        self._lock = threading.Lock()
        seen: dict[str, ModelEntry] = {}
        for entry in entries:
            first = seen.get(entry.name)
            if first is not None and entry.is_ok:
                entry = ModelEntry(
                    name=entry.name,
                    source=entry.source,
                    location=entry.location,
                    info=entry.info,
                    error=f"duplicate model name {entry.name!r}: already provided by "
                    f"{first.source} {first.location}",
                )
            elif entry.is_ok:
                seen[entry.name] = entry
            self._entries.append(entry)
        self._by_name = seen

    def entries(self) -> list[ModelEntry]:
        """Every entry, usable or broken, in discovery order."""
        return list(self._entries)

    def names(self) -> list[str]:
        """Names of the usable models."""
        return list(self._by_name)

    def get(self, name: str) -> Model:
        """The model called ``name`` (instantiated on first request).

        Raises
        ------
        NotFoundError
            No model has that name.
        ModelError
            The model exists but is broken or fails to instantiate.
        """
        with self._lock:
            if name in self._models:
                return self._models[name]
            entry = self._by_name.get(name)
            if entry is None:
                broken = [e for e in self._entries if e.name == name and e.error]
                if broken:
                    raise ModelError(f"model {name!r} is broken: {broken[0].error}")
                known = ", ".join(sorted(self._by_name)) or "none"
                raise NotFoundError(f"no model named {name!r} (known: {known})")
            assert entry.factory is not None
            identity = _identify(entry)  # an admitted model whose files changed is refused here
            try:
                model = entry.factory()
            except AinodeError:
                raise
            except Exception as exc:  # noqa: BLE001 - third-party model code
                raise ModelError(f"model {name!r} failed to initialise: {exc}") from exc
            if not isinstance(model, Model):
                raise ModelError(f"model {name!r} factory returned {type(model).__name__}")
            if identity is not None and model.info.device_uid != identity.device_uid:
                model.info = replace(model.info, device_uid=identity.device_uid)
            self._models[name] = model
            return model


def _identify(entry: ModelEntry) -> Identity | None:
    if entry.info is None:
        return None
    return identify(
        name=entry.name, version=entry.info.version, source=entry.source, location=entry.location
    )


def _constant(model: Model) -> Callable[[], Model]:
    return lambda: model


def _builtin_entries() -> list[ModelEntry]:
    try:
        from node.models.builtin import builtin_models

        models = builtin_models()
    except Exception as exc:  # noqa: BLE001 - a broken built-in must not stop the node
        log.error("models.builtin_failed", extra={"error": type(exc).__name__})
        return [ModelEntry("builtin", "builtin", "node.models.builtin", error=str(exc))]
    return [
        ModelEntry(
            m.info.name,
            "builtin",
            f"{type(m).__module__}.{type(m).__qualname__}",
            info=m.info,
            factory=_constant(m),
        )
        for m in models
    ]


def _entry_point_entry(ep: importlib.metadata.EntryPoint) -> ModelEntry:
    location = f"{ep.value} ({ep.dist.name if ep.dist else 'unknown distribution'})"
    try:
        obj = ep.load()
        if isinstance(obj, type) and issubclass(obj, Model):
            info = getattr(obj, "info", None)
            factory: Callable[[], Model] = obj
            if not isinstance(info, ModelInfo):
                model = obj()
                info, factory = model.info, _constant(model)
        elif isinstance(obj, Model):
            info, factory = obj.info, _constant(obj)
        elif callable(obj):
            model = obj()
            if not isinstance(model, Model):
                raise ModelError(f"factory returned {type(model).__name__}, not a Model")
            info, factory = model.info, _constant(model)
        else:
            raise ModelError(f"{type(obj).__name__} is not a Model, Model subclass or factory")
    except Exception as exc:  # noqa: BLE001 - third-party packages may raise anything
        return ModelEntry(ep.name, "entry-point", location, error=f"{type(exc).__name__}: {exc}")
    info = _with_source(info, "entry-point")
    return ModelEntry(info.name, "entry-point", location, info=info, factory=factory)


def _with_source(info: ModelInfo, source: str) -> ModelInfo:
    return info if info.source == source else replace(info, source=source)


def _entry_point_entries() -> list[ModelEntry]:
    eps = importlib.metadata.entry_points(group=ENTRY_POINT_GROUP)
    return [_entry_point_entry(ep) for ep in sorted(eps, key=lambda e: e.name)]


def _describe(path: Path, kind: str, device: torch.device, preference: str = "auto") -> ModelEntry:
    if kind == "torchscript" and is_onnx_sidecar(path):
        kind = "onnx"
    model: Model
    try:
        if kind == "bundle":
            model = load_bundle(path, device=device)
        elif kind == "onnx":
            model = load_onnx(path, device=device, preference=preference)
        else:
            model = load_torchscript(path, device=device)
    except AinodeError as exc:
        return ModelEntry(
            path.name if kind == "bundle" else path.stem, kind, str(path), error=str(exc)
        )
    return ModelEntry(model.info.name, kind, str(path), info=model.info, factory=_constant(model))


def _sidecar_for(network: Path) -> Path | None:
    for suffix in SIDECAR_SUFFIXES:
        if network.with_suffix(suffix).is_file():
            return network.with_suffix(suffix)
    return None


#: Files walked when checking a configured model folder's permissions.
_MAX_TRUST_CHECKS = 10_000


def untrusted_reason(path: Path) -> str | None:
    """Why ``path`` (a configured model file or folder) must not be loaded, or None.

    Model files are code (bundle configs evaluate expressions, pickles and TorchScript run
    operators), so a configured model path, and everything under it, must not be writable by
    every user of the machine: otherwise any local account could plant a model the node runs.
    """
    candidates = [path]
    if path.is_dir():
        candidates += sorted(path.rglob("*"))[:_MAX_TRUST_CHECKS]
    for p in candidates:
        try:
            st = p.lstat()
        except OSError:
            continue
        if stat.S_ISLNK(st.st_mode):
            continue  # the link target is checked when it is inside; its mode is meaningless
        if st.st_mode & stat.S_IWOTH:
            return (
                f"{p} is writable by every user; model folders must be admin-owned "
                "(chmod o-w) because model files are code"
            )
    return None


def _folder_entries(path: Path, device: torch.device, preference: str = "auto") -> list[ModelEntry]:
    if not path.exists():
        return [ModelEntry(path.name, "folder", str(path), error=f"{path}: no such file or folder")]
    reason = untrusted_reason(path)
    if reason is not None:
        return [ModelEntry(path.name, "folder", str(path), error=reason)]
    if path.is_file():
        if path.suffix in SIDECAR_SUFFIXES:
            return [_describe(path, "torchscript", device, preference)]
        sidecar = _sidecar_for(path)
        if sidecar is None:
            return [
                ModelEntry(
                    path.stem,
                    "torchscript",
                    str(path),
                    error=f"{path}: no YAML sidecar ({path.stem}.yaml) describing it",
                )
            ]
        return [_describe(sidecar, "torchscript", device, preference)]
    if is_bundle(path):
        return [_describe(path, "bundle", device)]
    entries: list[ModelEntry] = []
    for child in sorted(path.iterdir()):
        if child.name.startswith("."):
            continue
        if child.is_dir():
            if is_bundle(child):
                entries.append(_describe(child, "bundle", device))
            else:
                entries.append(
                    ModelEntry(
                        child.name,
                        "bundle",
                        str(child),
                        error=(f"{child}: not a model folder (no configs/inference.json)"),
                    )
                )
        elif child.suffix in SIDECAR_SUFFIXES:
            entries.append(_describe(child, "torchscript", device, preference))
    return entries


def discover(
    model_paths: Iterable[Path] = (),
    *,
    device: str = "auto",
    builtins: bool = True,
    entry_points: bool = True,
) -> Registry:
    """Find every model the node can run (nothing heavy is loaded).

    Parameters
    ----------
    model_paths:
        The ``models`` config key: bundle folders, sidecars, or folders of them.
    device:
        ``inference.device`` (``auto``, ``cpu``, ``cuda``, ``cuda:1``...).
    builtins, entry_points:
        Include those sources (tests turn them off to isolate one source).

    Raises
    ------
    ModelError
        ``device`` names a CUDA device that is not available.
    """
    dev = select_device(device)
    entries: list[ModelEntry] = []
    if builtins:
        entries.extend(_builtin_entries())
    if entry_points:
        entries.extend(_entry_point_entries())
    for path in model_paths:
        entries.extend(_folder_entries(Path(path), dev, device))
    for e in entries:
        if e.error:
            log.warning("models.broken", extra={"model": e.name, "source": e.source})
    return Registry(entries, device=dev)
