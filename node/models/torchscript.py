"""TorchScript files (or torch.export ``.pt2`` programs) described by a YAML sidecar.

The sidecar is a ``ModelSpec`` (node/models/network.py).  Discovery reads only the YAML and checks
that the network file exists; ``torch.jit.load`` runs on first use.  TorchScript archives are
loaded without unpickling arbitrary Python objects, unlike ``torch.load`` of a whole module.
"""

from __future__ import annotations

from pathlib import Path

import torch

from node.errors import ModelError
from node.models.network import ModelSpec, NetworkModel, read_spec, spec_info
from node.models.runtime import load_torchscript_file

__all__ = ["SIDECAR_SUFFIXES", "load_torchscript", "network_file"]

SIDECAR_SUFFIXES = (".yaml", ".yml")
_NETWORK_SUFFIXES = (".ts", ".pt", ".pth", ".pt2")


def network_file(sidecar: Path, spec: ModelSpec) -> Path:
    """The TorchScript file a sidecar names (``file:``), else ``<stem>.ts``/``.pt``/``.pth``.

    Raises
    ------
    ModelError
        No such file.
    """
    if spec.file:
        if Path(spec.file).is_absolute() or ".." in Path(spec.file).parts:
            raise ModelError(
                f"{sidecar}: network file {spec.file!r} must be inside the sidecar's folder "
                "(models load only from the configured model folders)"
            )
        path = (sidecar.parent / spec.file).resolve()
        if not path.is_file():
            raise ModelError(f"{sidecar}: network file {spec.file!r} not found")
        return path
    for suffix in _NETWORK_SUFFIXES:
        candidate = sidecar.with_suffix(suffix)
        if candidate.is_file():
            return candidate
    raise ModelError(
        f"{sidecar}: no network file {sidecar.stem}.ts/.pt next to it; set 'file:' in the sidecar"
    )


def load_torchscript(sidecar: Path, *, device: torch.device) -> NetworkModel:
    """Describe (not load) the TorchScript model of one sidecar.

    Raises
    ------
    ModelError
        The sidecar is invalid or its network file is missing.
    """
    spec = read_spec(sidecar)
    path = network_file(sidecar, spec)
    card = ""
    if spec.card:
        card_path = sidecar.parent / spec.card
        try:
            card = card_path.read_text(encoding="utf-8")
        except OSError as exc:
            raise ModelError(f"{sidecar}: cannot read model card {spec.card!r}") from exc

    def loader(dev: torch.device) -> torch.nn.Module:
        return load_torchscript_file(path, dev)

    return NetworkModel(
        spec_info(spec, source="torchscript", card=card), spec, loader, device=device
    )
