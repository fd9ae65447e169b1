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
  three box extents in mm, score.  With ``box_segments: true`` in the bundle's spec, each box
  also becomes a segment of a label map on the source grid (:func:`box_label_map`): the source
  voxels whose centres lie inside the box (its eight corners mapped to the source grid, so an
  oblique input is handled), highest score on top where boxes overlap, for the optional SEG.
* **classification**: a vector of class scores; softmax-ed unless it already is a probability
  vector.
"""

from __future__ import annotations

import itertools
from dataclasses import replace
from typing import Any

import numpy as np
import numpy.typing as npt

from node.errors import ModelError
from node.models.bundle_input import lps_affine
from node.types import Code, Finding, SegmentDescription, Volume

__all__ = [
    "BoxSpace",
    "box_label_map",
    "box_space",
    "findings",
    "findings_and_boxes",
    "label_map",
    "probabilities",
]

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


#: Index ranges (slice, row, column), inclusive-exclusive, of one box on the source grid.
VoxelBox = tuple[tuple[int, int], tuple[int, int], tuple[int, int]]

_CORNERS = np.array(list(itertools.product((0, 1), repeat=3)))  # (8, 3): lo/hi per axis


def _voxel_boxes(
    boxes: npt.NDArray[np.float64],
    space: BoxSpace,
    image_affine: npt.NDArray[np.float64],
    volume: Volume,
) -> list[VoxelBox]:
    """The source voxels whose centres lie inside each box (at least the voxel nearest to its
    centre), from the box's eight corners mapped onto ``volume``'s grid."""
    import torch
    from monai.data.box_utils import convert_box_mode

    std = _numpy(
        convert_box_mode(torch.as_tensor(boxes), src_mode=space.mode, dst_mode="xyzxyz")
    ).astype(np.float64)
    lo, hi = std[:, None, :3], std[:, None, 3:]
    corners = np.where(_CORNERS[None] == 0, lo, hi)  # (N, 8, 3) in the box's own space
    homo = np.concatenate([corners, np.ones((*corners.shape[:2], 1))], axis=2)
    if space.is_world:
        to_lps = np.eye(4) if space.is_lps else _RAS_TO_LPS
    else:
        to_lps = _RAS_TO_LPS @ image_affine
    to_voxel = np.linalg.inv(lps_affine(volume)) @ to_lps
    ijk = (homo @ to_voxel.T)[..., :3][..., ::-1]  # (column, row, slice) -> (slice, row, column)
    shape = np.asarray(volume.voxels.shape)
    out: list[VoxelBox] = []
    for pts in ijk:
        first = np.ceil(pts.min(axis=0) - 1e-6).astype(int)
        last = np.floor(pts.max(axis=0) + 1e-6).astype(int)
        centre = np.rint(pts.mean(axis=0)).astype(int)
        first, last = np.minimum(first, centre), np.maximum(last, centre)
        first = np.clip(first, 0, shape - 1)
        last = np.clip(last, 0, shape - 1)
        k, r, c = zip(first.tolist(), (last + 1).tolist(), strict=True)
        out.append((k, r, c))
    return out


def box_label_map(
    found: tuple[Finding, ...],
    boxes: list[VoxelBox],
    volume: Volume,
    *,
    categories: dict[str, Code],
    default_category: Code,
) -> tuple[npt.NDArray[np.uint8], tuple[SegmentDescription, ...], tuple[Finding, ...]]:
    """One segment per box (at most 255, highest scores first), painted on the source grid.

    ``found`` and ``boxes`` are in the same (score) order, as :func:`findings_and_boxes` gives
    them.  A higher-scored box is painted over a lower one; a box left with no voxel of its own
    gets no segment.  Returns the label map, the segments and the findings with their
    ``segment_label`` set.
    """
    labels = np.zeros(volume.voxels.shape, dtype=np.uint8)
    n = min(len(found), 255)
    for i in reversed(range(n)):
        (k0, k1), (r0, r1), (c0, c1) = boxes[i]
        labels[k0:k1, r0:r1, c0:c1] = i + 1
    present = set(np.unique(labels).tolist()) - {0}
    segments = []
    out = []
    for i, f in enumerate(found):
        if i + 1 not in present:
            out.append(f)
            continue
        segments.append(
            SegmentDescription(
                label=i + 1,
                name=f"{f.finding_type.meaning} {f.tracking_id}"[:64],
                category=categories.get(f.finding_type.value, default_category),
                property_type=f.finding_type,
                color_rgb=(230, 159, 0),
                tracking_id=f.tracking_id,
            )
        )
        out.append(replace(f, segment_label=i + 1))
    return labels, tuple(segments), tuple(out)


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
    found, _ = findings_and_boxes(
        result,
        space=space,
        volume=volume,
        box_key=box_key,
        label_key=label_key,
        score_key=score_key,
        types=types,
        default_type=default_type,
        with_boxes=False,
    )
    return found


def findings_and_boxes(
    result: dict[str, Any],
    *,
    space: BoxSpace,
    volume: Volume,
    box_key: str = "box",
    label_key: str = "label",
    score_key: str | None = None,
    types: dict[int, Code],
    default_type: Code,
    with_boxes: bool = True,
) -> tuple[tuple[Finding, ...], list[VoxelBox]]:
    """``findings`` (highest score first) and, with ``with_boxes``, each box's source voxels."""
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
    voxel_boxes = _voxel_boxes(boxes[order], space, affine, volume) if with_boxes else []
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
    return tuple(out), voxel_boxes


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
