"""A rule's ``priors``: parsing with positions, rendering, decisions and prior matching."""

from __future__ import annotations

import pytest

import dicom_rules
from dicom_rules.explanation import decision_json

RULES = """version: 1
body_parts:
  CHEST: [THORAX]
rules:
  - name: chest
    when: {Modality: CT}
    then: {model: lung_nodule_detect}
    priors: {from: pacs, max: 2, within_days: 1095, match: {Modality: CT, body_part: CHEST}}
  - name: forward
    then: {send_to: archive}
"""


def _header(modality: str, body_part: str | None = None, description: str | None = None) -> dict:
    h = {"00080060": {"vr": "CS", "Value": [modality]}}
    if body_part is not None:
        h["00180015"] = {"vr": "CS", "Value": [body_part]}
    if description is not None:
        h["0008103E"] = {"vr": "LO", "Value": [description]}
    return h


def test_priors_parse_render_and_reach_the_model_decision_only() -> None:
    rules = dicom_rules.parse(RULES, sources={"pacs"})
    priors = rules.rule("chest").priors
    assert priors is not None
    assert (priors.source, priors.max, priors.within_days) == ("pacs", 2, 1095)
    assert dicom_rules.parse(dicom_rules.render(rules)) == rules
    decisions = dicom_rules.route(
        rules, [dicom_rules.SeriesInput("1.2.3", _header("CT", "CHEST"), 10)]
    )
    by_rule = {d.rule: d for d in decisions}
    assert by_rule["chest"].priors == priors
    assert by_rule["forward"].priors is None
    shown = decision_json(by_rule["chest"])["priors"]
    assert shown == {
        "from": "pacs",
        "max": 2,
        "within_days": 1095,
        "match": {"all": [{"Modality": {"equals": "CT"}}, {"body_part": {"equals": "CHEST"}}]},
    }


@pytest.mark.parametrize(
    ("priors", "sources", "expected"),
    [
        ("{from: pacx}", {"pacs"}, "8:20: unknown source 'pacx'; did you mean 'pacs'?"),
        ("{max: 2}", None, "8:13: rule 'chest': 'priors' needs 'from'"),
        ("{from: pacs, max: 0}", None, "8:31: 'max' must be a whole number from 1 to 10"),
        ("{from: pacs, within_days: -1}", None, "8:39: 'within_days' must be a whole number"),
        ("{from: pacs, within: 3}", None, "8:26: unknown key 'within'"),
        ("{from: pacs, match: {Modalty: CT}}", None, "8:34: unknown DICOM keyword 'Modalty'"),
        ("pacs", None, "8:13: rule 'chest': 'priors' must be a mapping"),
    ],
)
def test_priors_errors_have_file_line_column(
    priors: str, sources: set[str] | None, expected: str
) -> None:
    text = RULES.replace(
        "{from: pacs, max: 2, within_days: 1095, match: {Modality: CT, body_part: CHEST}}", priors
    )
    with pytest.raises(dicom_rules.RuleError) as err:
        dicom_rules.parse(text, source="r.yaml", sources=sources)
    assert any(line.startswith(f"r.yaml:{expected}") for line in err.value.lines), err.value.lines


def test_priors_on_a_rule_without_model_is_an_error() -> None:
    text = "version: 1\nrules:\n  - name: fwd\n    then: {send_to: a}\n    priors: {from: pacs}\n"
    with pytest.raises(dicom_rules.RuleError) as err:
        dicom_rules.parse(text, source="r.yaml")
    assert err.value.lines == [
        "r.yaml:5:5: rule 'fwd': 'priors' needs a 'model' action (the prior is fetched for its "
        "jobs)"
    ]


def test_match_prior_uses_match_and_the_rules_body_part_synonyms() -> None:
    rules = dicom_rules.parse(RULES)
    priors = rules.rule("chest").priors
    assert priors is not None
    current = dicom_rules.body_part_of(rules, _header("CT", "THORAX"))
    assert current == "CHEST"
    ok = dicom_rules.match_prior(rules, priors, _header("CT", "CHEST"), body_part=current)
    assert ok.is_match and ok.body_part == "CHEST"
    # the body part found in the description when BodyPartExamined is absent
    by_text = dicom_rules.match_prior(
        rules, priors, _header("CT", description="Thorax 1mm"), body_part=current
    )
    assert by_text.is_match, by_text.reason
    other = dicom_rules.match_prior(rules, priors, _header("CT", "ABDOMEN"), body_part=current)
    assert not other.is_match and "ABDOMEN" in other.reason
    mr = dicom_rules.match_prior(rules, priors, _header("MR", "CHEST"), body_part=current)
    assert not mr.is_match and "Modality" in mr.reason
    # without a match condition, the body part alone decides
    bare = dicom_rules.Priors(source="pacs")
    assert dicom_rules.match_prior(rules, bare, _header("MR", "CHEST"), body_part="CHEST").is_match
    assert not dicom_rules.match_prior(
        rules, bare, _header("CT", "ABDOMEN"), body_part="CHEST"
    ).is_match
    assert (
        dicom_rules.match_prior(rules, priors, {"00080060": 5}, body_part="CHEST").is_match is False
    )
