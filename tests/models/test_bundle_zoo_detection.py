"""Acceptance of issue 16 section 1 (continued from ``test_bundle_zoo.py``): the zoo's lung
nodule detection bundle gives MONAI's answer inside ainode, on the real chest CT cut to its
central 128 x 128 pixels (30 slices); ``ainode predict`` and MONAI's own
``python -m monai.bundle run`` read that same folder.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pydicom
import pytest

from node.imaging import dicom_files, load_volume
from tests.models.bundle_weights import bundle_copy
from tests.models.zoo import (
    CHEST,
    check_all,
    crop_series,
    run_ainode_predict,
    run_checker,
    run_monai_bundle,
    seg_on_grid,
)

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def chest_crop_small(corpus: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """128 x 128 x 30: the 3D ResNet-50 RetinaNet takes ~30 s per run on it here."""
    return crop_series(corpus / CHEST, tmp_path_factory.mktemp("series") / "chest", size=128)


def _monai_boxes(out: Path) -> list[tuple[list[float], float]]:
    """(cccwhd box, score) pairs of the zoo detector's own JSON output (DetectionSaver)."""
    [path] = sorted(out.rglob("*.json"))
    data = json.loads(path.read_text())
    items = data if isinstance(data, list) else [i for v in data.values() for i in v]
    [item] = items
    return list(zip(item["box"], item["label_scores"], strict=True))


def test_lung_nodule_bundle_matches_monai_run(
    chest_crop_small: Path, tmp_path: Path, checker_tools: Path
) -> None:
    bundle = bundle_copy(
        "lung_nodule_ct_detection",
        tmp_path / "models",
        ainode_yaml="classes: [nodule]\nbody_parts: [CHEST]\nbox_segments: true\n",
    )
    ours = run_ainode_predict(bundle, chest_crop_small, tmp_path / "ainode", model=bundle.name)
    theirs = run_monai_bundle(bundle, chest_crop_small, tmp_path / "monai", detection=True)
    assert ours["prediction"]["model"]["task"] == "detection"
    found = ours["prediction"]["detections"]
    expected = sorted(_monai_boxes(tmp_path / "monai"), key=lambda b: -b[1])
    print(f"detection: ainode {len(found)} boxes, MONAI {len(expected)}")
    assert 3 <= len(expected) < 300  # non-trivial: a handful of boxes, not none or the cap
    assert len(found) == len(expected)
    worst_mm, worst_score = 0.0, 0.0
    for f, (box, score) in zip(found, expected, strict=True):
        # MONAI's boxes are cccwhd in world coordinates, LPS (affine_lps_to_ras: true)
        worst_mm = max(worst_mm, float(np.linalg.norm(np.subtract(f["center_xyz_mm"], box[:3]))))
        worst_score = max(worst_score, abs(f["score"] - score))
        assert f["diameter_mm"] == pytest.approx(float(np.mean(box[3:])), abs=0.1)
        assert f["type"] == "Nodule"
    print(f"detection: centres within {worst_mm:.4f} mm, scores within {worst_score:.6f}")
    assert worst_mm <= 2.0 and worst_score <= 0.01
    [sr_file] = sorted((tmp_path / "ainode").glob("*-sr.dcm"))
    [seg_file] = sorted((tmp_path / "ainode").glob("*-seg.dcm"))  # box_segments: true
    check_all(checker_tools, chest_crop_small, seg_file, sr_file, is_sr=False)
    run_checker(checker_tools, "check-sr", "--quiet", sr_file)
    sr = pydicom.dcmread(sr_file)
    assert sr.SOPClassUID == "1.2.840.10008.5.1.4.1.1.88.34"  # Comprehensive 3D SR
    # the SEG of the boxes: on the source grid, each box's centre voxel is in its segment, or
    # in that of a higher-scored box painted over it (segments are numbered by score)
    volume = load_volume(dicom_files([chest_crop_small]))
    labels = seg_on_grid(seg_file, volume)
    seg = pydicom.dcmread(seg_file)
    numbers = {int(s.SegmentNumber): s.TrackingID for s in seg.SegmentSequence}
    assert numbers and set(np.unique(labels).tolist()) - {0} == set(numbers)
    by_id = {f["tracking_id"]: f for f in found}
    for number, tracking_id in numbers.items():
        f = by_id[tracking_id]
        assert 1 <= labels[tuple(f["center_voxel"])] <= number, tracking_id
    referenced = {
        str(item.ReferencedSegmentNumber)
        for item in _content_items(sr)
        if "ReferencedSegmentNumber" in item
    }
    assert referenced == {str(n) for n in numbers}  # the SR's volumetric groups point at them
    print(f"wall: ainode {ours['wall_seconds']:.1f} s, MONAI {theirs['wall_seconds']:.1f} s")


def _content_items(ds: pydicom.Dataset) -> list[pydicom.Dataset]:
    """Every item below ``ds`` (content tree, referenced SOP items), depth first."""
    out = []
    for elem in ds:
        if elem.VR == "SQ":
            for item in elem.value:
                out.append(item)
                out.extend(_content_items(item))
    return out
