"""``cxr-classify``: chest radiograph normal vs opacity, 2D CNN with Grad-CAM (demo).

The projection image is resized (aspect ratio kept, zero padding) to 128 x 128, scaled by its 1st
and 99th percentiles, and classified by a small VGG-style CNN whose last layer gives per-location
class evidence (16 x 16 cells); the logits are its global maxima.  The Grad-CAM map of the
predicted class on that layer (``monai.visualize.GradCAM``) is mapped back to the input pixel grid.
Training adds a localisation term to the cross-entropy (``training.loop``): trained on
image labels alone, the evidence peaked at the opacity's upper edge, just outside the lesion.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import numpy.typing as npt
import torch
import torch.nn.functional as F  # noqa: N812

from node.models.base import Model, ModelInfo, OutputKind, Task
from node.models.builtin._common import (
    LazyNet,
    heldout_metrics,
    load_card,
    predicted_class_gradcam,
)
from node.types import HeatMap, Prediction, Volume

__all__ = ["CLASSES", "CxrClassifier", "build_network", "preprocess"]

NAME = "cxr-classify"
VERSION = "1.0.0"
SIZE = 128
CLASSES = ("normal", "opacity")
GRADCAM_LAYER = "classmap"


class _Block(torch.nn.Sequential):
    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.add_module("conv1", torch.nn.Conv2d(cin, cout, 3, padding=1, padding_mode="replicate"))
        self.add_module("bn1", torch.nn.BatchNorm2d(cout))
        self.add_module("act1", torch.nn.ReLU())
        self.add_module(
            "conv2", torch.nn.Conv2d(cout, cout, 3, padding=1, padding_mode="replicate")
        )
        self.add_module("bn2", torch.nn.BatchNorm2d(cout))
        self.add_module("act2", torch.nn.ReLU())


class CxrNet(torch.nn.Module):
    """VGG-like CNN: 3 blocks at 64/32/... after an initial stride-2 stem, GAP + linear head."""

    def __init__(self, widths: tuple[int, int, int] = (12, 24, 48)) -> None:
        super().__init__()
        self.features = torch.nn.Sequential()
        self.features.add_module("pool0", torch.nn.AvgPool2d(2))
        self.features.add_module("block1", _Block(1, widths[0]))
        self.features.add_module("pool1", torch.nn.MaxPool2d(2))
        self.features.add_module("block2", _Block(widths[0], widths[1]))
        self.features.add_module("pool2", torch.nn.MaxPool2d(2))
        self.features.add_module("block3", _Block(widths[1], widths[2]))
        self.classmap = torch.nn.Conv2d(widths[2], 2, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits (normal, opacity): global max of each class evidence map, centred over classes.

        Centring keeps the predicted class's logit positive, so its Grad-CAM on ``classmap``
        (the per-location evidence difference) is never cut to zero by Grad-CAM's ReLU.
        """
        maps: torch.Tensor = self.classmap(self.features(x))
        peak = maps.amax(dim=(2, 3))
        return peak - peak.mean(dim=1, keepdim=True)


def build_network() -> torch.nn.Module:
    """The radiograph classifier (1 channel in, 2 logits out)."""
    return CxrNet()


def preprocess(image: npt.NDArray[np.floating]) -> tuple[torch.Tensor, tuple[int, int, int, int]]:
    """(1, 1, 128, 128) network input and the placement (top, left, height, width) of the image."""
    img = np.asarray(image, dtype=np.float32)
    lo, hi = np.percentile(img, [1.0, 99.0])
    img = np.clip((img - lo) / max(float(hi - lo), 1e-6), 0.0, 1.0)
    h, w = img.shape
    scale = SIZE / max(h, w)
    nh, nw = max(1, int(round(h * scale))), max(1, int(round(w * scale)))
    t = F.interpolate(
        torch.from_numpy(img)[None, None], size=(nh, nw), mode="bilinear", align_corners=False
    )
    top, left = (SIZE - nh) // 2, (SIZE - nw) // 2
    x = torch.zeros(1, 1, SIZE, SIZE)
    x[..., top : top + nh, left : left + nw] = t
    return x, (top, left, nh, nw)


def heat_to_image(
    cam: npt.NDArray[np.floating], place: tuple[int, int, int, int], shape: tuple[int, int]
) -> npt.NDArray[np.float32]:
    """Map a 128 x 128 CAM back to the original image grid."""
    top, left, nh, nw = place
    sub = torch.from_numpy(np.ascontiguousarray(cam[top : top + nh, left : left + nw]))
    t = F.interpolate(sub[None, None].float(), size=shape, mode="bilinear", align_corners=False)
    return t[0, 0].clamp(0.0, 1.0).numpy().astype(np.float32)


class CxrClassifier(Model):
    """Normal vs opacity on chest radiographs with a Grad-CAM heat map (demo)."""

    def __init__(self) -> None:
        self.info = ModelInfo(
            name=NAME,
            version=VERSION,
            task=Task.CLASSIFICATION,
            outputs=(OutputKind.PROBABILITIES, OutputKind.HEATMAP),
            modalities=("CR", "DX"),
            body_parts=("CHEST",),
            dims=(2,),
            is_demo=True,
            description="Chest radiograph normal vs opacity CNN with Grad-CAM (demo)",
            card=load_card(NAME),
            metrics=heldout_metrics(NAME),
        )
        self._net = LazyNet(NAME, build_network)
        self._cams: dict[int, Any] = {}

    def probabilities(self, batch: torch.Tensor) -> npt.NDArray[np.float32]:
        """Opacity probability for each image of a preprocessed (N, 1, 128, 128) batch."""
        net = self._net.get()
        with torch.inference_mode():
            return torch.softmax(net(batch), dim=1)[:, 1].numpy().astype(np.float32)

    def gradcam(self, batch: torch.Tensor) -> npt.NDArray[np.float32]:
        """Grad-CAM (N, 128, 128) in 0..1 for the predicted class."""
        return predicted_class_gradcam(self._net.get(), self._cams, batch, layer=GRADCAM_LAYER)

    def predict(self, volume: Volume) -> Prediction:
        """Classify the (single) image of ``volume``; heat map on its pixel grid."""
        t0 = time.perf_counter()
        self._net.get()
        t1 = time.perf_counter()
        image = np.asarray(volume.voxels[0], dtype=np.float32)
        x, place = preprocess(image)
        t2 = time.perf_counter()
        p = float(self.probabilities(x)[0])
        cam = heat_to_image(self.gradcam(x)[0], place, (image.shape[0], image.shape[1]))
        t3 = time.perf_counter()
        return Prediction(
            model_name=NAME,
            model_version=VERSION,
            task=Task.CLASSIFICATION.value,
            is_demo=True,
            class_probabilities={"normal": round(1.0 - p, 4), "opacity": round(p, 4)},
            heatmaps=(HeatMap(values=cam, label="Grad-CAM opacity", slice_index=0),),
            timings_seconds={"load": t1 - t0, "preprocess": t2 - t1, "forward": t3 - t2},
        )
