"""select.volume: which volume of a series a model gets (parsed, rendered, carried by decisions)."""

from __future__ import annotations

import pytest

import dicom_rules
from dicom_rules import RuleError, VolumeSelect

RULES = """
version: 1
rules:
  - name: mr-brain
    when: {Modality: {equals: MR}}
    select:
      volume:
        orientation: [axial]
        echo: 1
        uniform: true
        prefer: [thinnest, most_slices]
        partial: allow
    then: {model: brain-seg}
"""


def test_volume_select_parses_renders_and_reaches_the_decision() -> None:
    rules = dicom_rules.parse(RULES)
    vol = rules.rule("mr-brain").select.volume  # type: ignore[union-attr]
    assert vol == VolumeSelect(
        orientation=("AXIAL",), echo=1, uniform=True, prefer=("thinnest", "most_slices"),
        partial=True,
    )  # fmt: skip
    assert dicom_rules.parse(dicom_rules.render(rules)) == rules
    series = [{"series_uid": "1.2", "header": {"00080060": {"vr": "CS", "Value": ["MR"]}}}]
    (decision,) = dicom_rules.route(rules, series, destinations=["pacs"])
    assert decision.volume == vol
    (shown,) = dicom_rules.explain(rules, series, destinations=["pacs"]).to_json()["decisions"]
    assert shown["volume"] == {
        "orientation": ["AXIAL"], "echo": 1, "uniform": True,
        "prefer": ["thinnest", "most_slices"], "partial": "allow",
    }  # fmt: skip


@pytest.mark.parametrize(
    ("volume", "message"),
    [
        ("{orientation: axail}", "unknown orientation 'axail'"),
        ("{prefer: [thinest]}", "unknown volume order 'thinest'"),
        ("{echo: 0}", "'echo' must be an echo number"),
        ("{partial: yes please}", "'partial' must be 'allow' or 'refuse'"),
        ("{colour: red}", "unknown key 'colour'"),
    ],
)
def test_bad_volume_select_is_a_positioned_error(volume: str, message: str) -> None:
    text = RULES.replace(
        RULES[RULES.index("      volume:") : RULES.index("    then")], f"      volume: {volume}\n"
    )
    with pytest.raises(RuleError) as err:
        dicom_rules.parse(text)
    assert message in str(err.value)
    assert ":7:" in str(err.value) or ":6:" in str(err.value)
