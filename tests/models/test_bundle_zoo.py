"""Acceptance of issue 16 section 1: zoo bundles give MONAI's answer inside ainode.

The zoo's own configs (tests/models/bundles, with licence and provenance) and generated weights
(tests/models/bundle_weights.py) run twice on the same cropped real chest CT: ``ainode predict``
and MONAI's own ``python -m monai.bundle run``.  The series is cut to its central 256 x 256
pixels (30 slices, 8 mm) to keep CPU time practical; both sides read that same folder.
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
    crop_series,
    dice,
    monai_label_map,
    run_ainode_predict,
    run_monai_bundle,
    seg_on_grid,
)

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def chest_crop(corpus: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return crop_series(corpus / CHEST, tmp_path_factory.mktemp("series") / "chest", size=256)


@pytest.fixture(scope="module")
def chest_crop_small(corpus: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """128 x 128 x 30: the 3D ResNet-50 RetinaNet takes ~30 s per run on it here."""
    return crop_series(corpus / CHEST, tmp_path_factory.mktemp("series") / "chest", size=128)


def _tool(checker_tools: Path, name: str, *args: object) -> str:
    import subprocess

    proc = subprocess.run(
        [str(checker_tools / name), *map(str, args)], capture_output=True, text=True, timeout=240
    )
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, f"{name}: {out[-6000:]}"
    return out


def _check_all(checker_tools: Path, sources: Path, *files: Path, is_sr: bool = False) -> None:
    """dciodvfy (check-dicom), references to the sources, dcmjs (what OHIF uses), SR tools."""
    out = _tool(checker_tools, "check-dicom", *files)
    assert "0 error(s)" in out.splitlines()[-1]
    _tool(checker_tools, "check-refs", "--sources", sources, *files)
    _tool(checker_tools, "check-dcmjs", "--strict", "--sources", sources, *files)
    if is_sr:
        _tool(checker_tools, "check-sr", "--quiet", *files)


def _monai_boxes(out: Path) -> list[tuple[list[float], float]]:
    """(cccwhd box, score) pairs of the zoo detector's own JSON output (DetectionSaver)."""
    [path] = sorted(out.rglob("*.json"))
    data = json.loads(path.read_text())
    items = data if isinstance(data, list) else [i for v in data.values() for i in v]
    [item] = items
    return list(zip(item["box"], item["label_scores"], strict=True))


def test_spleen_bundle_matches_monai_run(
    chest_crop: Path, tmp_path: Path, checker_tools: Path, run_cache: Path
) -> None:
    bundle = bundle_copy("spleen_ct_segmentation", tmp_path / "models", cache=run_cache)
    ours = run_ainode_predict(bundle, chest_crop, tmp_path / "ainode", model=bundle.name)
    theirs = run_monai_bundle(bundle, chest_crop, tmp_path / "monai", detection=False)
    volume = load_volume(dicom_files([chest_crop]))
    [nifti] = sorted((tmp_path / "monai").rglob("*.nii.gz"))
    expected = monai_label_map(nifti, volume)
    [seg_file] = sorted((tmp_path / "ainode").glob("*-seg.dcm"))
    got = seg_on_grid(seg_file, volume)
    marked = int((expected == 1).sum())
    # non-trivial answer: the generated weights mark soft tissue, not nothing or everything
    assert 0.02 * expected.size < marked < 0.6 * expected.size, marked
    score = dice(got == 1, expected == 1)
    print(f"spleen: Dice {score:.5f}, MONAI {marked} voxels, ainode {int((got == 1).sum())}")
    assert score >= 0.99
    assert ours["prediction"]["model"]["version"] == "0.5.9"
    _check_all(checker_tools, chest_crop, seg_file)
    # one segment per channel_def entry, SNOMED CT codes, the bundle as the algorithm
    seg = pydicom.dcmread(seg_file)
    [segment] = seg.SegmentSequence
    assert segment.SegmentLabel == "spleen"
    assert segment.SegmentedPropertyTypeCodeSequence[0].CodeValue == "78961009"
    assert segment.SegmentedPropertyCategoryCodeSequence[0].CodeValue == "91723000"
    algorithm = segment.SegmentationAlgorithmIdentificationSequence[0]
    assert (algorithm.AlgorithmName, algorithm.AlgorithmVersion) == (bundle.name, "0.5.9")
    print(f"wall: ainode {ours['wall_seconds']:.1f} s, MONAI {theirs['wall_seconds']:.1f} s")


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
    _check_all(checker_tools, chest_crop_small, seg_file, sr_file, is_sr=False)
    _tool(checker_tools, "check-sr", "--quiet", sr_file)
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
