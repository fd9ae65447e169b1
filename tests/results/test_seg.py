"""DICOM-SEG: read-back equals intent, voxel-exact round trip, independent checkers agree."""

from __future__ import annotations

from pathlib import Path

import highdicom as hd
import numpy as np
import pytest

from node.results.seg import segment_numbers
from tests.results.conftest import CHEST, Case, run_tool


def _label_map_back(case: Case) -> np.ndarray:
    """Parse the written SEG with highdicom and rebuild the prediction's label map."""
    seg = hd.seg.segread(case.files_of("SEG")[0])
    numbers = segment_numbers(case.prediction)
    to_label = np.zeros(max(numbers.values()) + 1, dtype=np.uint8)
    for label, number in numbers.items():
        to_label[number] = label
    refs = case.volume.sources
    if refs[0].frame_number is None:
        arr = seg.get_pixels_by_source_instance(
            source_sop_instance_uids=[r.sop_uid for r in refs],
            combine_segments=True,
            skip_overlap_checks=True,
        )
    else:
        arr = seg.get_pixels_by_source_frame(
            source_sop_instance_uid=refs[0].sop_uid,
            source_frame_numbers=[int(r.frame_number or 0) for r in refs],
            combine_segments=True,
            skip_overlap_checks=True,
        )
    out: np.ndarray = to_label[arr]
    return out


@pytest.mark.parametrize("name", ["chest_case", "single_case", "enhanced_case"])
def test_label_map_round_trip_is_voxel_exact(name: str, request: pytest.FixtureRequest) -> None:
    case: Case = request.getfixturevalue(name)
    assert case.prediction.label_map is not None
    np.testing.assert_array_equal(_label_map_back(case), case.prediction.label_map)


def test_segments_carry_codes_algorithm_colour_and_tracking(chest_case: Case) -> None:
    seg = hd.seg.segread(chest_case.files_of("SEG")[0])
    assert seg.SegmentationType == "BINARY"
    by_name = {s.name: s for s in chest_case.prediction.segments}
    assert [d.segment_label for d in seg.SegmentSequence] == ["Lung", "Lung nodule", "Lung mass"]
    for item in seg.SegmentSequence:
        intended = by_name[item.SegmentLabel]
        desc = seg.get_segment_description(item.SegmentNumber)
        assert desc.segmented_property_category.value == intended.category.value
        assert desc.segmented_property_category.scheme_designator == "SCT"
        assert desc.segmented_property_type.value == intended.property_type.value
        assert desc.algorithm_type.value == "AUTOMATIC"
        assert desc.algorithm_identification is not None
        algo = desc.algorithm_identification[0]
        assert algo.AlgorithmName == "lung-nodule-demo"
        assert algo.AlgorithmVersion == "0.3.1"
        assert algo.AlgorithmFamilyCodeSequence[0].CodeValue  # CID 7162
        assert desc.tracking_id == intended.tracking_id
        assert (desc.tracking_uid or "").startswith("2.25.")
        rgb = hd.color.CIELabColor(
            *[
                v / 65535 * s - o
                for v, s, o in zip(
                    item.RecommendedDisplayCIELabValue, (100, 255, 255), (0, 128, 128), strict=True
                )
            ]
        ).to_rgb()
        assert max(abs(a - b) for a, b in zip(rgb, intended.color_rgb, strict=True)) <= 2


def test_empty_frames_are_omitted_and_frames_reference_their_source(chest_case: Case) -> None:
    seg = chest_case.of("SEG")[0]
    lm = chest_case.prediction.label_map
    assert lm is not None
    expected = sum(
        int((lm[k] == s.label).any())
        for k in range(lm.shape[0])
        for s in chest_case.prediction.segments
    )
    assert seg.NumberOfFrames == expected < lm.shape[0] * 3
    refs = {r.sop_uid for r in chest_case.volume.sources}
    for fg in seg.PerFrameFunctionalGroupsSequence:
        src = fg.DerivationImageSequence[0].SourceImageSequence[0]
        assert src.ReferencedSOPInstanceUID in refs


def test_header_identity_and_naming(chest_case: Case, single_case: Case) -> None:
    seg = chest_case.of("SEG")[0]
    assert seg.Manufacturer == "ainode"
    assert seg.ManufacturerModelName == "lung-nodule-demo"
    assert "lung-nodule-demo 0.3.1" in list(seg.SoftwareVersions)
    assert seg.SeriesDescription == "lung-nodule-demo 0.3.1 SEG DEMO"
    assert "DEMO MODEL" in seg.ImageComments
    assert seg.BodyPartExamined == "CHEST"
    assert "Laterality" not in seg  # the source has none; never invent one
    assert (str(seg.ContentDate), str(seg.ContentTime)) == ("20261125", "120000")
    plain = single_case.of("SEG")[0]
    assert "DEMO" not in plain.SeriesDescription and "DEMO" not in plain.ImageComments
    assert len(plain.SegmentSequence) == 1


def test_enhanced_source_frames_are_referenced_by_number(enhanced_case: Case) -> None:
    seg = enhanced_case.of("SEG")[0]
    frames = set()
    for fg in seg.PerFrameFunctionalGroupsSequence:
        src = fg.DerivationImageSequence[0].SourceImageSequence[0]
        assert src.ReferencedSOPInstanceUID == enhanced_case.volume.sources[0].sop_uid
        frames.add(int(src.ReferencedFrameNumber))
    assert frames and frames <= set(range(1, 7))


def test_checkers_accept_every_seg(
    checker_tools: Path, corpus: Path, chest_case: Case, single_case: Case, enhanced_case: Case
) -> None:
    chest = chest_case.files_of("SEG") + single_case.files_of("SEG")
    enhanced = enhanced_case.files_of("SEG")
    out = run_tool(checker_tools, "check-dicom", *chest, *enhanced)
    assert "0 error(s)" in out.splitlines()[-1]
    run_tool(checker_tools, "check-dcmjs", "--strict", "--sources", corpus / CHEST, *chest)
    run_tool(
        checker_tools,
        "check-dcmjs",
        "--strict",
        "--sources",
        enhanced_case.sources[0].parent,
        *enhanced,
    )
    run_tool(checker_tools, "check-refs", "--sources", corpus / CHEST, *chest)
    run_tool(checker_tools, "check-refs", "--sources", enhanced_case.sources[0].parent, *enhanced)
