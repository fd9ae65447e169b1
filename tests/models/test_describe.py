"""ModelInfo travels from the describing child process to the router as JSON, unchanged."""

from __future__ import annotations

import json
from pathlib import Path

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


def test_cached_description_is_used_while_nothing_changed(tmp_path: Path) -> None:
    from node.models.describe import _cache_key, describe_models

    info = ModelInfo(name="m", version="1", task=Task.SEGMENTATION, outputs=())
    cache = tmp_path / "described.json"
    spec = tmp_path / "m.yaml"
    spec.write_text("name: m\n")
    key = _cache_key([spec], "cpu")
    cache.write_text(json.dumps({"key": key, "models": [info_to_json(info)]}))
    # answered from the cache: no child process (it would find no model 'm' at all)
    assert describe_models([spec], device="cpu", cache=cache) == {"m": info}
    spec.write_text("name: m\nversion: '2'\n")  # the model changed: the key changes
    assert _cache_key([spec], "cpu") != key
