"""Tiny models written to disk by tests: TorchScript + sidecar, MONAI bundles, a Python package."""

from __future__ import annotations

import json
import textwrap
import warnings
from pathlib import Path

import numpy as np
import torch

from node.types import SourceRef, Volume

#: Window that puts HU >= -600 above 0.5 and HU <= -601 below it (no ties on integer HU).
BODY_WINDOW = {"kind": "window", "center": -600.5, "width": 1500}


class Threshold3d(torch.nn.Module):
    """Two channels: constant 0.5 and the input, so argmax = (input > 0.5)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv3d(1, 2, kernel_size=1)
        with torch.no_grad():
            self.conv.weight.zero_()
            self.conv.weight[1] = 1.0
            assert self.conv.bias is not None
            self.conv.bias.copy_(torch.tensor([0.5, 0.0]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.conv(x)
        return out


class MeanClassifier2d(torch.nn.Module):
    """Logits (mean, 1 - mean) of a 2D image."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        m = x.mean(dim=(2, 3))
        return torch.cat([m, 1.0 - m], dim=1)


def _save_scripted(module: torch.nn.Module, path: Path) -> None:
    """torch.jit.script + save; torch 2.13 deprecates TorchScript but bundles still ship it."""
    with warnings.catch_warnings():
        warnings.filterwarnings(
            "ignore", message=r"`torch\.jit\.\w+` is deprecated", category=DeprecationWarning
        )
        torch.jit.save(torch.jit.script(module), str(path))


def write_torchscript(
    folder: Path, name: str, module: torch.nn.Module, sidecar: str, *, suffix: str = ".ts"
) -> Path:
    """Script ``module`` to ``folder/name.ts`` and write ``folder/name.yaml``."""
    folder.mkdir(parents=True, exist_ok=True)
    _save_scripted(module, folder / f"{name}{suffix}")
    path = folder / f"{name}.yaml"
    path.write_text(textwrap.dedent(sidecar), encoding="utf-8")
    return path


def write_body_model(
    folder: Path, *, name: str = "tiny-body", roi: str = "[16, 64, 64]", version: str = "1.2"
) -> Path:
    """TorchScript CT model labelling HU >= -600 as 'Body' (label 1), with a model card."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{name}.md").write_text(
        f"# {name}\n\nTest model: thresholds CT at -600 HU. Not for clinical use.\n",
        encoding="utf-8",
    )
    sidecar = f"""\
        name: {name}
        version: "{version}"
        task: segmentation
        description: threshold test model
        card: {name}.md
        modalities: [CT]
        dims: [3]
        normalise: {json.dumps(BODY_WINDOW)}
        roi_size: {roi}
        overlap: 0.25
        labels:
          1: {{name: Body, type: ["38266002", SCT, Entire body]}}
        """
    return write_torchscript(folder, name, Threshold3d(), sidecar)


UNET_CONFIG = {
    "network_def": {
        "_target_": "monai.networks.nets.UNet",
        "spatial_dims": 3,
        "in_channels": 1,
        # evaluated code: resolves only if bundle_root is the bundle folder, not the cwd
        "out_channels": "$int(np.loadtxt(@bundle_root + '/configs/labels.txt', dtype=str).size)",
        "channels": [4, 8],
        "strides": [2],
        "num_res_units": 0,
    },
    "model_dir": "$@bundle_root + '/models'",
    "preprocessing": {
        "_target_": "Compose",
        "transforms": [
            {"_target_": "LoadImaged", "keys": "image"},
            {"_target_": "EnsureChannelFirstd", "keys": "image"},
            {
                "_target_": "ScaleIntensityRanged",
                "keys": "image",
                "a_min": -1000,
                "a_max": 400,
                "b_min": 0,
                "b_max": 1,
                "clip": True,
            },
        ],
    },
    "inferer": {"_target_": "SlidingWindowInferer", "roi_size": [16, 16, 16], "sw_batch_size": 1},
    "postprocessing": {
        "_target_": "Compose",
        "transforms": [
            {"_target_": "AsDiscreted", "keys": "pred", "argmax": True},
            {"_target_": "SaveImaged", "keys": "pred", "output_dir": "/nonexistent/ainode"},
        ],
    },
}


def unet() -> torch.nn.Module:
    from monai.networks.nets.unet import UNet

    torch.manual_seed(3)
    return UNet(
        spatial_dims=3,
        in_channels=1,
        out_channels=2,
        channels=(4, 8),
        strides=(2,),
        num_res_units=0,
    ).eval()


def write_bundle(
    folder: Path, *, torchscript: bool = False, ainode_yaml: str | None = None
) -> Path:
    """A MONAI bundle with a tiny UNet: configs/inference.json, metadata.json, models/model.*."""
    (folder / "configs").mkdir(parents=True)
    (folder / "models").mkdir()
    (folder / "configs" / "inference.json").write_text(json.dumps(UNET_CONFIG), encoding="utf-8")
    (folder / "configs" / "labels.txt").write_text("background lesion\n", encoding="utf-8")
    meta = {
        "version": "0.3.1",
        "description": "tiny test UNet",
        "network_data_format": {
            "outputs": {"pred": {"channel_def": {"0": "background", "1": "lesion"}}}
        },
    }
    (folder / "configs" / "metadata.json").write_text(json.dumps(meta), encoding="utf-8")
    net = unet()
    if torchscript:
        _save_scripted(net, folder / "models" / "model.ts")
    else:
        torch.save(net.state_dict(), folder / "models" / "model.pt")
    if ainode_yaml is not None:
        (folder / "ainode.yaml").write_text(textwrap.dedent(ainode_yaml), encoding="utf-8")
    return folder


def ct_volume(shape: tuple[int, int, int] = (32, 32, 32), seed: int = 0) -> Volume:
    """A random CT-like volume in HU (int16) with simple geometry."""
    rng = np.random.default_rng(seed)
    voxels = rng.integers(-1000, 400, size=shape).astype(np.int16)
    return Volume(
        voxels=voxels,
        spacing=(2.0, 1.0, 1.0),
        origin=(0.0, 0.0, 0.0),
        direction=np.eye(3),
        sources=tuple(
            SourceRef(f"1.2.3.{i}", "1.2.840.10008.5.1.4.1.1.2") for i in range(shape[0])
        ),
        study_uid="1.2.3",
        series_uid="1.2.3.4",
        modality="CT",
    )


def write_entry_point_package(root: Path) -> None:
    """An installed-looking distribution with two ``ainode.models`` entry points (one broken)."""
    pkg = root / "ainode_test_models"
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text(
        textwrap.dedent(
            """\
            import numpy as np

            from node.models.base import Model, ModelInfo, OutputKind, Task
            from node.types import Prediction


            class MeanModel(Model):
                info = ModelInfo(
                    name="mean-intensity",
                    version="2.0",
                    task=Task.CLASSIFICATION,
                    outputs=(OutputKind.PROBABILITIES,),
                    dims=(2, 3),
                    description="third-party test model",
                )

                def predict(self, volume):
                    bright = float((volume.voxels > 0).mean())
                    return Prediction(
                        model_name=self.info.name,
                        model_version=self.info.version,
                        task="classification",
                        is_demo=False,
                        class_probabilities={"bright": bright, "dark": 1.0 - bright},
                    )


            def broken():
                raise RuntimeError("weights missing in this test package")
            """
        ),
        encoding="utf-8",
    )
    dist = root / "ainode_test_models-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: ainode-test-models\nVersion: 0.1\n", encoding="utf-8"
    )
    (dist / "entry_points.txt").write_text(
        "[ainode.models]\nmean = ainode_test_models:MeanModel\n"
        "broken = ainode_test_models:broken\n",
        encoding="utf-8",
    )
