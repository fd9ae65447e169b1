"""MONAI bundle folders: ``configs/inference.json|yaml`` + ``models/model.ts|model.pt``.

Loaded from a local folder only, without ``monai.bundle.load``/``download`` (network; and ``load``
defaults to the train workflow) and without ``verify_metadata`` (downloads a JSON schema):

* identity comes from ``configs/metadata.json`` (plain JSON, nothing evaluated): ``version``,
  ``description``, and label names from ``network_data_format.outputs.pred.channel_def``;
* an optional ``ainode.yaml`` in the bundle (a ``ModelSpec`` without ``file``) overrides them
  and says what the model accepts (modalities, body parts, spacing, normalisation...);
* ``models/model.ts`` is loaded with ``torch.jit.load``; otherwise ``network_def`` of the
  inference config is instantiated with ``monai.bundle.ConfigParser`` (``bundle_root`` set to
  the folder, not the current directory) and ``models/model.pt`` is read with
  ``torch.load(weights_only=True)``.

Bundle configs are code (``$`` expressions, ``_target_``): only folders listed in the node's
``models`` configuration are ever parsed.  The bundle's own pre/post-processing transforms expect
files on disk, so ainode applies its spec pipeline around ``network_def`` instead.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import torch

from node.errors import ModelError
from node.models.network import ModelSpec, NetworkModel, read_spec, spec_info
from node.models.runtime import load_torchscript_file

__all__ = ["is_bundle", "load_bundle"]

_CONFIG_NAMES = ("inference.json", "inference.yaml", "inference.yml")


def is_bundle(folder: Path) -> bool:
    """True when ``folder`` looks like a MONAI bundle (has ``configs/inference.*``)."""
    return any((folder / "configs" / n).is_file() for n in _CONFIG_NAMES)


def _config_file(folder: Path) -> Path:
    for name in _CONFIG_NAMES:
        path = folder / "configs" / name
        if path.is_file():
            return path
    raise ModelError(f"{folder}: not a MONAI bundle (no configs/inference.json or .yaml)")


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip("-._") or "bundle"


def _metadata_defaults(folder: Path) -> dict[str, Any]:
    defaults: dict[str, Any] = {"name": _slug(folder.name)}
    meta_path = folder / "configs" / "metadata.json"
    if not meta_path.is_file():
        return defaults
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ModelError(f"{meta_path}: invalid JSON: {exc}") from exc
    if not isinstance(meta, dict):
        raise ModelError(f"{meta_path}: metadata must be a JSON object")
    if meta.get("version"):
        defaults["version"] = str(meta["version"])
    if meta.get("description"):
        defaults["description"] = str(meta["description"])
    channels = (
        meta.get("network_data_format", {}).get("outputs", {}).get("pred", {}).get("channel_def")
    )
    if isinstance(channels, dict):
        labels = {
            int(k): {"name": str(v)}
            for k, v in channels.items()
            if str(k).isdigit() and int(k) > 0 and str(v).lower() != "background"
        }
        if labels:
            defaults["labels"] = labels
    return defaults


def _raw_roi_size(config_file: Path) -> list[int] | None:
    """``inferer.roi_size`` when it is a literal list of ints (never evaluated)."""
    if config_file.suffix != ".json":
        return None
    try:
        raw = json.loads(config_file.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ModelError(f"{config_file}: invalid JSON: {exc}") from exc
    roi = raw.get("inferer", {}).get("roi_size") if isinstance(raw, dict) else None
    if isinstance(roi, list) and roi and all(isinstance(v, int) for v in roi):
        return roi
    return None


def _spec(folder: Path) -> ModelSpec:
    defaults = _metadata_defaults(folder)
    roi = _raw_roi_size(_config_file(folder))
    if roi is not None:
        defaults["roi_size"] = roi
    override = folder / "ainode.yaml"
    if override.is_file():
        return read_spec(override, defaults=defaults)
    try:
        return ModelSpec.model_validate(defaults)
    except ValueError as exc:
        raise ModelError(f"{folder}: cannot describe bundle: {exc}") from exc


def _load_network(folder: Path, device: torch.device) -> torch.nn.Module:
    ts = folder / "models" / "model.ts"
    if ts.is_file():
        return load_torchscript_file(ts, device)
    weights = folder / "models" / "model.pt"
    if not weights.is_file():
        raise ModelError(f"{folder}: no models/model.ts or models/model.pt")
    from monai.bundle.config_parser import ConfigParser

    parser = ConfigParser()
    parser.read_config(str(_config_file(folder)))
    meta = folder / "configs" / "metadata.json"
    if meta.is_file():
        parser.read_meta(str(meta))
    parser["bundle_root"] = str(folder)  # not the current directory
    if "network_def" not in parser:
        raise ModelError(f"{folder}: inference config has no 'network_def'")
    try:
        network = parser.get_parsed_content("network_def", instantiate=True)
    except Exception as exc:  # noqa: BLE001 - bundle code may raise anything; report it
        raise ModelError(f"{folder}: cannot instantiate network_def: {exc}") from exc
    if not isinstance(network, torch.nn.Module):
        raise ModelError(f"{folder}: network_def is not a torch module")
    # weights_only: a pickle that asks for anything but tensors and containers is refused
    # (pickle.UnpicklingError, reported by NetworkModel.load) instead of running its code
    state = torch.load(weights, map_location=device, weights_only=True)
    if isinstance(state, dict) and "model" in state and isinstance(state["model"], dict):
        state = state["model"]  # checkpoints saved as {"model": state_dict, ...}
    if not isinstance(state, dict):
        raise ModelError(f"{weights}: expected a state dict")
    network.load_state_dict(state)
    return network.to(device)


def load_bundle(folder: Path, *, device: torch.device) -> NetworkModel:
    """Describe (not load) the model of one MONAI bundle folder.

    Raises
    ------
    ModelError
        The folder is not a bundle, has no weights, or its metadata/spec is invalid.
    """
    config = _config_file(folder)
    if not (
        (folder / "models" / "model.ts").is_file() or (folder / "models" / "model.pt").is_file()
    ):
        raise ModelError(f"{folder}: bundle has no models/model.ts or models/model.pt")
    spec = _spec(folder)
    card = ""
    for name in ("MODEL_CARD.md", "docs/README.md"):
        if (folder / name).is_file():
            card = (folder / name).read_text(encoding="utf-8", errors="replace")
            break
    del config

    def loader(dev: torch.device) -> torch.nn.Module:
        return _load_network(folder, dev)

    return NetworkModel(spec_info(spec, source="bundle", card=card), spec, loader, device=device)
