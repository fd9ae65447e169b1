"""The ``workitem`` action (issue 23 §2): a rule schedules a UPS workitem instead of, or beside,
running a local model."""

from __future__ import annotations

import pytest

import dicom_rules
from dicom_rules import RuleError, WorkitemRequest
from dicom_rules.explanation import decision_json
from tests.dicom_rules.headers import series


def rules(body: str) -> dicom_rules.RuleSet:
    return dicom_rules.parse("version: 1\nrules:\n" + body, source="r.yaml")


def test_a_workitem_alone_or_beside_a_model() -> None:
    rs = rules(
        """\
  - name: lung
    when: {Modality: CT}
    then:
      - {workitem: {code: LUNG-AI, meaning: Lung nodules, station: AINODE-2, priority: HIGH}}
      - {model: m}
"""
    )
    ds = dicom_rules.route(rs, [series("1", Modality="CT")])
    assert [(d.model, d.workitem) for d in ds] == [
        (None, WorkitemRequest("LUNG-AI", "Lung nodules", "99AINODE", "AINODE-2", "HIGH")),
        ("m", None),
    ]
    assert decision_json(ds[0])["workitem"]["code"] == "LUNG-AI"
    assert "workitem 'LUNG-AI' scheduled by 'lung'" in ds[0].explanation.for_series("1").outcome
    assert dicom_rules.parse(dicom_rules.render(rs), source="r.yaml") == rs


@pytest.mark.parametrize(
    ("then", "message"),
    [
        (
            "{workitem: LUNG}",
            "r.yaml:5:22: rule 'x': 'workitem' must be a mapping with at least 'code'",
        ),
        ("{workitem: {meaning: m}}", "r.yaml:5:22: rule 'x': 'workitem' needs a 'code'"),
        ("{workitem: {code: ''}}", "r.yaml:5:29: workitem 'code' must be a non-empty text"),
        ("{workitem: {code: ABCDEFGHIJKLMNOPQ}}", "r.yaml:5:29: workitem 'code' is longer than 16"),
        (
            "{workitem: {code: A, priority: URGENT}}",
            "r.yaml:5:42: workitem 'priority' must be one of",
        ),
        ("{workitem: {code: A, statoin: B}}", "r.yaml:5:32: unknown key 'statoin' in the workitem"),
        ("{workitem: {code: A}, ignore: true}", "'ignore' cannot be combined with"),
    ],
)
def test_bad_workitems_are_precise_errors(then: str, message: str) -> None:
    with pytest.raises(RuleError) as caught:
        rules(f"  - name: x\n    when: {{Modality: CT}}\n    then: {then}\n")
    assert message in str(caught.value)
