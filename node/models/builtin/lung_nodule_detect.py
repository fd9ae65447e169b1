"""``lung-nodule-detect``: nodule candidates from the segmentation model's nodule channel (demo).

Connected components (26-connected) of the nodule label on the input grid become findings: centre
(voxel index and patient mm), long-axis diameter (largest distance between two voxels of the
component, mm), volume (mm^3) and a per-nodule score (the highest nodule probability inside the
component).  Components scoring below the calibrated operating point, or smaller than the minimum
volume, are dropped; the operating point is read from ``assets/lung-nodule-detect/metrics.json``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from scipy import ndimage

from node.models.base import Model, ModelInfo, OutputKind, Task
from node.models.builtin._common import heldout_metrics, load_card, load_metrics, voxel_to_patient
from node.models.builtin.lung_nodule_seg import (
    MIN_SLICES,
    MORPHOLOGICALLY_ABNORMAL,
    NODULE,
    LungNoduleSegmentation,
    SegmentationOutput,
)
from node.types import Code, Finding, Prediction, SegmentDescription, Volume

__all__ = ["LungNoduleDetection", "NoduleCandidate", "find_nodules"]

NAME = "lung-nodule-detect"
VERSION = "1.0.0"
RIGHT_LUNG = Code("3341006", "SCT", "Right lung")
LEFT_LUNG = Code("44029006", "SCT", "Left lung")
MAX_FINDINGS = 50
_DEFAULT_MIN_SCORE = 0.5
_DEFAULT_MIN_VOLUME_MM3 = 15.0


@dataclass(frozen=True, slots=True, eq=False)
class NoduleCandidate:
    """One connected component of the nodule label, measured on the input grid."""

    mask: npt.NDArray[np.bool_]  # input-grid mask restricted to ``bbox``
    bbox: tuple[slice, slice, slice]
    center_index: tuple[float, float, float]
    score: float
    volume_mm3: float
    diameter_mm: float


def _long_axis_mm(points: npt.NDArray[np.float64]) -> float:
    """Largest distance between two points (mm); subsampled above 1500 points."""
    if len(points) < 2:
        return 0.0
    if len(points) > 1500:
        # the extreme points lie on the convex hull; a strided subset of boundary points suffices
        points = points[:: int(np.ceil(len(points) / 1500))]
    diff = points[:, None, :] - points[None, :, :]
    return float(np.sqrt((diff**2).sum(-1)).max())


def find_nodules(
    labels: npt.NDArray[np.uint8],
    seg: SegmentationOutput,
    spacing: tuple[float, float, float],
    *,
    min_volume_mm3: float,
) -> list[NoduleCandidate]:
    """Connected components of label 2 with their measurements and scores (sorted by score).

    Parameters
    ----------
    labels
        Input-grid label map of the segmentation model.
    seg
        The segmentation output (model-grid probabilities and grid mapping) for the scores.
    spacing
        Input voxel spacing (slice, row, column) mm.
    min_volume_mm3
        Components smaller than this are ignored.

    Returns
    -------
    list[NoduleCandidate]
        Candidates, highest score first.
    """
    comps, n = ndimage.label(labels == 2, structure=np.ones((3, 3, 3), dtype=bool))
    if n == 0:
        return []
    voxel_mm3 = float(np.prod(spacing))
    p_nodule = seg.probabilities[2].numpy()
    sp = np.asarray(spacing, dtype=np.float64)
    out: list[NoduleCandidate] = []
    for i, bbox in enumerate(ndimage.find_objects(comps), start=1):
        if bbox is None:
            continue
        mask = comps[bbox] == i
        count = int(mask.sum())
        volume = count * voxel_mm3
        if volume < min_volume_mm3:
            continue
        idx = np.argwhere(mask).astype(np.float64) + np.array([s.start for s in bbox])
        center = idx.mean(axis=0)
        model_idx = [
            np.clip(
                np.rint((idx[:, k] - a.offset) / a.step if a.step else 0 * idx[:, k]), 0, a.size - 1
            )
            for k, a in enumerate(seg.grid.axes)
        ]
        score = float(p_nodule[tuple(m.astype(np.int64) for m in model_idx)].max())
        eroded = ndimage.binary_erosion(mask)
        boundary = np.argwhere(mask & ~eroded).astype(np.float64) * sp
        out.append(
            NoduleCandidate(
                mask=mask,
                bbox=(bbox[0], bbox[1], bbox[2]),
                center_index=(float(center[0]), float(center[1]), float(center[2])),
                score=score,
                volume_mm3=volume,
                diameter_mm=max(_long_axis_mm(boundary), float(sp.min())),
            )
        )
    out.sort(key=lambda c: -c.score)
    return out


class LungNoduleDetection(Model):
    """Lung nodules as findings with centre, diameter, volume and score (demo)."""

    def __init__(self, segmentation: LungNoduleSegmentation | None = None) -> None:
        op = load_metrics(NAME).get("operating_point", {})
        self.min_score = float(op.get("min_score", _DEFAULT_MIN_SCORE))
        self.min_volume_mm3 = float(op.get("min_volume_mm3", _DEFAULT_MIN_VOLUME_MM3))
        self.info = ModelInfo(
            name=NAME,
            version=VERSION,
            task=Task.DETECTION,
            outputs=(OutputKind.FINDINGS, OutputKind.LABEL_MAP),
            modalities=("CT",),
            body_parts=("CHEST",),
            dims=(3,),
            is_demo=True,
            description="Lung-nodule detection: connected components of the demo segmentation",
            card=load_card(NAME),
            metrics=heldout_metrics(NAME),
        )
        self._seg = segmentation or LungNoduleSegmentation()

    def accepts(self, volume: Volume) -> str | None:
        """None for a CT series of at least ``MIN_SLICES`` slices, else the reason."""
        return self._seg.accepts(volume)

    def candidates(self, volume: Volume) -> tuple[list[NoduleCandidate], dict[str, float]]:
        """All candidates above the minimum volume (no score cut) and the timings.

        A series of fewer than ``MIN_SLICES`` slices has no 3D nodules to measure: no candidates.
        """
        if volume.voxels.shape[0] < MIN_SLICES:
            return [], {}
        seg = self._seg.segment(volume)
        t0 = time.perf_counter()
        labels = seg.grid.labels_to_input(seg.probabilities)
        cands = find_nodules(labels, seg, volume.spacing, min_volume_mm3=self.min_volume_mm3)
        timings = dict(seg.timings_seconds)
        timings["postprocess"] = time.perf_counter() - t0
        return cands, timings

    def findings(
        self, volume: Volume
    ) -> tuple[list[Finding], list[NoduleCandidate], dict[str, float]]:
        """Findings at the operating point, the matching candidates and the timings."""
        cands, timings = self.candidates(volume)
        kept = [c for c in cands if c.score >= self.min_score][:MAX_FINDINGS]
        mid_x = voxel_to_patient(volume, tuple(np.asarray(volume.voxels.shape) / 2.0))[0]
        found = []
        for n, c in enumerate(kept, start=1):
            xyz = voxel_to_patient(volume, c.center_index)
            found.append(
                Finding(
                    tracking_id=f"nodule-{n}",
                    finding_type=NODULE,
                    center_xyz=xyz,
                    center_voxel=(
                        int(round(c.center_index[0])),
                        int(round(c.center_index[1])),
                        int(round(c.center_index[2])),
                    ),
                    score=round(c.score, 4),
                    diameter_mm=round(c.diameter_mm, 2),
                    volume_mm3=round(c.volume_mm3, 1),
                    segment_label=n,
                    # DICOM patient +x points to the patient's left (PS3.3 C.7.6.2.1.1)
                    finding_site=LEFT_LUNG if xyz[0] > mid_x else RIGHT_LUNG,
                )
            )
        return found, kept, timings

    def predict(self, volume: Volume) -> Prediction:
        """Detect nodules; the label map holds one label per finding (label n = ``nodule-n``)."""
        found, kept, timings = self.findings(volume)
        label_map = np.zeros(volume.voxels.shape, dtype=np.uint8)
        for n, c in enumerate(kept, start=1):
            label_map[c.bbox][c.mask] = n
        segments = tuple(
            SegmentDescription(
                label=f.segment_label or 0,
                name=f"Nodule {f.segment_label}",
                category=MORPHOLOGICALLY_ABNORMAL,
                property_type=NODULE,
                color_rgb=(216, 101, 79),
                tracking_id=f.tracking_id,
            )
            for f in found
        )
        return Prediction(
            model_name=NAME,
            model_version=VERSION,
            task=Task.DETECTION.value,
            is_demo=True,
            label_map=label_map,
            segments=segments,
            findings=tuple(found),
            timings_seconds=timings,
        )
