"""A combined rule's model job keeps its Prediction as .npz + JSON, never a pickle."""

from __future__ import annotations

import io
import zipfile

import numpy as np

from node.jobs.prediction_file import dump_prediction, load_prediction
from node.types import Code, Finding, HeatMap, Prediction, SegmentDescription

NODULE = Code("27925004", "SCT", "Nodule")


def _prediction() -> Prediction:
    rng = np.random.default_rng(1)
    labels = (rng.random((4, 8, 8)) > 0.7).astype(np.uint8)
    return Prediction(
        model_name="lung-nodule-detect",
        model_version="1.2.0",
        task="detection",
        is_demo=True,
        label_map=labels,
        segments=(SegmentDescription(1, "Nodule 1", NODULE, NODULE, (1, 2, 3), "nodule-1"),),
        class_probabilities={"malignant": 0.25, "benign": 0.75},
        findings=(
            Finding(
                tracking_id="nodule-1",
                finding_type=NODULE,
                center_xyz=(1.5, -2.25, 30.0),
                center_voxel=(2, 3, 4),
                score=0.9,
                diameter_mm=6.5,
                volume_mm3=120.0,
                malignancy_probability=0.3,
                segment_label=1,
                finding_site=Code("44029006", "SCT", "Left lung"),
            ),
        ),
        heatmaps=(HeatMap(rng.random((4, 8, 8)).astype(np.float32), "attention", 2),),
        derived_voxels=rng.normal(size=(4, 8, 8)).astype(np.float32),
        text="one nodule",
        timings_seconds={"model": 1.25},
        device_uid="2.25.1234",
    )


def test_round_trip_keeps_every_field() -> None:
    before = _prediction()
    after = load_prediction(dump_prediction(before))
    for name in ("label_map", "derived_voxels"):
        np.testing.assert_array_equal(getattr(after, name), getattr(before, name))
        assert getattr(after, name).dtype == getattr(before, name).dtype
    np.testing.assert_array_equal(after.heatmaps[0].values, before.heatmaps[0].values)
    assert (after.heatmaps[0].label, after.heatmaps[0].slice_index) == ("attention", 2)
    assert after.segments == before.segments and after.findings == before.findings
    for name in ("model_name", "model_version", "task", "is_demo", "text", "device_uid"):
        assert getattr(after, name) == getattr(before, name), name
    assert dict(after.class_probabilities) == dict(before.class_probabilities)
    assert dict(after.timings_seconds) == dict(before.timings_seconds)


def test_the_file_holds_no_pickle() -> None:
    data = dump_prediction(_prediction())
    with zipfile.ZipFile(io.BytesIO(data)) as z:
        for name in z.namelist():  # every member is a plain .npy array, object dtype refused
            np.load(io.BytesIO(z.read(name)), allow_pickle=False)
