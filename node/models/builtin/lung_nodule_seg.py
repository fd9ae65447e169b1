"""``lung-nodule-seg``: MONAI 3D UNet segmenting lungs and lung nodules on chest CT (demo).

The input volume is resampled to 2.5 mm isotropic voxels, normalised (HU clipped to
[-1000, 500]) and run through a small 3D UNet by sliding-window inference; class probabilities are
resampled back to the input grid and the argmax becomes the label map (0 background, 1 lung,
2 nodule).  Nodules are only a few model voxels across, so each nodule is then refined at the
input resolution (``refine_nodules``): its voxels are the solid (soft-tissue) voxels within one
model voxel (2.5 mm) of the network's nodule that the network does not rule out.  Segment codes
come from CID 7150/7151 (PS3.16): "Anatomical Structure"/"Lung" and
"Morphologically Abnormal Structure"/"Nodule".
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, replace

import numpy as np
import numpy.typing as npt
import torch
from monai.inferers.utils import sliding_window_inference
from monai.networks.nets.unet import UNet
from scipy import ndimage

from node.models.base import Model, ModelInfo, OutputKind, Task
from node.models.builtin._common import (
    LazyNet,
    ModelGrid,
    components_in_box,
    heldout_metrics,
    hu_normalise,
    load_card,
    shift_box,
)
from node.types import Code, Prediction, SegmentDescription, Volume

__all__ = [
    "LUNG",
    "NODULE",
    "LungNoduleSegmentation",
    "SegmentationOutput",
    "build_network",
    "refine_nodules",
]

NAME = "lung-nodule-seg"
VERSION = "1.1.0"
MODEL_SPACING_MM = 2.5
#: Fewer slices than this is not a 3D series: ``accepts`` refuses it.  If ``predict`` is called
#: anyway, a single slice is repeated into a 40 mm slab and the middle slice is returned.
MIN_SLICES = 4
_SLAB_MM = 40.0
#: Voxels above this HU form the body outline (skin, fat, table are all denser).
_BODY_HU = -400.0

#: Nodule refinement (``refine_nodules``).  Solid nodules are soft tissue (about -100..+100 HU,
#: calcified up to several hundred) in lung parenchyma (about -900..-700 HU): -400 HU splits them.
SOLID_HU = -400.0
#: Within this distance (mm) of the network's nodule (one model voxel), solid voxels the network
#: gives at least ``GROW_MIN_PROBABILITY`` of nodule join it: keeps vessels passing by out.
GROW_MM = MODEL_SPACING_MM
GROW_MIN_PROBABILITY = 0.1
#: Spicules and lobules thinner than the model grid get no nodule probability at all; solid
#: structures connected to the nodule join it up to this share of its equivalent-sphere radius
#: (at most ``SPICULE_MAX_MM``).
SPICULE_REACH = 0.75
SPICULE_MAX_MM = 10.0
#: A nodule with fewer solid voxels than this share (e.g. a ground-glass nodule) is left as the
#: network drew it.
MIN_SOLID_SHARE = 0.3

#: Largest window run in one piece; bigger model grids use overlapping sliding windows.
MAX_ROI = (112, 160, 160)

ANATOMICAL_STRUCTURE = Code("91723000", "SCT", "Anatomical Structure")
MORPHOLOGICALLY_ABNORMAL = Code("49755003", "SCT", "Morphologically Abnormal Structure")
LUNG = Code("39607008", "SCT", "Lung")
NODULE = Code("27925004", "SCT", "Nodule")

SEGMENTS = (
    SegmentDescription(1, "Lung", ANATOMICAL_STRUCTURE, LUNG, (128, 174, 128), "lung"),
    SegmentDescription(2, "Nodule", MORPHOLOGICALLY_ABNORMAL, NODULE, (216, 101, 79), "nodule"),
)


def build_network() -> torch.nn.Module:
    """The 3D UNet (1 input channel, 3 classes: background, lung, nodule)."""
    return UNet(
        spatial_dims=3,
        in_channels=1,
        out_channels=3,
        channels=(8, 16, 32, 64),
        strides=(2, 2, 2),
        num_res_units=0,
        norm="batch",
    )


def _roi(shape: tuple[int, int, int]) -> tuple[int, int, int]:
    """Window size: the whole grid (rounded up to a multiple of 8) when it fits in MAX_ROI."""
    r = [min(-(-n // 8) * 8, m) for n, m in zip(shape, MAX_ROI, strict=True)]
    return (r[0], r[1], r[2])


def body_mask(hu: npt.NDArray[np.float32]) -> npt.NDArray[np.bool_]:
    """The patient's body on a (z, y, x) HU grid: largest dense component, holes filled per slice.

    Lungs and nodules lie inside it; outside air, air under the table and the table itself do not.
    """
    dense = hu > _BODY_HU
    comps, n = ndimage.label(dense)
    if n == 0:
        return np.zeros(hu.shape, dtype=bool)
    sizes = ndimage.sum(dense, comps, range(1, n + 1))
    body = comps == (int(np.argmax(sizes)) + 1)
    filled = np.stack([ndimage.binary_fill_holes(sl) for sl in body])
    return np.asarray(filled, dtype=bool)


def refine_nodules(
    labels: npt.NDArray[np.uint8],
    hu: npt.NDArray[np.floating],
    spacing: tuple[float, float, float],
    nodule_probability: Callable[[tuple[slice, slice, slice]], npt.NDArray[np.float32]],
) -> npt.NDArray[np.uint8]:
    """Redraw each nodule of an input-grid label map at the input resolution (in place).

    Per 26-connected nodule component C with equivalent-sphere radius r: the new nodule is the
    6-connected set of solid voxels (above ``SOLID_HU``) that touches C's solid voxels, where a
    voxel may join when it is in C, or within ``GROW_MM`` of C with a nodule probability of at
    least ``GROW_MIN_PROBABILITY``, or farther but within ``SPICULE_REACH`` x r of C (at most
    ``SPICULE_MAX_MM``): spicules the 2.5 mm grid cannot see, and the part of a juxtapleural
    nodule the network took for chest wall.  A nodule touching the chest wall or mediastinum
    may therefore take in a rim of adjacent soft tissue (at most that far).  C's voxels left out
    become lung.  A component with less than ``MIN_SOLID_SHARE`` solid
    voxels (ground glass, or not a dense structure at all) is left unchanged.

    Parameters
    ----------
    labels
        Label map on the input grid (0 background, 1 lung, 2 nodule); modified and returned.
    hu
        CT numbers on the same grid.
    spacing
        Voxel spacing (slice, row, column) in mm.
    nodule_probability
        The network's nodule probability resampled to an input-grid box.

    Returns
    -------
    numpy.ndarray
        ``labels``.
    """
    found = components_in_box(labels == 2)
    if found is None:
        return labels
    comps, n, crop = found
    sp = np.asarray(spacing, dtype=np.float64)
    voxel_mm3 = float(np.prod(sp))
    sizes = np.bincount(comps.ravel(), minlength=n + 1)
    for i, local in enumerate(ndimage.find_objects(comps), start=1):
        if local is None:
            continue
        bbox = shift_box(local, crop)
        radius = (3.0 * float(sizes[i]) * voxel_mm3 / (4.0 * math.pi)) ** (1.0 / 3.0)
        reach = min(max(GROW_MM, SPICULE_REACH * radius), SPICULE_MAX_MM)
        pad = [int(math.ceil(reach / max(s, 1e-3))) + 1 for s in spacing]
        box = (
            slice(max(0, bbox[0].start - pad[0]), min(labels.shape[0], bbox[0].stop + pad[0])),
            slice(max(0, bbox[1].start - pad[1]), min(labels.shape[1], bbox[1].stop + pad[1])),
            slice(max(0, bbox[2].start - pad[2]), min(labels.shape[2], bbox[2].stop + pad[2])),
        )
        comp = np.zeros(tuple(b.stop - b.start for b in box), dtype=bool)
        inner = tuple(
            slice(max(b.start, c.start) - b.start, min(b.stop, c.stop) - b.start)
            for b, c in zip(box, crop, strict=True)
        )
        from_crop = tuple(
            slice(max(b.start, c.start) - c.start, min(b.stop, c.stop) - c.start)
            for b, c in zip(box, crop, strict=True)
        )
        comp[inner] = comps[from_crop] == i
        solid = np.asarray(hu[box]) > SOLID_HU
        core = comp & solid
        if core.sum() < MIN_SOLID_SHARE * comp.sum():
            continue
        sub = labels[box]
        dist = ndimage.distance_transform_edt(~comp, sampling=sp)
        near = (dist <= GROW_MM) & (nodule_probability(box) >= GROW_MIN_PROBABILITY)
        far = dist <= reach
        grown, _ = ndimage.label(solid & (comp | near | far))
        keep = np.unique(grown[core])
        nodule = np.isin(grown, keep[keep > 0])
        sub[comp & ~nodule] = 1
        sub[nodule] = 2
    return labels


def _single_slice_slab(volume: Volume) -> tuple[npt.NDArray[np.float32], int]:
    """A single slice repeated into a ~40 mm slab, and the index of the original slice."""
    reps = max(MIN_SLICES, int(np.ceil(_SLAB_MM / max(volume.spacing[0], 0.1))))
    reps += 1 - reps % 2
    slab = np.repeat(np.asarray(volume.voxels, dtype=np.float32), reps, axis=0)
    return slab, reps // 2


@dataclass(frozen=True, slots=True, eq=False)
class SegmentationOutput:
    """Probabilities on the model grid plus the grid mapping (reused by the detector)."""

    probabilities: torch.Tensor  # (3, z, y, x) softmax on the model grid
    grid: ModelGrid
    timings_seconds: dict[str, float]


class LungNoduleSegmentation(Model):
    """Lungs + nodules on chest CT (demo, synthetic training data)."""

    def __init__(self) -> None:
        self.info = ModelInfo(
            name=NAME,
            version=VERSION,
            task=Task.SEGMENTATION,
            outputs=(OutputKind.LABEL_MAP,),
            modalities=("CT",),
            body_parts=("CHEST",),
            dims=(3,),
            min_slices=8,
            max_slice_spacing_mm=10.0,
            orientations=("AXIAL",),
            is_demo=True,
            description="Lung and lung-nodule segmentation, MONAI 3D UNet (demo, synthetic data)",
            card=load_card(NAME),
            metrics=heldout_metrics(NAME),
        )
        self._net = LazyNet(NAME, build_network)

    def accepts(self, volume: Volume) -> str | None:
        """None for a CT series of at least ``MIN_SLICES`` slices, else the reason."""
        reason = super().accepts(volume)
        if reason is None and volume.voxels.shape[0] < MIN_SLICES:
            return (
                f"needs a 3D series of at least {MIN_SLICES} slices, got {volume.voxels.shape[0]}"
            )
        return reason

    def segment(self, volume: Volume) -> SegmentationOutput:
        """Run the network; probabilities stay on the 2.5 mm model grid.

        Lung and nodule probability outside the body outline is moved to background.
        """
        t0 = time.perf_counter()
        net = self._net.get()
        t1 = time.perf_counter()
        vox = torch.from_numpy(np.ascontiguousarray(volume.voxels, dtype=np.float32))
        grid = ModelGrid.make(vox.shape, volume.spacing, MODEL_SPACING_MM)
        hu = grid.to_model(vox.unsqueeze(0))
        body = torch.from_numpy(body_mask(hu[0].numpy()))
        x = hu_normalise(hu).unsqueeze(0)
        t2 = time.perf_counter()
        with torch.inference_mode():
            logits = sliding_window_inference(
                x,
                roi_size=_roi(grid.shape),
                sw_batch_size=1,
                predictor=net,
                overlap=0.25,
                mode="gaussian",
                padding_mode="replicate",  # the body continues beyond the first/last slice
            )
            assert isinstance(logits, torch.Tensor)
            probs = torch.softmax(logits[0], dim=0)
            probs[1:] *= body
            probs[0] = 1.0 - probs[1:].sum(dim=0)
        t3 = time.perf_counter()
        return SegmentationOutput(
            probabilities=probs,
            grid=grid,
            timings_seconds={"load": t1 - t0, "preprocess": t2 - t1, "forward": t3 - t2},
        )

    def input_labels(self, volume: Volume, out: SegmentationOutput) -> npt.NDArray[np.uint8]:
        """The label map on ``volume``'s grid: resampled argmax, nodules refined."""
        labels = out.grid.labels_to_input(out.probabilities)
        nodule = out.probabilities[2]

        def nodule_probability(box: tuple[slice, slice, slice]) -> npt.NDArray[np.float32]:
            return np.asarray(out.grid.values_in_box(nodule, box).numpy())

        return refine_nodules(labels, volume.voxels, volume.spacing, nodule_probability)

    def label_map(self, volume: Volume) -> tuple[npt.NDArray[np.uint8], dict[str, float]]:
        """Label map on the input grid and the timings."""
        middle: int | None = None
        if volume.voxels.shape[0] == 1:
            slab, middle = _single_slice_slab(volume)
            volume = replace(volume, voxels=slab)
        out = self.segment(volume)
        t0 = time.perf_counter()
        labels = self.input_labels(volume, out)
        if middle is not None:
            labels = labels[middle : middle + 1]
        timings = dict(out.timings_seconds)
        timings["postprocess"] = time.perf_counter() - t0
        return labels, timings

    def predict(self, volume: Volume) -> Prediction:
        """Segment lungs and nodules; the label map has the input volume's shape."""
        labels, timings = self.label_map(volume)
        present = set(np.unique(labels).tolist())
        return Prediction(
            model_name=NAME,
            model_version=VERSION,
            task=Task.SEGMENTATION.value,
            is_demo=True,
            label_map=labels,
            segments=tuple(s for s in SEGMENTS if s.label in present),
            timings_seconds=timings,
        )
