"""``ct-denoise``: low-dose CT denoiser, a small residual 2D UNet applied slice by slice (demo).

The network predicts the noise of each axial slice (input HU / 1000) and subtracts it; the
result is a derived image in HU on the input grid (``Prediction.derived_voxels``), meant to become
a new derived series.  Trained on synthetic chest phantoms with simulated low-dose noise.
"""

from __future__ import annotations

import time

import numpy as np
import numpy.typing as npt
import torch
from monai.networks.nets.unet import UNet

from node.models.base import Model, ModelInfo, OutputKind, Task
from node.models.builtin._common import LazyNet, heldout_metrics, load_card
from node.types import Prediction, Volume

__all__ = ["CtDenoiser", "build_network", "denoise_slices"]

NAME = "ct-denoise"
VERSION = "1.0.0"
_SCALE = 1000.0
_BATCH = 4


class ResidualDenoiser(torch.nn.Module):
    """x - UNet(x): the UNet estimates the noise."""

    def __init__(self) -> None:
        super().__init__()
        self.unet = UNet(
            spatial_dims=2,
            in_channels=1,
            out_channels=1,
            channels=(16, 32, 64),
            strides=(2, 2),
            num_res_units=1,
            norm="batch",
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Denoised slices (same scaling as the input)."""
        out: torch.Tensor = x - self.unet(x)
        return out


def build_network() -> torch.nn.Module:
    """The residual 2D UNet denoiser."""
    return ResidualDenoiser()


def _pad_to(x: torch.Tensor, multiple: int) -> tuple[torch.Tensor, tuple[int, int]]:
    h, w = x.shape[-2:]
    ph, pw = (-h) % multiple, (-w) % multiple
    if ph or pw:
        x = torch.nn.functional.pad(x, (0, pw, 0, ph), mode="replicate")
    return x, (h, w)


def denoise_slices(net: torch.nn.Module, hu: npt.NDArray[np.floating]) -> npt.NDArray[np.float32]:
    """Denoise a (slices, rows, columns) HU array slice by slice; returns HU (float32)."""
    out = np.empty(hu.shape, dtype=np.float32)
    with torch.inference_mode():
        for start in range(0, hu.shape[0], _BATCH):
            sl = np.asarray(hu[start : start + _BATCH], dtype=np.float32)
            x = torch.from_numpy(np.clip(sl, -1024.0, 3071.0) / _SCALE).unsqueeze(1)
            xp, (h, w) = _pad_to(x, 4)
            y = net(xp)[:, 0, :h, :w] * _SCALE
            out[start : start + _BATCH] = y.numpy()
    return out


class CtDenoiser(Model):
    """Low-dose CT denoising (demo, synthetic data)."""

    def __init__(self) -> None:
        self.info = ModelInfo(
            name=NAME,
            version=VERSION,
            task=Task.ENHANCEMENT,
            outputs=(OutputKind.DERIVED_IMAGE,),
            modalities=("CT",),
            body_parts=("CHEST",),
            dims=(3, 2),
            is_demo=True,
            description="Low-dose CT denoiser, residual 2D UNet (demo, synthetic data)",
            card=load_card(NAME),
            metrics=heldout_metrics(NAME),
        )
        self._net = LazyNet(NAME, build_network)

    def predict(self, volume: Volume) -> Prediction:
        """Denoise every slice; ``derived_voxels`` is in HU on the input grid."""
        t0 = time.perf_counter()
        net = self._net.get()
        t1 = time.perf_counter()
        derived = denoise_slices(net, volume.voxels)
        t2 = time.perf_counter()
        return Prediction(
            model_name=NAME,
            model_version=VERSION,
            task=Task.ENHANCEMENT.value,
            is_demo=True,
            derived_voxels=derived,
            timings_seconds={"load": t1 - t0, "forward": t2 - t1},
        )
