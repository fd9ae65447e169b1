"""The JSON summary of a ``Prediction`` (``prediction.json`` of ``ainode predict`` and of jobs)."""

from __future__ import annotations

from typing import Any

from node.types import Finding, NoduleTracking, Prediction, label_counts

__all__ = ["prediction_summary"]


def _tracking(t: NoduleTracking) -> dict[str, Any]:
    return {
        "status": t.status.value,
        "prior_study_uid": t.prior_study_uid,
        "prior_study_date": t.prior_study_date,
        "interval_days": t.interval_days,
        "prior_tracking_id": t.prior_tracking_id,
        "prior_diameter_mm": t.prior_diameter_mm,
        "prior_volume_mm3": t.prior_volume_mm3,
        "diameter_change_percent": _round(t.diameter_change_percent),
        "volume_change_percent": _round(t.volume_change_percent),
        "volume_doubling_days": _round(t.volume_doubling_days),
        "doubling_note": t.doubling_note,
    }


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 1)


def _detection(f: Finding) -> dict[str, Any]:
    out: dict[str, Any] = {
        "tracking_id": f.tracking_id,
        "type": f.finding_type.meaning,
        "center_xyz_mm": list(f.center_xyz),
        "center_voxel": list(f.center_voxel),
        "score": f.score,
        "diameter_mm": f.diameter_mm,
        "volume_mm3": f.volume_mm3,
        "malignancy_probability": f.malignancy_probability,
        "segment_label": f.segment_label,
    }
    if f.tracking_uid is not None:  # carried forward from the prior study
        out["tracking_uid"] = f.tracking_uid
    if f.tracking is not None:
        out["tracking"] = _tracking(f.tracking)
    return out


def prediction_summary(
    prediction: Prediction, spacing: tuple[float, float, float]
) -> dict[str, Any]:
    """The JSON-able content of ``prediction.json`` (without input and timings)."""
    import numpy as np

    voxel_mm3 = float(np.prod(spacing))
    labels = []
    if prediction.label_map is not None:
        counts = label_counts(prediction.label_map)
        names = {s.label: s for s in prediction.segments}
        for value in sorted(set(names) | {int(v) for v in np.flatnonzero(counts)} - {0}):
            seg = names.get(value)
            voxels = int(counts[value]) if value < len(counts) else 0  # a described, empty label
            labels.append(
                {
                    "label": value,
                    "name": seg.name if seg else f"label {value}",
                    "category": seg.category.meaning if seg else None,
                    "type": seg.property_type.meaning if seg else None,
                    "voxels": voxels,
                    "volume_ml": round(voxels * voxel_mm3 / 1000.0, 3),
                }
            )
    out: dict[str, Any] = {
        "model": {
            "name": prediction.model_name,
            "version": prediction.model_version,
            "task": prediction.task,
            "is_demo": prediction.is_demo,
        },
        "device_uid": prediction.device_uid,
        "labels": labels,
        "probabilities": dict(prediction.class_probabilities),
        "detections": [_detection(f) for f in prediction.findings],
        "heatmaps": [
            {"label": h.label, "slice_index": h.slice_index, "shape": list(h.values.shape)}
            for h in prediction.heatmaps
        ],
        "derived_image": None
        if prediction.derived_voxels is None
        else {
            "shape": list(prediction.derived_voxels.shape),
            "dtype": str(prediction.derived_voxels.dtype),
        },
        "text": prediction.text,
    }
    if prediction.prior_note is not None:  # the rule asked for a prior
        out["prior"] = prediction.prior_note
        out["resolved"] = [_detection(f) for f in prediction.resolved]
    reg = prediction.registration
    if reg is not None:
        out["registration"] = {
            "moving_to_fixed": [[float(v) for v in row] for row in reg.moving_to_fixed],
            "matrix_type": reg.matrix_type,
            "moving_series_uid": reg.moving.series_uid if reg.moving is not None else None,
        }
    return out
