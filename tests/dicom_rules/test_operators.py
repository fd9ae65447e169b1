"""Each operator and combinator, on present, absent, empty, multi-valued and odd values."""

from __future__ import annotations

from typing import Any

import pytest

import dicom_rules
from dicom_rules import Status
from tests.dicom_rules.headers import make, series


def verdict(condition: str, header: dict[str, Any], count: int = 1) -> tuple[bool, str]:
    """Evaluate one condition (YAML flow text) on one header: (matched, reason)."""
    rules = dicom_rules.parse(
        f"version: 1\nrules:\n  - name: r\n    when: {condition}\n    then: {{model: m}}\n"
    )
    expl = dicom_rules.explain(rules, [dicom_rules.SeriesInput("1.2", header, count)])
    v = expl.series[0].verdict("r")
    return v.status is Status.MATCHED, v.reason


CT = make(
    Modality="CT",
    BodyPartExamined="CHEST",
    SliceThickness=1.25,
    ImageType=["ORIGINAL", "PRIMARY", "AXIAL"],
    SeriesDescription="  Thorax Lung 1.0 B70f ",
    ConvolutionKernel="B70f",
    InstanceNumber=12,
)


@pytest.mark.parametrize(
    ("condition", "expected"),
    [
        ("{Modality: {equals: CT}}", True),
        ("{Modality: {equals: ct}}", True),  # case-insensitive by default
        ("{Modality: {equals: ' CT '}}", True),  # trimmed
        ("{Modality: {equals: ct, case_sensitive: true}}", False),
        ("{Modality: {equals: MR}}", False),
        ("{Modality: CT}", True),  # shorthand equals
        ("{Modality: [MR, CT]}", True),  # shorthand in
        ("{Modality: {in: [MR, PT]}}", False),
        ("{Modality: {not_in: [MR, PT]}}", True),
        ("{Modality: {not_in: [CT]}}", False),
        ("{ImageType: {in: [AXIAL]}}", True),  # multi-valued: any value
        ("{ImageType: {not_in: [LOCALIZER]}}", True),
        ("{ImageType: {not_in: [LOCALIZER, AXIAL]}}", False),  # no value may be in the set
        ("{ImageType: {equals: PRIMARY}}", True),
        ("{SeriesDescription: {contains: lung}}", True),
        ("{SeriesDescription: {contains: Lung, case_sensitive: true}}", True),
        ("{SeriesDescription: {contains: LUNG, case_sensitive: true}}", False),
        ("{SeriesDescription: {startswith: thorax}}", True),
        ("{SeriesDescription: {startswith: lung}}", False),
        ("{ConvolutionKernel: {matches: 'B[67]0f'}}", True),
        ("{ConvolutionKernel: {matches: 'B[67]0'}}", False),  # full match only
        ("{ConvolutionKernel: {matches: 'b70F'}}", True),
        ("{ConvolutionKernel: {matches: 'b70F', case_sensitive: true}}", False),
        ("{SeriesDescription: {matches: 'thorax.*b70f'}}", True),  # value is trimmed
        ("{SliceThickness: {lt: 2}}", True),
        ("{SliceThickness: {lt: 1.25}}", False),
        ("{SliceThickness: {le: 1.25}}", True),
        ("{SliceThickness: {gt: 1.25}}", False),
        ("{SliceThickness: {ge: 1.25}}", True),
        ("{SliceThickness: {between: [1, 1.25]}}", True),
        ("{SliceThickness: {between: [1.3, 5]}}", False),
        ("{SliceThickness: {equals: 1.25}}", True),
        ("{SliceThickness: {equals: '1.250'}}", True),  # numeric string vs number
        ("{InstanceNumber: {in: [11, 12]}}", True),
        ("{Modality: {exists: true}}", True),
        ("{Modality: {missing: true}}", False),
        ("{BodyPartExamined: {exists: false}}", False),
        ("{PatientWeight: {missing: true}}", True),
        ("{PatientWeight: {exists: true}}", False),
        ("{instance_count: {ge: 100}}", True),
        ("{instance_count: {lt: 100}}", False),
        ("{body_part: {equals: chest}}", True),
        ("{orientation: {equals: AXIAL}}", False),  # no ImageOrientationPatient
        ("{'0008,0060': {equals: CT}}", True),
        ("{'(0008,0060)': {equals: CT}}", True),
        ("{'00080060': {equals: CT}}", True),
    ],
)
def test_operator(condition: str, expected: bool) -> None:
    matched, reason = verdict(condition, CT, count=120)
    assert matched is expected, reason


@pytest.mark.parametrize(
    "condition",
    [
        "{Manufacturer: {equals: GE}}",
        "{Manufacturer: {in: [GE]}}",
        "{Manufacturer: {not_in: [GE]}}",  # a comparison on an absent tag is false
        "{Manufacturer: {matches: '.*'}}",
        "{Manufacturer: {contains: ''}}",
        "{Manufacturer: {startswith: ''}}",
        "{PatientWeight: {lt: 1000}}",
        "{PatientWeight: {between: [0, 1000]}}",
        "{Manufacturer: {exists: true}}",
    ],
)
def test_absent_tag_is_false_and_says_so(condition: str) -> None:
    matched, reason = verdict(condition, CT)
    assert not matched
    assert reason.endswith("tag absent")


def test_empty_tag_is_false_and_missing() -> None:
    header = make(Modality="CT", BodyPartExamined=None)
    matched, reason = verdict("{BodyPartExamined: {equals: CHEST}}", header)
    assert not matched and reason.endswith("tag present but empty")
    assert verdict("{BodyPartExamined: {missing: true}}", header)[0]
    assert not verdict("{BodyPartExamined: {exists: true}}", header)[0]


def test_reason_shows_the_value_seen() -> None:
    _, reason = verdict("{Modality: {equals: MR}}", CT)
    assert reason == "Modality equals 'MR': seen 'CT'"
    _, reason = verdict("{SliceThickness: {lt: 3}}", make(SliceThickness="abc"))
    assert reason == "SliceThickness lt 3: seen 'abc' (not a number)"


def test_non_numeric_value_never_satisfies_numeric_ops() -> None:
    header = make(SliceThickness="thin")
    header["00180050"]["vr"] = "DS"
    matched, reason = verdict("{SliceThickness: {lt: 5}}", header)
    assert not matched and "not a number" in reason


@pytest.mark.parametrize(
    ("condition", "expected"),
    [
        ("{all: [{Modality: CT}, {BodyPartExamined: CHEST}]}", True),
        ("{all: [{Modality: CT}, {BodyPartExamined: HEAD}]}", False),
        ("{all: []}", True),
        ("{any: [{Modality: MR}, {BodyPartExamined: CHEST}]}", True),
        ("{any: [{Modality: MR}, {BodyPartExamined: HEAD}]}", False),
        ("{any: []}", False),
        ("{not: {Modality: MR}}", True),
        ("{not: {Modality: CT}}", False),
        ("{not: {Manufacturer: GE}}", True),  # not of a comparison on an absent tag
        ("{not: {not: {Modality: CT}}}", True),
        ("{Modality: CT, BodyPartExamined: CHEST}", True),  # several keys = all
        ("{Modality: CT, BodyPartExamined: HEAD}", False),
        ("{SliceThickness: {gt: 1, lt: 2}}", True),  # several operators = all
        ("{SliceThickness: {gt: 1, lt: 1.2}}", False),
    ],
)
def test_combinators(condition: str, expected: bool) -> None:
    matched, reason = verdict(condition, CT)
    assert matched is expected, reason


def test_combinator_reasons() -> None:
    _, reason = verdict("{any: [{Modality: MR}, {Manufacturer: GE}]}", CT)
    assert (
        reason == "none of (Modality equals 'MR': seen 'CT'; Manufacturer equals 'GE': tag absent)"
    )
    _, reason = verdict("{not: {Modality: CT}}", CT)
    assert reason == "not: Modality equals 'CT' is true (seen 'CT')"
    _, reason = verdict("{all: [{Modality: CT}, {BodyPartExamined: HEAD}]}", CT)
    assert reason == "BodyPartExamined equals 'HEAD': seen 'CHEST'"


ENHANCED = make(
    Modality="MR",
    SharedFunctionalGroupsSequence=[
        {
            "FrameAnatomySequence": [
                {
                    "AnatomicRegionSequence": [
                        {
                            "CodeValue": "T-A0100",
                            "CodingSchemeDesignator": "SRT",
                            "CodeMeaning": "Brain",
                        }
                    ],
                    "FrameLaterality": "U",
                }
            ],
            "PlaneOrientationSequence": [{"ImageOrientationPatient": [1, 0, 0, 0, 0, -1]}],
        }
    ],
)


def test_nested_sequence_path() -> None:
    path = "SharedFunctionalGroupsSequence.FrameAnatomySequence.AnatomicRegionSequence.CodeMeaning"
    assert verdict(f"{{{path}: {{equals: brain}}}}", ENHANCED)[0]
    assert not verdict(f"{{{path}: {{equals: lung}}}}", ENHANCED)[0]
    assert verdict("{'5200,9229.0020,9071.0008,2218.0008,0100': T-A0100}", ENHANCED)[0]
    matched, reason = verdict(f"{{{path}: {{equals: brain}}}}", CT)
    assert not matched and reason.endswith("tag absent")
    assert verdict("{orientation: {equals: CORONAL}}", ENHANCED)[0]


def test_sequence_in_any_item() -> None:
    header = make(
        ReferencedImageSequence=[{"ReferencedSOPClassUID": "1.2"}, {"ReferencedSOPClassUID": "1.3"}]
    )
    assert verdict("{ReferencedImageSequence.ReferencedSOPClassUID: {equals: '1.3'}}", header)[0]
    assert verdict("{ReferencedImageSequence: {exists: true}}", header)[0]


def _private_header(creator: str = "GEMS_ACQU_01", block: int = 0x10) -> dict[str, Any]:
    return {
        "00080060": {"vr": "CS", "Value": ["CT"]},
        f"001900{block:02X}": {"vr": "LO", "Value": [creator]},
        f"0019{block:02X}0C": {"vr": "DS", "Value": [0.5]},
        f"0019{block:02X}0D": {"vr": "LO", "Value": ["SCANNER X"]},
    }


@pytest.mark.parametrize("block", [0x10, 0x11, 0x42])
def test_private_tag_by_creator_in_any_block(block: int) -> None:
    header = _private_header(block=block)
    assert verdict("{'0019[GEMS_ACQU_01]0C': {lt: 1}}", header)[0]
    assert verdict("{'0019[GEMS_ACQU_01]xx0D': {contains: scanner}}", header)[0]
    assert verdict("{'0019[GEMS_ACQU_01]100D': {contains: scanner}}", header)[0]
    matched, reason = verdict("{'0019[OTHER_CREATOR]0C': {lt: 1}}", header)
    assert not matched and reason.endswith("tag absent")


def test_private_creator_matches_case_insensitively_as_fallback() -> None:
    header = _private_header(creator=" gems_acqu_01 ")
    assert verdict("{'0019[GEMS_ACQU_01]0C': {lt: 1}}", header)[0]


def test_private_tag_explicit_mapping_form() -> None:
    rules = dicom_rules.parse(
        """
version: 1
rules:
  - name: r
    when:
      tag: {private: {group: "0019", creator: GEMS_ACQU_01, element: "0x0c"}}
      lt: 1
    then: {model: m}
"""
    )
    assert [
        d.rule
        for d in dicom_rules.route(rules, [dicom_rules.SeriesInput("1", _private_header(), 1)])
    ] == ["r"]


def test_person_name_values_compare_as_text() -> None:
    header = make(ReferringPhysicianName="Doe^Jane")
    assert verdict("{ReferringPhysicianName: {startswith: doe}}", header)[0]


def test_series_input_accepts_objects_and_mappings() -> None:
    rules = dicom_rules.parse(
        "version: 1\nrules:\n  - name: r\n    when: {Modality: CT}\n    then: {model: m}\n"
    )
    as_mapping = {"series_uid": "9", "header": make(Modality="CT"), "instance_count": 3}
    assert dicom_rules.route(rules, [as_mapping])[0].series_uids == ("9",)
    assert dicom_rules.route(rules, [series("8", Modality="CT")])[0].series_uids == ("8",)


def test_pathological_pattern_runs_in_linear_time() -> None:
    import time

    header = make(SeriesDescription="a" * 4000 + "!")
    start = time.perf_counter()
    matched, _ = verdict("{SeriesDescription: {matches: '(a+)+$'}}", header)
    matched2, _ = verdict("{SeriesDescription: {matches: '(a|aa)*c'}}", header)
    assert not matched and not matched2
    # a backtracking engine needs ~2**4000 steps here; RE2 answers at once
    assert time.perf_counter() - start < 5


@pytest.mark.parametrize(
    ("iop", "expected"),
    [
        ([1, 0, 0, 0, 1, 0], "AXIAL"),
        ([1, 0, 0, 0, 0, -1], "CORONAL"),
        ([0, 1, 0, 0, 0, -1], "SAGITTAL"),
        ([1, 0, 0, 0, 0.7071, 0.7071], "OBLIQUE"),
        (["1", "0", "0", "0", "1", "0"], "AXIAL"),  # DS strings
        ([1, 0, 0], None),  # too few values
        ([1, 0, 0, 1, 0, 0], None),  # parallel vectors: no normal
        (["x", 0, 0, 0, 1, 0], None),
    ],
)
def test_orientation(iop: list[Any], expected: str | None) -> None:
    from dicom_rules.conditions import orientation_of

    header = make(ImageOrientationPatient=iop)
    assert orientation_of(header) == expected


def test_render_is_canonical_long_form() -> None:
    rules = dicom_rules.parse(
        "version: 1\nrules:\n  - {name: r, when: {Modality: [CT, MR], '0018,0015': CHEST}, "
        "then: ignore}\n"
    )
    text = dicom_rules.render(rules)
    assert "Modality:\n" in text and "in:" in text and "BodyPartExamined:" in text
    assert "then: ignore" in text
    assert dicom_rules.parse(text) == rules


@pytest.mark.parametrize(
    ("group", "element"),
    [
        ('"0019"', '"0x0c"'),
        ("0019", "0x0c"),
        ("0x0019", "0x0C"),
        ('"0x19"', '"0C"'),
        ("19", '"xx0c"'),
    ],
)
def test_private_explicit_numbers_in_any_spelling(group: str, element: str) -> None:
    rules = dicom_rules.parse(
        "version: 1\nrules:\n  - name: r\n    when:\n"
        f"      tag: {{private: {{group: {group}, creator: GEMS_ACQU_01, element: {element}}}}}\n"
        "      lt: 1\n    then: {model: m}\n"
    )
    compare = rules.rules[0].when
    assert isinstance(compare, dicom_rules.Compare)
    assert compare.path.segments == (dicom_rules.PrivateTag(0x0019, "GEMS_ACQU_01", 0x0C),)
