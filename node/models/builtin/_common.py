"""Shared plumbing of the built-in demo models: assets, lazy weights, resampling and geometry.

Each model keeps its files in ``assets/<model-name>/``: ``weights.pt`` (a ``state_dict`` read with
``torch.load(..., weights_only=True)``), ``metrics.json`` (held-out metrics and the test thresholds,
written by ``python -m training``) and ``MODEL_CARD.md``.
"""

from __future__ import annotations

import json
import math
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import torch
import torch.nn.functional as F  # noqa: N812

from node.errors import ModelError
from node.types import Volume

__all__ = [
    "ASSETS",
    "AxisGrid",
    "LazyNet",
    "ModelGrid",
    "hu_normalise",
    "load_card",
    "load_metrics",
    "minmax_normalise",
    "predicted_class_gradcam",
    "voxel_to_patient",
]

ASSETS = Path(__file__).resolve().parent / "assets"

#: Text every demo card and every demo result carries.
DEMO_NOTICE = "Demo model trained on synthetic phantoms only - not for clinical use."


def load_card(name: str) -> str:
    """The ``MODEL_CARD.md`` text of built-in model ``name`` ("" when absent)."""
    path = ASSETS / name / "MODEL_CARD.md"
    return path.read_text(encoding="utf-8") if path.is_file() else ""


def load_metrics(name: str) -> dict[str, Any]:
    """The ``metrics.json`` of built-in model ``name`` ({} when absent)."""
    path = ASSETS / name / "metrics.json"
    if not path.is_file():
        return {}
    data: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return data


def heldout_metrics(name: str) -> dict[str, float]:
    """Just the held-out metric values (for ``ModelInfo.metrics``)."""
    heldout = load_metrics(name).get("heldout", {})
    return {k: float(v) for k, v in heldout.items() if isinstance(v, int | float)}


class LazyNet:
    """A torch module built on first use and loaded from ``assets/<name>/weights.pt``.

    Instantiating a model must be cheap (``ainode models list``), so nothing touches torch
    weights until the first ``get()``; the load is guarded by a lock for threaded workers.
    """

    def __init__(self, name: str, build: Callable[[], torch.nn.Module]) -> None:
        self._name = name
        self._build = build
        self._net: torch.nn.Module | None = None
        self._lock = threading.Lock()

    @property
    def weights_path(self) -> Path:
        """Where the weights live."""
        return ASSETS / self._name / "weights.pt"

    def get(self) -> torch.nn.Module:
        """The network in eval mode, weights loaded.

        Raises
        ------
        ModelError
            The weights file is missing or does not fit the architecture.
        """
        with self._lock:
            if self._net is None:
                net = self._build()
                path = self.weights_path
                if not path.is_file():
                    raise ModelError(
                        f"weights of built-in model '{self._name}' missing at {path}; "
                        f"run 'python -m training {self._name}' from a checkout"
                    )
                try:
                    state = torch.load(path, map_location="cpu", weights_only=True)
                    net.load_state_dict(state)
                except (RuntimeError, OSError, ValueError) as exc:
                    raise ModelError(
                        f"weights of built-in model '{self._name}' do not load ({exc}); "
                        f"retrain with 'python -m training {self._name}' from a checkout"
                    ) from exc
                net.eval()
                self._net = net
            return self._net


def hu_normalise(hu: torch.Tensor) -> torch.Tensor:
    """Map CT numbers to the network input range: clip to [-1000, 500] HU, then (hu + 500) / 500."""
    return (hu.clamp(-1000.0, 500.0) + 500.0) / 500.0


@dataclass(frozen=True, slots=True)
class AxisGrid:
    """How one axis of an input grid maps to the model grid.

    The input is first average-pooled by ``pool`` (an integer, to avoid aliasing on fine grids),
    then linearly resampled to ``size`` points.  Model point ``j`` sits at input index
    ``offset + j * step``.
    """

    n_in: int
    pool: int
    size: int
    step: float
    offset: float

    @classmethod
    def make(cls, n_in: int, spacing: float, target: float) -> AxisGrid:
        """Grid for ``n_in`` points of ``spacing`` mm resampled to about ``target`` mm."""
        pool = max(1, int(math.floor(target / spacing))) if spacing > 0 else 1
        pool = min(pool, max(1, n_in))
        pooled = max(1, n_in // pool)
        size = max(1, int(round((pooled - 1) * spacing * pool / target)) + 1)
        step = (pooled - 1) * pool / (size - 1) if size > 1 else 0.0
        return cls(n_in=n_in, pool=pool, size=size, step=step, offset=(pool - 1) / 2.0)

    def pooled_coords(self) -> npt.NDArray[np.float64]:
        """Coordinates of the model points on the pooled grid."""
        return (np.arange(self.size) * self.step) / self.pool

    def input_coords_in_model(self) -> npt.NDArray[np.float64]:
        """Coordinates of every input index on the model grid."""
        idx = np.arange(self.n_in, dtype=np.float64)
        if self.size == 1:
            return np.zeros_like(idx)
        return (idx - self.offset) / self.step


def _interp_axis(t: torch.Tensor, dim: int, coords: npt.NDArray[np.float64]) -> torch.Tensor:
    n = t.shape[dim]
    c = np.clip(coords, 0.0, n - 1)
    i0 = np.floor(c).astype(np.int64)
    i1 = np.minimum(i0 + 1, n - 1)
    w = torch.as_tensor(c - i0, dtype=t.dtype)
    shape = [1] * t.dim()
    shape[dim] = -1
    w = w.reshape(shape)
    a = t.index_select(dim, torch.as_tensor(i0))
    b = t.index_select(dim, torch.as_tensor(i1))
    return a * (1 - w) + b * w


def _argmax0(t: torch.Tensor) -> torch.Tensor:
    """argmax over dim 0 as uint8 (ties -> lowest index); much faster than ``argmax(dim=0)``."""
    best = t[0].clone()
    idx = torch.zeros(t.shape[1:], dtype=torch.uint8)
    for c in range(1, t.shape[0]):
        better = t[c] > best
        idx[better] = c
        best = torch.maximum(best, t[c])
    return idx


_MIXED = 255


def _cell_labels(labels: npt.NDArray[np.uint8]) -> npt.NDArray[np.uint8]:
    """Per model cell (point i and the next one on each axis): common label, else ``_MIXED``."""
    lo = labels
    hi = labels
    for axis in range(3):
        n = labels.shape[axis]
        nxt = np.minimum(np.arange(n) + 1, n - 1)
        lo = np.minimum(lo, np.take(lo, nxt, axis=axis))
        hi = np.maximum(hi, np.take(hi, nxt, axis=axis))
    return np.where(lo == hi, labels, np.uint8(_MIXED)).astype(np.uint8)


def _axis_weights(
    axis: AxisGrid,
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64], npt.NDArray[np.float32]]:
    """For each input index: lower and upper model point and the weight of the upper one."""
    n = axis.size
    c = np.clip(axis.input_coords_in_model(), 0.0, n - 1)
    i0 = np.floor(c).astype(np.int64)
    i1 = np.minimum(i0 + 1, n - 1)
    return i0, i1, (c - i0).astype(np.float32)


def _trilinear(
    p: npt.NDArray[np.float32],
    z: tuple[npt.NDArray[np.int64], npt.NDArray[np.int64], npt.NDArray[np.float32]],
    y: tuple[npt.NDArray[np.int64], npt.NDArray[np.int64], npt.NDArray[np.float32]],
    x: tuple[npt.NDArray[np.int64], npt.NDArray[np.int64], npt.NDArray[np.float32]],
) -> npt.NDArray[np.float32]:
    """``(C, N)`` values of ``p`` (C, z, y, x) at N points, interpolated z, then y, then x."""

    def along_z(yi: npt.NDArray[np.int64], xi: npt.NDArray[np.int64]) -> npt.NDArray[np.float32]:
        return p[:, z[0], yi, xi] * (1 - z[2]) + p[:, z[1], yi, xi] * z[2]

    def along_zy(xi: npt.NDArray[np.int64]) -> npt.NDArray[np.float32]:
        return along_z(y[0], xi) * (1 - y[2]) + along_z(y[1], xi) * y[2]

    return along_zy(x[0]) * (1 - x[2]) + along_zy(x[1]) * x[2]


Box = tuple[slice, slice, slice]


def components_in_box(
    mask: npt.NDArray[np.bool_],
) -> tuple[npt.NDArray[np.int32], int, Box] | None:
    """26-connected components of a 3D ``mask``, labelled only inside the box holding every set
    voxel (nodules fill a small part of a CT): (labels of the box, count, box), None if empty."""
    from scipy import ndimage

    present = [np.flatnonzero(mask.any(axis=other)) for other in ((1, 2), (0, 2), (0, 1))]
    if not len(present[0]):
        return None
    z, y, x = (slice(int(p[0]), int(p[-1]) + 1) for p in present)
    comps, n = ndimage.label(mask[z, y, x], structure=np.ones((3, 3, 3), dtype=bool))
    return comps, int(n), (z, y, x)


def shift_box(local: Sequence[slice], box: Box) -> Box:
    """``local`` (slices within ``box``) as slices of the whole volume."""
    z, y, x = (slice(s.start + b.start, s.stop + b.start) for s, b in zip(local, box, strict=True))
    return z, y, x


@dataclass(frozen=True, slots=True)
class ModelGrid:
    """The resampling between an input volume grid and an isotropic model grid (3 axes)."""

    axes: tuple[AxisGrid, AxisGrid, AxisGrid]

    @classmethod
    def make(cls, shape: tuple[int, ...], spacing: tuple[float, ...], target: float) -> ModelGrid:
        """Grid mapping ``shape``/``spacing`` (slice, row, column) to ``target`` mm voxels."""
        return cls(
            axes=(
                AxisGrid.make(shape[0], spacing[0], target),
                AxisGrid.make(shape[1], spacing[1], target),
                AxisGrid.make(shape[2], spacing[2], target),
            )
        )

    @property
    def shape(self) -> tuple[int, int, int]:
        """Shape of the model grid."""
        return (self.axes[0].size, self.axes[1].size, self.axes[2].size)

    def to_model(self, voxels: torch.Tensor) -> torch.Tensor:
        """Resample ``(C, Z, Y, X)`` input-grid data to the model grid (pool, then linear)."""
        pool = tuple(a.pool for a in self.axes)
        t = voxels
        if any(p > 1 for p in pool):
            n = [a.n_in // a.pool * a.pool for a in self.axes]
            t = F.avg_pool3d(t[:, : n[0], : n[1], : n[2]].unsqueeze(0), pool, pool).squeeze(0)
        for dim, axis in enumerate(self.axes, start=1):
            t = _interp_axis(t, dim, axis.pooled_coords())
        return t

    def labels_to_input(self, probs: torch.Tensor, *, chunk: int = 16) -> npt.NDArray[np.uint8]:
        """Argmax of ``(C, z, y, x)`` model-grid probabilities linearly resampled to the input grid.

        Resamples only where the answer is not already known: each input voxel lies in a model
        cell of up to 2 x 2 x 2 model points, and its probabilities are a convex combination of
        theirs.  "Class c wins" is a set of linear inequalities, so when all corners of the cell
        have the same argmax the voxel has it too; only voxels of mixed cells (near a label
        boundary) are interpolated.  Same result as resampling every class everywhere, at a
        fraction of the cost on a 512 x 512 CT.  Ties go to the lowest class index.
        """
        model_labels = _argmax0(probs).numpy()
        cells = _cell_labels(model_labels)
        idx = [_axis_weights(a) for a in self.axes]
        (z0, z1, wz), (y0, y1, wy), (x0, x1, wx) = idx
        p = probs.numpy()
        # the lower model index is non-decreasing along each axis: repeating cells is indexing
        y_counts = np.bincount(y0, minlength=cells.shape[1])
        x_counts = np.bincount(x0, minlength=cells.shape[2])
        out = np.empty((len(z0), len(y0), len(x0)), dtype=np.uint8)
        for start in range(0, len(z0), chunk):
            sl = slice(start, start + chunk)
            block = np.repeat(np.repeat(cells[z0[sl]], y_counts, axis=1), x_counts, axis=2)
            mixed = np.nonzero(block == _MIXED)
            if len(mixed[0]):
                zi, yi, xi = mixed[0] + start, mixed[1], mixed[2]
                values = _trilinear(
                    p, (z0[zi], z1[zi], wz[zi]), (y0[yi], y1[yi], wy[yi]), (x0[xi], x1[xi], wx[xi])
                )
                block[mixed] = _argmax0(torch.from_numpy(values)).numpy()
            out[sl] = block
        return out

    def values_in_box(self, values: torch.Tensor, box: tuple[slice, slice, slice]) -> torch.Tensor:
        """Resample one ``(z, y, x)`` model-grid map to the input-grid box ``box`` only."""
        t = values.unsqueeze(0)
        for dim, (axis, sl) in enumerate(zip(self.axes, box, strict=True), start=1):
            t = _interp_axis(t, dim, axis.input_coords_in_model()[sl])
        return t.squeeze(0)

    def values_to_input(self, values: torch.Tensor) -> torch.Tensor:
        """Resample one ``(z, y, x)`` model-grid map (e.g. a probability) to the input grid."""
        whole = slice(None)
        return self.values_in_box(values, (whole, whole, whole))

    def model_to_input_index(self, idx: tuple[float, float, float]) -> tuple[float, float, float]:
        """Input-grid index of a model-grid point."""
        return (
            self.axes[0].offset + idx[0] * self.axes[0].step,
            self.axes[1].offset + idx[1] * self.axes[1].step,
            self.axes[2].offset + idx[2] * self.axes[2].step,
        )


def minmax_normalise(cam: torch.Tensor) -> torch.Tensor:
    """Scale each map of an (N, 1, ...) batch to 0..1, highest heat = 1.

    Passed as ``postprocessing`` to ``monai.visualize.GradCAM``: MONAI's default normaliser maps
    the maximum to 0 and the minimum to 1 ("flips magnitudes"), which puts the least heat on
    exactly the evidence Grad-CAM found.
    """
    flat = cam.reshape(cam.shape[0], -1)
    lo = flat.min(dim=1).values.reshape(-1, *([1] * (cam.dim() - 1)))
    hi = flat.max(dim=1).values.reshape(-1, *([1] * (cam.dim() - 1)))
    return (cam - lo) / (hi - lo).clamp_min(1e-12)


def predicted_class_gradcam(
    net: torch.nn.Module, cams: dict[int, Any], x: torch.Tensor, *, layer: str
) -> npt.NDArray[np.float32]:
    """Grad-CAM maps ``(N, H, W)`` in 0..1 of each sample's predicted class.

    ``monai.visualize.GradCAM`` on ``layer``, built once per network and kept in ``cams``
    (keyed by ``id(net)``), with ``minmax_normalise`` as post-processing.  One sample at a time
    with an int class: MONAI indexes ``logits[:, class_idx]``, which mixes the samples of a batch
    when ``class_idx`` is a per-sample tensor.

    Parameters
    ----------
    net
        The classifier (eval mode).
    cams
        Cache of GradCAM objects owned by the caller.
    x
        Preprocessed batch ``(N, C, H, W)``.
    layer
        Name of the target layer.

    Returns
    -------
    numpy.ndarray
        float32 maps on the input's ``(H, W)`` grid.
    """
    from monai.visualize.class_activation_maps import GradCAM

    cam = cams.get(id(net))
    if cam is None:
        cam = cams[id(net)] = GradCAM(
            nn_module=net, target_layers=layer, postprocessing=minmax_normalise
        )
    with torch.inference_mode():
        predicted = net(x).argmax(dim=1).tolist()
    maps = np.empty((x.shape[0], x.shape[2], x.shape[3]), dtype=np.float32)
    with torch.enable_grad():
        for i, cls in enumerate(predicted):
            maps[i] = cam(x[i : i + 1].clone(), class_idx=int(cls))[0, 0].detach().numpy()
    return maps


def voxel_to_patient(
    volume: Volume, index: tuple[float, float, float]
) -> tuple[float, float, float]:
    """Patient coordinates (x, y, z mm) of a (slice, row, column) index (PS3.3 C.7.6.2.1.1).

    ``direction`` rows are the row cosine (along a row: increasing column), the column cosine
    (increasing row) and the slice normal.
    """
    s, r, c = index
    d = np.asarray(volume.direction, dtype=np.float64)
    sp = volume.spacing
    pos = (
        np.asarray(volume.origin, dtype=np.float64)
        + c * sp[2] * d[0]
        + r * sp[1] * d[1]
        + s * sp[0] * d[2]
    )
    return float(pos[0]), float(pos[1]), float(pos[2])
