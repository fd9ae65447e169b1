"""ModelInfo travels from the describing child process to the router as JSON, unchanged."""

from __future__ import annotations

import json

from node.models.base import ModelInfo, OutputKind, Task
from node.models.describe import info_from_json, info_to_json


def test_model_info_json_round_trip() -> None:
    info = ModelInfo(
        name="brain-seg",
        version="2",
        task=Task.SEGMENTATION,
        outputs=(OutputKind.LABEL_MAP, OutputKind.FINDINGS),
        modalities=("MR",),
        dims=(3,),
        min_slices=16,
        max_slices=400,
        max_slice_spacing_mm=3.0,
        orientations=("AXIAL", "CORONAL"),
        metrics={"dice": 0.91},
    )
    back = info_from_json(json.loads(json.dumps(info_to_json(info))))
    assert back == info
    assert info_from_json({**info_to_json(info), "added_by_a_newer_node": 1}) == info
