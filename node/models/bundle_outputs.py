"""A bundle's postprocessed output -> ``Prediction`` fields, on the source series' grid.

* **segmentation**: the output image (after the bundle's ``Invertd``/``AsDiscreted``) must be on
  the input's grid; if it is not (a bundle without ``Invertd``), it is resampled onto it with
  nearest neighbour from its own affine.  Several channels are argmax-ed, one channel is taken as
  label values.  The (column, row, slice) array becomes the ``Volume``'s (slice, row, column).
* **detection**: boxes (``box``), labels (``label``) and scores (``label_scores``, the RetinaNet
  detector's ``<label_key>_scores``) are read in the box mode and coordinate space that the
  bundle's postprocessing leaves them in (last ``ConvertBoxModed.dst_mode``; world coordinates
  after ``AffineBoxToWorldCoordinated`` (LPS when its ``affine_lps_to_ras`` is true, RAS
  otherwise), else voxel indices of the preprocessed image, mapped through its affine).  Each
  box gives a ``Finding``: centre in LPS mm, the nearest source voxel, diameter = mean of the
  three box extents in mm, score.
* **classification**: a vector of class scores; softmax-ed unless it already is a probability
  vector.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt

from node.errors import ModelError
from node.models.bundle_input import lps_affine
from node.types import Code, Finding, Volume

__all__ = ["BoxSpace", "box_space", "findings", "label_map", "probabilities"]

_RAS_TO_LPS = np.diag([-1.0, -1.0, 1.0, 1.0])


def _numpy(x: Any) -> npt.NDArray[Any]:
    import torch

    if isinstance(x, torch.Tensor):
        return np.asarray(x.detach().cpu().numpy())
    return np.asarray(x)


def label_map(pred: Any, source: Any, volume: Volume) -> npt.NDArray[np.uint8]:
    """The segmentation output ``pred`` as a uint8 label map on ``volume``'s grid.

    Parameters
    ----------
    pred:
        The output image (channel first), a ``MetaTensor`` when the bundle kept its meta data.
    source:
        The input ``MetaTensor`` (node/models/bundle_input.py): the grid to land on.
    volume:
        The source volume.
    """
    import torch
    from monai.data.meta_tensor import MetaTensor

    spatial = tuple(source.shape)
    tensor = pred if isinstance(pred, torch.Tensor) else torch.as_tensor(np.asarray(pred))
    if tensor.ndim == len(spatial):
        tensor = tensor[None]
    if tensor.ndim != len(spatial) + 1:
        raise ModelError(
            f"segmentation output has shape {tuple(tensor.shape)}; expected channel-first "
            f"{len(spatial)}D"
        )
    if tensor.shape[0] > 1:
        tensor = torch.argmax(tensor, dim=0, keepdim=True)
    elif tensor.is_floating_point():
        tensor = torch.round(tensor)
    src_affine = np.asarray(source.affine, dtype=np.float64)
    on_grid = tuple(tensor.shape[1:]) == spatial
    if isinstance(tensor, MetaTensor):
        on_grid = on_grid and np.allclose(np.asarray(tensor.affine), src_affine, atol=1e-3)
    if not on_grid:
        if not isinstance(tensor, MetaTensor):
            raise ModelError(
                f"segmentation output of shape {tuple(tensor.shape[1:])} is not on the input "
                f"grid {spatial} and carries no affine; add Invertd to the bundle's "
                "postprocessing"
            )
        from monai.transforms.spatial.array import SpatialResample

        tensor = SpatialResample(mode="nearest", padding_mode="zeros")(
            tensor.float(), dst_affine=torch.as_tensor(src_affine), spatial_size=spatial
        )
    plain = tensor.as_tensor() if isinstance(tensor, MetaTensor) else tensor
    low, high = torch.aminmax(plain[0])
    if low < 0 or high > 255:
        raise ModelError(f"segmentation labels {low}..{high} do not fit 0..255")
    labels = _numpy(plain[0].to(torch.uint8))
    if volume.is_3d:
        return np.ascontiguousarray(labels.transpose(2, 1, 0))
    return np.ascontiguousarray(labels.T[None])


class BoxSpace:
    """Where a detector's postprocessed boxes live: box mode and coordinate space."""

    def __init__(self, *, mode: str, is_world: bool, is_lps: bool) -> None:
        self.mode = mode
        self.is_world = is_world
        self.is_lps = is_lps


def box_space(postprocessing: Any) -> BoxSpace:
    """Read the box mode and coordinate space off a bundle's instantiated postprocessing."""
    mode, is_world, is_lps = "xyzxyz", False, False
    for t in getattr(postprocessing, "transforms", ()):
        name = type(t).__name__
        if name == "ConvertBoxModed":
            dst = t.converter.dst_mode
            mode = dst if isinstance(dst, str) else getattr(dst, "name", "xyzxyz")
        elif name == "AffineBoxToWorldCoordinated":
            is_world, is_lps = True, bool(t.affine_lps_to_ras)
        elif name == "AffineBoxToImageCoordinated":
            is_world = False
    return BoxSpace(mode=mode, is_world=is_world, is_lps=is_lps)


def _corners_lps(
    boxes: npt.NDArray[np.float64], space: BoxSpace, image_affine: npt.NDArray[np.float64]
) -> npt.NDArray[np.float64]:
    """(N, 2, 3) min/max corners in LPS mm of boxes given in ``space``."""
    import torch
    from monai.data.box_utils import convert_box_mode

    std = _numpy(
        convert_box_mode(torch.as_tensor(boxes), src_mode=space.mode, dst_mode="xyzxyz")
    ).astype(np.float64)
    corners = std.reshape(-1, 2, 3)
    if space.is_world:
        if space.is_lps:
            return corners
        flip = np.array([-1.0, -1.0, 1.0])
        pts = corners * flip
    else:
        homo = np.concatenate([corners, np.ones((*corners.shape[:2], 1))], axis=2)
        pts = (homo @ (_RAS_TO_LPS @ image_affine).T)[..., :3]
    return np.stack([pts.min(axis=1), pts.max(axis=1)], axis=1)


def findings(
    result: dict[str, Any],
    *,
    space: BoxSpace,
    volume: Volume,
    box_key: str = "box",
    label_key: str = "label",
    score_key: str | None = None,
    types: dict[int, Code],
    default_type: Code,
) -> tuple[Finding, ...]:
    """Detector boxes -> ``Finding``s in LPS patient coordinates (``volume``'s frame)."""
    if box_key not in result:
        raise ModelError(
            f"detection output has no '{box_key}' key (keys: {sorted(map(str, result))})"
        )
    boxes = _numpy(result[box_key]).astype(np.float64).reshape(-1, 6)
    labels = _numpy(result.get(label_key, np.zeros(len(boxes)))).astype(np.int64).reshape(-1)
    scores = _numpy(result.get(score_key or f"{label_key}_scores", np.ones(len(boxes))))
    scores = scores.astype(np.float64).reshape(-1)
    image = result.get("image")
    affine = (
        np.asarray(image.affine, dtype=np.float64)
        if image is not None and hasattr(image, "affine")
        else np.eye(4)
    )
    corners = _corners_lps(boxes, space, affine)
    to_voxel = np.linalg.inv(lps_affine(volume))
    shape = volume.voxels.shape
    out = []
    order = np.argsort(-scores, kind="stable")
    for n, i in enumerate(order, start=1):
        lo, hi = corners[i]
        centre = (lo + hi) / 2.0
        col, row, k = (to_voxel @ [*centre, 1.0])[:3]
        voxel = (
            int(np.clip(round(k), 0, shape[0] - 1)),
            int(np.clip(round(row), 0, shape[1] - 1)),
            int(np.clip(round(col), 0, shape[2] - 1)),
        )
        out.append(
            Finding(
                tracking_id=f"box {n}",
                finding_type=types.get(int(labels[i]), default_type),
                center_xyz=(float(centre[0]), float(centre[1]), float(centre[2])),
                center_voxel=voxel,
                score=float(scores[i]),
                diameter_mm=float(np.mean(hi - lo)),
            )
        )
    return tuple(out)


def probabilities(pred: Any, names: list[str]) -> dict[str, float]:
    """A classification output vector -> {class name: probability}."""
    values = _numpy(pred).astype(np.float64).reshape(-1)
    is_probability = values.min() >= 0 and values.max() <= 1 and abs(values.sum() - 1) < 1e-3
    if not is_probability:
        shifted = np.exp(values - values.max())
        values = shifted / shifted.sum()
    if names and len(names) != len(values):
        raise ModelError(f"classification output has {len(values)} values for {len(names)} classes")
    keys = names or [str(i) for i in range(len(values))]
    return {k: float(v) for k, v in zip(keys, values, strict=True)}
