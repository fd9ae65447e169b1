"""Routing semantics: priority levels, stop, ignore, fallback, scope, select, deliver."""

from __future__ import annotations

from typing import Any

import dicom_rules
from dicom_rules import DeliverSource, Status
from tests.dicom_rules.headers import series

AXIAL = [1, 0, 0, 0, 1, 0]
CORONAL = [1, 0, 0, 0, 0, -1]


def rules(body: str, **kw: Any) -> dicom_rules.RuleSet:
    return dicom_rules.parse("version: 1\n" + body, **kw)


def test_series_scope_one_decision_per_series() -> None:
    rs = rules("rules:\n  - name: ct\n    when: {Modality: CT}\n    then: {model: m}\n")
    study = [series("2", Modality="CT"), series("1", Modality="CT"), series("3", Modality="MR")]
    ds = dicom_rules.route(rs, study)
    assert [(d.rule, d.model, d.series_uids) for d in ds] == [
        ("ct", "m", ("1",)),
        ("ct", "m", ("2",)),
    ]


def test_priority_orders_decisions_and_stop_claims_series() -> None:
    rs = rules(
        """
rules:
  - name: low
    priority: 1
    when: {Modality: CT}
    then: {model: low-model}
  - name: high
    priority: 10
    when: {BodyPartExamined: CHEST}
    then: {model: high-model}
    stop: true
"""
    )
    study = [series("1", Modality="CT", BodyPartExamined="CHEST"), series("2", Modality="CT")]
    ds = dicom_rules.route(rs, study)
    assert [(d.rule, d.series_uids) for d in ds] == [("high", ("1",)), ("low", ("2",))]
    expl = ds[0].explanation
    assert expl is not None
    v = expl.for_series("1").verdict("low")
    assert v.status is Status.SKIPPED and "high" in v.reason


def test_without_stop_lower_rules_still_apply() -> None:
    rs = rules(
        """
rules:
  - {name: a, priority: 5, when: {Modality: CT}, then: {model: a}}
  - {name: b, priority: 1, when: {Modality: CT}, then: {model: b}}
"""
    )
    assert [d.model for d in dicom_rules.route(rs, [series("1", Modality="CT")])] == ["a", "b"]


def test_equal_priority_rules_are_one_level_stop_does_not_hide_peers() -> None:
    rs = rules(
        """
rules:
  - {name: b, priority: 5, when: {Modality: CT}, then: {model: b}, stop: true}
  - {name: a, priority: 5, when: {Modality: CT}, then: {model: a}, stop: true}
  - {name: c, priority: 4, when: {Modality: CT}, then: {model: c}}
"""
    )
    assert [d.model for d in dicom_rules.route(rs, [series("1", Modality="CT")])] == ["a", "b"]


def test_ignore_claims_and_produces_ignored_decision() -> None:
    rs = rules(
        """
rules:
  - {name: no-sr, priority: 100, when: {Modality: SR}, then: ignore}
  - {name: all, when: {Modality: {exists: true}}, then: {model: m}}
"""
    )
    ds = dicom_rules.route(rs, [series("1", Modality="SR"), series("2", Modality="CT")])
    assert [(d.rule, d.ignored, d.model, d.series_uids) for d in ds] == [
        ("no-sr", True, None, ("1",)),
        ("all", False, "m", ("2",)),
    ]


def test_fallback_only_for_unmatched_series() -> None:
    rs = rules(
        """
rules:
  - {name: ct, when: {Modality: CT}, then: {model: m}}
  - {name: rest, type: fallback, then: {send_to: archive}}
"""
    )
    ds = dicom_rules.route(rs, [series("1", Modality="CT"), series("2", Modality="US")])
    assert [(d.rule, d.send_to, d.series_uids) for d in ds] == [
        ("ct", None, ("1",)),
        ("rest", "archive", ("2",)),
    ]
    expl = ds[0].explanation
    assert expl is not None
    assert expl.for_series("1").verdict("rest").status is Status.NOT_NEEDED


def test_ignored_series_do_not_reach_fallback() -> None:
    rs = rules(
        """
rules:
  - {name: no-sr, when: {Modality: SR}, then: ignore}
  - {name: rest, type: fallback, then: {model: generic}}
"""
    )
    assert [d.rule for d in dicom_rules.route(rs, [series("1", Modality="SR")])] == ["no-sr"]


def test_fallback_with_condition_and_priorities() -> None:
    rs = rules(
        """
rules:
  - {name: us, type: fallback, priority: 5, when: {Modality: US}, then: {model: us}, stop: true}
  - {name: any, type: fallback, then: {model: generic}}
"""
    )
    ds = dicom_rules.route(rs, [series("1", Modality="US"), series("2", Modality="XA")])
    assert [(d.rule, d.series_uids) for d in ds] == [("us", ("1",)), ("any", ("2",))]


def test_study_scope_select_thinnest_axial_most_instances() -> None:
    rs = rules(
        """
rules:
  - name: chest
    scope: study
    when: {Modality: CT}
    select:
      where: {not: {ImageType: {in: [LOCALIZER]}}}  # true when ImageType is absent
      prefer:
        - matching: {orientation: {equals: AXIAL}}
        - lowest: SliceThickness
        - highest: instance_count
    then: {model: seg}
"""
    )
    study = [
        series(
            "scout",
            2,
            Modality="CT",
            ImageType=["ORIGINAL", "PRIMARY", "LOCALIZER"],
            SliceThickness=0.1,
            ImageOrientationPatient=AXIAL,
        ),
        series("cor-thin", 300, Modality="CT", SliceThickness=0.5, ImageOrientationPatient=CORONAL),
        series("ax-5mm", 80, Modality="CT", SliceThickness=5, ImageOrientationPatient=AXIAL),
        series("ax-1mm-a", 300, Modality="CT", SliceThickness=1, ImageOrientationPatient=AXIAL),
        series("ax-1mm-b", 310, Modality="CT", SliceThickness="1.0", ImageOrientationPatient=AXIAL),
        series("mr", 20, Modality="MR"),
    ]
    ds = dicom_rules.route(rs, study)
    assert [(d.model, d.series_uids) for d in ds] == [("seg", ("ax-1mm-b",))]
    expl = ds[0].explanation
    assert expl is not None
    assert expl.for_series("ax-1mm-a").verdict("chest").status is Status.NOT_SELECTED
    assert expl.for_series("mr").verdict("chest").status is Status.NOT_MATCHED


def test_select_kernel_pattern_and_count() -> None:
    rs = rules(
        """
rules:
  - name: r
    scope: study
    when: {Modality: CT}
    select:
      prefer: [{matching: {ConvolutionKernel: {matches: "B[67]0f"}}}, {highest: instance_count}]
      count: 2
    then: {model: m}
"""
    )
    study = [
        series("soft", 400, Modality="CT", ConvolutionKernel="B30f"),
        series("lung", 100, Modality="CT", ConvolutionKernel="B70f"),
        series("bone", 50, Modality="CT", ConvolutionKernel="B60f"),
    ]
    assert dicom_rules.route(rs, study)[0].series_uids == ("bone", "lung")


def test_study_scope_without_select_takes_all_matching_series() -> None:
    rs = rules("rules:\n  - {name: r, scope: study, when: {Modality: CT}, then: {model: m}}\n")
    study = [series("b", Modality="CT"), series("a", Modality="CT"), series("c", Modality="MR")]
    assert [d.series_uids for d in dicom_rules.route(rs, study)] == [("a", "b")]


def test_select_where_filters_everything_is_not_a_match() -> None:
    rs = rules(
        """
rules:
  - name: r
    scope: study
    when: {Modality: CT}
    select: {where: {SliceThickness: {le: 1}}}
    then: {model: m}
  - {name: fb, type: fallback, then: ignore}
"""
    )
    ds = dicom_rules.route(rs, [series("a", Modality="CT", SliceThickness=5)])
    assert [d.rule for d in ds] == ["fb"]
    assert ds[0].explanation is not None
    reason = ds[0].explanation.for_series("a").verdict("r").reason
    assert reason.startswith("select found no series") and "'5'" in reason


def test_multiple_actions_and_parameters() -> None:
    rs = rules(
        """
rules:
  - name: r
    when: {Modality: CT}
    then:
      - {model: a, parameters: {threshold: 0.5, labels: [1, 2]}}
      - {model: b, deliver: [pacs]}
      - {send_to: archive}
"""
    )
    ds = dicom_rules.route(rs, [series("1", Modality="CT")])
    assert [(d.model, dict(d.parameters), d.send_to) for d in ds] == [
        ("a", {"threshold": 0.5, "labels": [1, 2]}, None),
        ("b", {}, None),
        (None, {}, "archive"),
    ]


def test_deliver_from_rule_then_defaults_then_config() -> None:
    body = """
rules:
  - {name: own, when: {Modality: CT}, then: {model: a, deliver: [pacs]}}
  - {name: other, when: {Modality: CT}, then: {model: b}}
"""
    with_defaults = rules("defaults: {deliver: [viewer]}\n" + body)
    ds = dicom_rules.route(with_defaults, [series("1", Modality="CT")], destinations=["x", "y"])
    assert [(d.deliver, d.deliver_source) for d in ds] == [
        (("viewer",), DeliverSource.DEFAULTS),
        (("pacs",), DeliverSource.RULE),
    ]
    no_defaults = rules(body, destinations={"pacs", "orthanc", "folder"})
    ds = dicom_rules.route(no_defaults, [series("1", Modality="CT")])
    assert (ds[0].rule, ds[0].deliver, ds[0].deliver_source) == (
        "other",
        ("folder", "orthanc", "pacs"),
        DeliverSource.CONFIG,
    )
    ds = dicom_rules.route(no_defaults, [series("1", Modality="CT")], destinations=["b", "a"])
    assert ds[0].deliver == ("a", "b")


def test_rule_without_when_matches_everything() -> None:
    rs = rules("rules:\n  - {name: all, then: {model: m}}\n")
    assert len(dicom_rules.route(rs, [series("1"), series("2", Modality="XX")])) == 2


def test_empty_study_routes_to_nothing() -> None:
    rs = rules("rules:\n  - {name: all, then: {model: m}}\n")
    assert dicom_rules.route(rs, []) == []
    assert dicom_rules.explain(rs, []).series == ()


def test_every_rule_has_a_verdict_in_priority_order() -> None:
    rs = rules(
        """
rules:
  - {name: z, priority: 1, when: {Modality: MR}, then: {model: m}}
  - {name: a, priority: 9, when: {Modality: CT}, then: {model: m}}
  - {name: f, type: fallback, then: ignore}
"""
    )
    expl = dicom_rules.explain(rs, [series("1", Modality="PT")])
    assert [(v.rule, v.status) for v in expl.series[0].verdicts] == [
        ("a", Status.NOT_MATCHED),
        ("z", Status.NOT_MATCHED),
        ("f", Status.MATCHED),
    ]
    assert expl.series[0].outcome == "ignored by 'f'"
    data = expl.to_json()
    assert data["series"][0]["rules"][0] == {
        "rule": "a",
        "priority": 9,
        "verdict": "not matched",
        "reason": "Modality equals 'CT': seen 'PT'",
    }


def test_decision_parameters_are_a_private_json_ready_copy() -> None:
    import json

    rs = rules("rules:\n  - {name: r, then: {model: m, parameters: {labels: [1, 2]}}}\n")
    d = dicom_rules.route(rs, [series("1")])[0]
    assert json.loads(json.dumps(d.parameters)) == {"labels": [1, 2]}
    d.parameters["labels"].append(3)
    assert dicom_rules.route(rs, [series("1")])[0].parameters == {"labels": [1, 2]}


def test_example_rules_send_chest_abdomen_pelvis_ct_to_lung_models() -> None:
    from tests.dicom_rules.test_parse import EXAMPLE

    rs = dicom_rules.load(EXAMPLE)
    cases: tuple[dict[str, Any], ...] = (
        {"BodyPartExamined": "CHEST_TO_PELVIS"},
        {"StudyDescription": "CT Chest/Abdomen/Pelvis with contrast"},
        {"BodyPartExamined": "CHESTABDOMEN"},
        {"ProtocolName": "Lung Cancer Screening"},
    )
    for attrs in cases:
        ds = dicom_rules.route(rs, [series("1", 1, Modality="CT", **attrs)])
        assert [d.model for d in ds][:1] == ["lung-nodule-seg"], attrs
    ds = dicom_rules.route(rs, [series("1", Modality="CT", BodyPartExamined="ABDOMEN")])
    assert [d.model for d in ds] == ["ct-denoise"]
