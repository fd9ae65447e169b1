"""Body part normalisation: table, evidence order, overrides, and how explain reports it."""

from __future__ import annotations

from typing import Any

import pytest

import dicom_rules
from dicom_rules import BodyPartTable
from tests.dicom_rules.headers import make


@pytest.mark.parametrize(
    ("attrs", "value", "source"),
    [
        ({"BodyPartExamined": "CHEST"}, "CHEST", "BodyPartExamined"),
        ({"BodyPartExamined": "thorax"}, "CHEST", "BodyPartExamined"),
        ({"BodyPartExamined": "LUNG"}, "CHEST", "BodyPartExamined"),
        ({"BodyPartExamined": "L_SPINE"}, "LSPINE", "BodyPartExamined"),
        ({"BodyPartExamined": "WHOLE BODY"}, "WHOLEBODY", "BodyPartExamined"),
        ({"BodyPartExamined": "HEAD", "StudyDescription": "CT THORAX"}, "HEAD", "BodyPartExamined"),
        ({"BodyPartExamined": "PARANASAL"}, "PARANASAL", "BodyPartExamined"),
        ({"StudyDescription": "CT THORAX"}, "CHEST", "StudyDescription"),
        ({"StudyDescription": "Thorax routine"}, "CHEST", "StudyDescription"),
        ({"StudyDescription": "Chest"}, "CHEST", "StudyDescription"),
        ({"SeriesDescription": "ThoraxRoutine  8.0  B40f"}, "CHEST", "SeriesDescription"),
        (
            {"SeriesDescription": "Lung", "StudyDescription": "CT HEAD"},
            "CHEST",
            "SeriesDescription",
        ),
        ({"ProtocolName": "CT Chest/Abdomen/Pelvis"}, "CHESTABDPELVIS", "ProtocolName"),
        ({"StudyDescription": "CT Abdomen Pelvis w contrast"}, "ABDOMENPELVIS", "StudyDescription"),
        ({"StudyDescription": "MRI LUMBAR SPINE WO"}, "LSPINE", "StudyDescription"),
        ({"StudyDescription": "e+1"}, None, None),
        ({}, None, None),
        (
            {"AnatomicRegionSequence": [{"CodeValue": "39607008", "CodeMeaning": "Lung"}]},
            "CHEST",
            "AnatomicRegionSequence",
        ),
        (
            {"AnatomicRegionSequence": [{"CodeValue": "999", "CodeMeaning": "Left lung"}]},
            "CHEST",
            "AnatomicRegionSequence",
        ),
    ],
)
def test_derivation(attrs: dict[str, Any], value: str | None, source: str | None) -> None:
    bp = BodyPartTable().derive(make(**attrs))
    assert (bp.value, bp.source) == (value, source), bp.how


def test_enhanced_functional_groups() -> None:
    header = make(
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
                        ]
                    }
                ]
            }
        ]
    )
    bp = BodyPartTable().derive(header)
    assert bp.value == "BRAIN"
    assert (bp.source or "").startswith("SharedFunctionalGroupsSequence")


def test_how_it_was_derived_is_explained() -> None:
    bp = BodyPartTable().derive(make(BodyPartExamined="THORAX"))
    assert bp.how == (
        "BodyPartExamined 'THORAX' is a synonym of CHEST; "
        "PS3.16 Annex L term CHEST = SCT 816094009 'Chest'"
    )
    bp = BodyPartTable().derive(make(StudyDescription="CT THORAX"))
    assert bp.how == "no BodyPartExamined; StudyDescription 'CT THORAX' contains 'THORAX' -> CHEST"
    assert bp.to_json()["synonym"] == "THORAX"


def test_rule_file_overrides_the_table() -> None:
    rules = dicom_rules.parse(
        """
version: 1
body_parts:
  LUNG: [LUNG, PULMO]
  CHEST: [BRUSTKORB]
rules:
  - {name: lung, when: {body_part: LUNG}, then: {model: m}}
  - {name: chest, when: {body_part: CHEST}, then: {model: c}}
"""
    )
    study = [
        dicom_rules.SeriesInput("1", make(BodyPartExamined="LUNG"), 1),
        dicom_rules.SeriesInput("2", make(StudyDescription="Pulmo nativ"), 1),
        dicom_rules.SeriesInput("3", make(SeriesDescription="Brustkorb 1mm"), 1),
        dicom_rules.SeriesInput("4", make(BodyPartExamined="THORAX"), 1),
    ]
    assert [(d.rule, d.series_uids) for d in dicom_rules.route(rules, study)] == [
        ("chest", ("3",)),
        ("chest", ("4",)),
        ("lung", ("1",)),
        ("lung", ("2",)),
    ]


def test_odd_header_values_do_not_break_derivation() -> None:
    for header in (
        {"00180015": {"vr": "CS", "Value": [None, 5, {"x": 1}]}},
        {"00180015": {"vr": "CS", "Value": "CHEST"}},
        {"00082218": {"vr": "SQ", "Value": ["not an item", {"00080100": 3}]}},
        {"0008103E": {"vr": "LO", "Value": [""]}},
        "not a header",
        None,
    ):
        BodyPartTable().derive(header)
