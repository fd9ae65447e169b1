"""TEST-ONLY hand-made Predictions over real corpus volumes (lung + nodules, heat-map, text)."""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from node.types import Code, Finding, HeatMap, Prediction, SegmentDescription, Volume

LUNG = SegmentDescription(
    label=1,
    name="Lung",
    category=Code("123037004", "SCT", "Anatomical Structure"),
    property_type=Code("39607008", "SCT", "Lung"),
    color_rgb=(128, 174, 128),
    tracking_id="lungs",
)
NODULE = SegmentDescription(
    label=2,
    name="Lung nodule",
    category=Code("49755003", "SCT", "Morphologically Abnormal Structure"),
    property_type=Code("27925004", "SCT", "Nodule"),
    color_rgb=(255, 128, 0),
    tracking_id="nodule-1",
)
MASS = SegmentDescription(
    label=3,
    name="Lung mass",
    category=Code("49755003", "SCT", "Morphologically Abnormal Structure"),
    property_type=Code("4147007", "SCT", "Mass"),
    color_rgb=(220, 40, 40),
    tracking_id="nodule-2",
)
SITE_LUNG = Code("39607008", "SCT", "Lung")


def lung_mask(volume: Volume) -> np.ndarray:
    """Air inside the body: HU < -400, components not touching the in-plane border."""
    air = volume.voxels < -400
    labels, n = ndimage.label(air)
    border = np.zeros_like(air)
    border[:, 0, :] = border[:, -1, :] = border[:, :, 0] = border[:, :, -1] = True
    outside = set(np.unique(labels[border & air]).tolist())
    keep = [i for i in range(1, n + 1) if i not in outside]
    sizes = ndimage.sum(air, labels, keep)
    big = [k for k, s in zip(keep, sizes, strict=True) if s > 2000]
    return np.isin(labels, big)


def sphere(
    shape: tuple[int, ...],
    center: tuple[int, int, int],
    radius_mm: float,
    spacing: tuple[float, float, float],
) -> np.ndarray:
    """Boolean ellipsoid that is a sphere of ``radius_mm`` in physical space."""
    zz, yy, xx = np.ogrid[: shape[0], : shape[1], : shape[2]]
    d2 = (
        ((zz - center[0]) * spacing[0]) ** 2
        + ((yy - center[1]) * spacing[1]) ** 2
        + ((xx - center[2]) * spacing[2]) ** 2
    )
    return d2 <= radius_mm**2


def _finding(
    volume: Volume, mask: np.ndarray, tracking_id: str, seg: SegmentDescription, probability: float
) -> Finding:
    idx = np.argwhere(mask)
    c = tuple(int(round(v)) for v in idx.mean(axis=0))
    center_xyz = tuple(
        float(v)
        for v in np.asarray(volume.origin)
        + volume.direction[2] * c[0] * volume.spacing[0]
        + volume.direction[1] * c[1] * volume.spacing[1]
        + volume.direction[0] * c[2] * volume.spacing[2]
    )
    voxel_mm3 = float(np.prod(volume.spacing))
    cols = idx[idx[:, 0] == c[0]][:, 2]
    diameter = float((cols.max() - cols.min() + 1) * volume.spacing[2])
    return Finding(
        tracking_id=tracking_id,
        finding_type=seg.property_type,
        center_xyz=center_xyz,  # type: ignore[arg-type]
        center_voxel=c,  # type: ignore[arg-type]
        score=0.9,
        diameter_mm=round(diameter, 1),
        volume_mm3=round(float(mask.sum()) * voxel_mm3, 1),
        malignancy_probability=probability,
        segment_label=seg.label,
        finding_site=SITE_LUNG,
    )


def chest_prediction(volume: Volume, *, n_findings: int = 2, is_demo: bool = True) -> Prediction:
    """Lungs + one or two nodules, findings, Grad-CAM heat-map and report text."""
    lungs = lung_mask(volume)
    label_map = np.zeros(volume.voxels.shape, dtype=np.uint8)
    label_map[lungs] = 1
    centers = [(14, 250, 150), (20, 300, 370)][:n_findings]
    segs = [NODULE, MASS][:n_findings]
    probs = [0.83, 0.27]
    findings = []
    heat = np.zeros(volume.voxels.shape, dtype=np.float32)
    for i, (center, seg) in enumerate(zip(centers, segs, strict=True)):
        ball = sphere(volume.voxels.shape, center, 9.0 + 4 * i, volume.spacing)
        label_map[ball] = seg.label
        findings.append(_finding(volume, ball, seg.tracking_id or "", seg, probs[i]))
        heat = np.maximum(heat, ndimage.gaussian_filter(ball.astype(np.float32), 6))
    heat /= max(float(heat.max()), 1e-6)
    return Prediction(
        model_name="lung-nodule-demo",
        model_version="0.3.1",
        task="segmentation",
        is_demo=is_demo,
        label_map=label_map,
        segments=(LUNG, *segs),
        class_probabilities={"nodule": 0.91, "normal": 0.09},
        findings=tuple(findings),
        heatmaps=(HeatMap(values=heat, label="Grad-CAM nodule"),),
        text="Impression: solid nodule in the right upper lobe (demo model output).",
    )
