"""ONNX exports of the built-in ``lung-nodule-seg`` UNet, written by tests.

The network and its trained weights are the repository's own (node/models/builtin/assets), so a
test can run one network through onnxruntime (the export) and through torch (``demo_unet``).
"""

from __future__ import annotations

import textwrap
import warnings
from pathlib import Path

import torch

from node.models.builtin._common import ASSETS
from node.models.builtin.lung_nodule_seg import build_network

SIDECAR = """\
    name: {name}
    version: "2.0"
    task: segmentation
    description: lung-nodule-seg UNet exported for tests
    modalities: [CT]
    body_parts: [CHEST]
    dims: [3]
    spacing: [2.5, 2.5, 2.5]
    normalise: {{kind: window, center: -250, width: 1500}}
    roi_size: [32, 96, 96]
    overlap: 0.25
    {file}
    labels:
      1: {{name: Lung, type: ["39607008", SCT, Lung]}}
      2: {{name: Nodule, category: ["49755003", SCT, Morphologically Abnormal Structure],
          type: ["27925004", SCT, Nodule]}}
    """


def demo_unet() -> torch.nn.Module:
    """The built-in lung-nodule-seg UNet with its trained weights, in eval mode."""
    net = build_network()
    state = torch.load(ASSETS / "lung-nodule-seg" / "weights.pt", map_location="cpu")
    net.load_state_dict(state)
    return net.eval()


def export_onnx(net: torch.nn.Module, path: Path) -> Path:
    """``torch.onnx.export`` with dynamic batch and spatial axes.

    The TorchScript-based exporter (``dynamo=False``) is used: the torch.export-based one needs
    ``onnxscript``, which ainode does not depend on.  torch 2.13 deprecates the former, so its
    DeprecationWarnings are silenced here (and only here).
    """
    axes = {0: "n", 2: "z", 3: "y", 4: "x"}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.onnx.export(
            net,
            (torch.zeros(1, 1, 32, 48, 48),),
            str(path),
            dynamo=False,
            input_names=["image"],
            output_names=["logits"],
            dynamic_axes={"image": axes, "logits": axes},
            opset_version=17,
        )
    return path


def write_onnx_model(folder: Path, *, name: str = "lung-onnx", file: bool = False) -> Path:
    """``folder/<name>.onnx`` + ``folder/<name>.yaml`` (``file:`` set when ``file``)."""
    folder.mkdir(parents=True, exist_ok=True)
    export_onnx(demo_unet(), folder / f"{name}.onnx")
    sidecar = folder / f"{name}.yaml"
    line = f"file: {name}.onnx" if file else ""
    sidecar.write_text(textwrap.dedent(SIDECAR).format(name=name, file=line), encoding="utf-8")
    return sidecar
