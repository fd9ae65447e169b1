"""node.routing.dispatch: Study -> RouteDecisions through dicom_rules."""

from __future__ import annotations

from pathlib import Path

import dicom_rules
from node.routing import route_study, series_inputs
from node.types import Series, Study
from tests.dicom_rules.headers import make

ROOT = Path(__file__).resolve().parents[2]

RULES = dicom_rules.parse(
    """
version: 1
rules:
  - name: chest-ct
    scope: study
    when: {Modality: CT, body_part: CHEST}
    select: {prefer: [{lowest: SliceThickness}]}
    then: [{model: lung-nodule-seg}, {send_to: archive}]
  - {name: sr, priority: 10, when: {Modality: SR}, then: ignore}
""",
    destinations={"archive", "pacs"},
)


def _study() -> Study:
    return Study(
        study_uid="1.2.3",
        series=(
            Series("1.2.3.1", "CT", "CHEST", "thin", 300, make(Modality="CT", SliceThickness=1)),
            Series("1.2.3.2", "CT", "CHEST", "thick", 60, make(Modality="CT", SliceThickness=5)),
            Series("1.2.3.3", "SR", None, "dose", 1, make(Modality="SR")),
        ),
    )


def test_route_study() -> None:
    decisions = route_study(RULES, _study())
    assert [(d.rule, d.model, d.send_to, d.series_uids, d.ignored) for d in decisions] == [
        ("sr", None, None, ("1.2.3.3",), True),
        ("chest-ct", "lung-nodule-seg", None, ("1.2.3.1",), False),
        ("chest-ct", None, "archive", ("1.2.3.1",), False),
    ]
    assert decisions[1].deliver == ("archive", "pacs")
    assert decisions[1].deliver_source is dicom_rules.DeliverSource.CONFIG
    assert route_study(RULES, _study(), destinations=["pacs"])[1].deliver == ("pacs",)


def test_series_record_fields_fill_gaps_in_header() -> None:
    study = Study("1.2", (Series("1.2.1", "CT", "THORAX", "Lung 1mm", 10, {}),))
    (inp,) = series_inputs(study)
    assert inp.header["00080060"] == {"vr": "CS", "Value": ["CT"]}
    assert inp.header["00180015"] == {"vr": "CS", "Value": ["THORAX"]}
    assert inp.instance_count == 10
    assert [d.model for d in route_study(RULES, study)] == ["lung-nodule-seg", None]


def test_header_values_win_over_series_record() -> None:
    header = make(Modality="MR")
    study = Study("1.2", (Series("1.2.1", "CT", None, None, 1, header),))
    (inp,) = series_inputs(study)
    assert inp.header["00080060"]["Value"] == ["MR"]
    assert header == make(Modality="MR")  # the stored header is not modified


def test_example_rules_on_a_study_record() -> None:
    rules = dicom_rules.load(ROOT / "deploy" / "rules.example.yaml")
    study = Study(
        "9.8",
        (
            Series(
                "9.8.1",
                "CT",
                None,
                "Lung",
                120,
                make(
                    Modality="CT",
                    StudyDescription="CT THORAX",
                    SliceThickness=1.25,
                    ImageOrientationPatient=[1, 0, 0, 0, 1, 0],
                ),
            ),
            Series(
                "9.8.2",
                "CT",
                None,
                "Topogram",
                1,
                make(Modality="CT", ImageType=["ORIGINAL", "PRIMARY", "LOCALIZER"]),
            ),
            Series("9.8.3", "SR", None, "Dose Report", 1, make(Modality="SR")),
        ),
    )
    decisions = route_study(rules, study)
    models = [(d.model, d.series_uids) for d in decisions if d.model]
    assert models == [
        ("lung-nodule-seg", ("9.8.1",)),
        ("lung-nodule-detect", ("9.8.1",)),
        ("lung-nodule-classify", ("9.8.1",)),
        ("report-text", ("9.8.1",)),
    ]
    assert {d.rule for d in decisions if d.ignored} == {"ignore-non-images", "ignore-localizers"}


def test_packaged_default_rules_are_the_example() -> None:
    from node.routing import DEFAULT_RULES

    example = ROOT / "deploy" / "rules.example.yaml"
    assert DEFAULT_RULES.read_text() == example.read_text()
    assert dicom_rules.load(DEFAULT_RULES) == dicom_rules.load(example)
