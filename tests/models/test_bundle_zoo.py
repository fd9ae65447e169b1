"""Acceptance of issue 16 section 1: zoo bundles give MONAI's answer inside ainode.

The zoo's own configs (tests/models/bundles, with licence and provenance) and generated weights
(tests/models/bundle_weights.py) run twice on the same cropped real chest CT: ``ainode predict``
and MONAI's own ``python -m monai.bundle run``.  The series is cut to its central 256 x 256
pixels (30 slices, 8 mm) to keep CPU time practical; both sides read that same folder.
The spleen segmentation bundle here; the lung nodule detection bundle in
``test_bundle_zoo_detection.py`` (its own file, so that pytest-xdist runs both at once).
"""

from __future__ import annotations

from pathlib import Path

import pydicom
import pytest

from node.imaging import dicom_files, load_volume
from tests.models.bundle_weights import bundle_copy
from tests.models.zoo import (
    CHEST,
    check_all,
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
    check_all(checker_tools, chest_crop, seg_file)
    # one segment per channel_def entry, SNOMED CT codes, the bundle as the algorithm
    seg = pydicom.dcmread(seg_file)
    [segment] = seg.SegmentSequence
    assert segment.SegmentLabel == "spleen"
    assert segment.SegmentedPropertyTypeCodeSequence[0].CodeValue == "78961009"
    assert segment.SegmentedPropertyCategoryCodeSequence[0].CodeValue == "91723000"
    algorithm = segment.SegmentationAlgorithmIdentificationSequence[0]
    assert (algorithm.AlgorithmName, algorithm.AlgorithmVersion) == (bundle.name, "0.5.9")
    print(f"wall: ainode {ours['wall_seconds']:.1f} s, MONAI {theirs['wall_seconds']:.1f} s")
