"""A ``Prediction`` on disk for the combine job, without pickle.

A model job whose results are combined keeps its ``Prediction`` for the rule's combine job
(``node.jobs.pipeline``).  Unpickling runs code, so the file is an ``.npz`` archive instead: the
arrays (label map, derived voxels, heat-maps) as plain numpy arrays, read back with
``allow_pickle=False``, and everything else as one JSON document.
"""

from __future__ import annotations

import io
import json
from dataclasses import asdict
from typing import Any

import numpy as np

from node.types import Code, Finding, HeatMap, Prediction, SegmentDescription

__all__ = ["dump_prediction", "load_prediction"]


def _code(d: dict[str, Any] | None) -> Code | None:
    return None if d is None else Code(str(d["value"]), str(d["scheme"]), str(d["meaning"]))


def dump_prediction(prediction: Prediction) -> bytes:
    """The ``.npz`` bytes of ``prediction``."""
    arrays: dict[str, Any] = {}
    if prediction.label_map is not None:
        arrays["label_map"] = prediction.label_map
    if prediction.derived_voxels is not None:
        arrays["derived_voxels"] = prediction.derived_voxels
    for i, h in enumerate(prediction.heatmaps):
        arrays[f"heatmap_{i}"] = h.values
    meta = {
        "model_name": prediction.model_name,
        "model_version": prediction.model_version,
        "task": prediction.task,
        "is_demo": prediction.is_demo,
        "segments": [asdict(s) for s in prediction.segments],
        "class_probabilities": dict(prediction.class_probabilities),
        "findings": [asdict(f) for f in prediction.findings],
        "heatmaps": [{"label": h.label, "slice_index": h.slice_index} for h in prediction.heatmaps],
        "text": prediction.text,
        "timings_seconds": dict(prediction.timings_seconds),
        "device_uid": prediction.device_uid,
    }
    arrays["meta"] = np.frombuffer(json.dumps(meta).encode("utf-8"), dtype=np.uint8)
    out = io.BytesIO()
    np.savez(out, **arrays)
    return out.getvalue()


def load_prediction(data: bytes) -> Prediction:
    """The ``Prediction`` of :func:`dump_prediction`'s bytes (no pickle is ever read)."""
    with np.load(io.BytesIO(data), allow_pickle=False) as npz:
        arrays = {k: npz[k] for k in npz.files}
    meta = json.loads(arrays.pop("meta").tobytes().decode("utf-8"))
    segments = tuple(
        SegmentDescription(
            label=int(s["label"]),
            name=str(s["name"]),
            category=_code(s["category"]) or Code("", "", ""),
            property_type=_code(s["property_type"]) or Code("", "", ""),
            color_rgb=(int(s["color_rgb"][0]), int(s["color_rgb"][1]), int(s["color_rgb"][2])),
            tracking_id=s.get("tracking_id"),
        )
        for s in meta["segments"]
    )
    findings = tuple(
        Finding(
            tracking_id=str(f["tracking_id"]),
            finding_type=_code(f["finding_type"]) or Code("", "", ""),
            center_xyz=(
                float(f["center_xyz"][0]),
                float(f["center_xyz"][1]),
                float(f["center_xyz"][2]),
            ),
            center_voxel=(
                int(f["center_voxel"][0]),
                int(f["center_voxel"][1]),
                int(f["center_voxel"][2]),
            ),
            score=float(f["score"]),
            diameter_mm=f.get("diameter_mm"),
            volume_mm3=f.get("volume_mm3"),
            malignancy_probability=f.get("malignancy_probability"),
            segment_label=f.get("segment_label"),
            finding_site=_code(f.get("finding_site")),
        )
        for f in meta["findings"]
    )
    heatmaps = tuple(
        HeatMap(values=arrays[f"heatmap_{i}"], label=str(h["label"]), slice_index=h["slice_index"])
        for i, h in enumerate(meta["heatmaps"])
    )
    return Prediction(
        model_name=str(meta["model_name"]),
        model_version=str(meta["model_version"]),
        task=str(meta["task"]),
        is_demo=bool(meta["is_demo"]),
        label_map=arrays.get("label_map"),
        segments=segments,
        class_probabilities={str(k): float(v) for k, v in meta["class_probabilities"].items()},
        findings=findings,
        heatmaps=heatmaps,
        derived_voxels=arrays.get("derived_voxels"),
        text=meta["text"],
        timings_seconds={str(k): float(v) for k, v in meta["timings_seconds"].items()},
        device_uid=meta["device_uid"],
    )
