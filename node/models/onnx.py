"""ONNX files (``model.onnx``) described by a YAML sidecar, run on onnxruntime.

The sidecar is the same ``ModelSpec`` as a TorchScript sidecar (node/models/network.py): what the
model accepts (modalities, body parts, 2D/3D), its preprocessing (spacing, normalisation,
sliding-window ``roi_size``) and its outputs (``labels`` or ``classes``).  ``file:`` names the
``.onnx`` file; without it ``<stem>.onnx`` next to the sidecar is used.  Example
(``lung.yaml`` next to ``lung.onnx``)::

    name: lung-onnx
    version: "1.0"
    task: segmentation
    modalities: [CT]
    dims: [3]
    spacing: [2.5, 2.5, 2.5]
    normalise: {kind: window, center: -250, width: 1500}
    roi_size: [64, 96, 96]
    labels:
      1: {name: Lung, type: [39607008, SCT, Lung]}

The graph's first input gets the (N, 1, *spatial) float32 image and its first output is taken as
the logits (N, C, *spatial), so an export with dynamic spatial axes (or a fixed size equal to
``roi_size``) fits.  Discovery reads only the YAML; the session is created on first use, with the
execution providers of ``inference.device`` (node/models/devices.py).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from node.errors import ModelError
from node.models.devices import onnx_providers
from node.models.network import ModelSpec, NetworkModel, read_spec, spec_info

__all__ = ["OnnxNetwork", "is_onnx_sidecar", "load_onnx", "onnx_file"]


def onnx_file(sidecar: Path, spec: ModelSpec) -> Path | None:
    """The ``.onnx`` file a sidecar names (``file:``) or ``<stem>.onnx``; None if neither.

    Raises
    ------
    ModelError
        ``file:`` points outside the sidecar's folder or to a missing file.
    """
    if spec.file:
        if not spec.file.endswith(".onnx"):
            return None
        if Path(spec.file).is_absolute() or ".." in Path(spec.file).parts:
            raise ModelError(
                f"{sidecar}: network file {spec.file!r} must be inside the sidecar's folder "
                "(models load only from the configured model folders)"
            )
        path = sidecar.parent / spec.file
        if not path.is_file():
            raise ModelError(f"{sidecar}: network file {spec.file!r} not found")
        return path
    candidate = sidecar.with_suffix(".onnx")
    return candidate if candidate.is_file() else None


def is_onnx_sidecar(sidecar: Path) -> bool:
    """True when ``sidecar`` describes an ONNX file (``file: *.onnx`` or ``<stem>.onnx``)."""
    if sidecar.with_suffix(".onnx").is_file():
        return True
    try:
        from ruamel.yaml import YAML

        data = YAML(typ="safe").load(sidecar.read_text(encoding="utf-8"))
    except Exception:  # noqa: BLE001 - read_spec reports a bad sidecar precisely later
        return False
    return isinstance(data, dict) and str(data.get("file") or "").endswith(".onnx")


class OnnxNetwork:
    """An onnxruntime session called like a torch network: tensor in, tensor out."""

    def __init__(self, path: Path, *, preference: str) -> None:
        import onnxruntime

        options = onnxruntime.SessionOptions()
        options.log_severity_level = 3  # errors only: graph-optimiser warnings are noise
        try:
            self.session = onnxruntime.InferenceSession(
                str(path), sess_options=options, providers=onnx_providers(preference)
            )
        except ModelError:
            raise
        except Exception as exc:  # noqa: BLE001 - onnxruntime raises its own untyped errors
            raise ModelError(f"{path.name} is not a loadable ONNX model: {exc}") from exc
        inputs = self.session.get_inputs()
        if not inputs:
            raise ModelError(f"{path.name}: the ONNX graph has no input")
        self.input_name: str = inputs[0].name
        self.input_shape: list[Any] = list(inputs[0].shape)
        self.providers: list[str] = list(self.session.get_providers())

    def __call__(self, image: torch.Tensor) -> torch.Tensor:
        x = image.detach().to("cpu", torch.float32).numpy()
        try:
            out = self.session.run(None, {self.input_name: np.ascontiguousarray(x)})
        except Exception as exc:  # noqa: BLE001 - onnxruntime's errors are untyped
            raise RuntimeError(
                f"onnxruntime failed on input {list(x.shape)} (graph input "
                f"{self.input_name!r} {self.input_shape}): {exc}"
            ) from exc
        return torch.from_numpy(np.asarray(out[0], dtype=np.float32)).to(image.device)


def load_onnx(sidecar: Path, *, device: torch.device, preference: str = "auto") -> NetworkModel:
    """Describe (not load) the ONNX model of one sidecar.

    Parameters
    ----------
    sidecar:
        The YAML spec.
    device:
        The torch device of pre/post-processing (``select_device``).
    preference:
        ``inference.device``, mapped to onnxruntime providers on first use.

    Raises
    ------
    ModelError
        The sidecar is invalid or its ``.onnx`` file is missing.
    """
    spec = read_spec(sidecar)
    path = onnx_file(sidecar, spec)
    if path is None:
        raise ModelError(f"{sidecar}: no ONNX file {sidecar.stem}.onnx next to it; set 'file:'")
    card = ""
    if spec.card:
        try:
            card = (sidecar.parent / spec.card).read_text(encoding="utf-8")
        except OSError as exc:
            raise ModelError(f"{sidecar}: cannot read model card {spec.card!r}") from exc

    def loader(dev: torch.device) -> OnnxNetwork:
        return OnnxNetwork(path, preference=preference)

    return NetworkModel(spec_info(spec, source="onnx", card=card), spec, loader, device=device)
