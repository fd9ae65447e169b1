"""Loading: path vs text, positions, aliases, shorthand forms, config-name checks."""

from __future__ import annotations

from pathlib import Path

import pytest

import dicom_rules
from dicom_rules import AllOf, AnyOf, Compare, Not, Op, PrivateTag, RuleKind, Scope

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "deploy" / "rules.example.yaml"
DEMO_MODELS = {
    "lung-nodule-seg",
    "lung-nodule-detect",
    "lung-nodule-classify",
    "ct-denoise",
    "cxr-classify",
    "report-text",
}


def test_example_rules_load_and_only_use_demo_models() -> None:
    rules = dicom_rules.load(EXAMPLE, models=DEMO_MODELS, destinations=set())
    assert rules.source == str(EXAMPLE)
    used = {a.model for r in rules.rules for a in r.actions if a.model}
    assert used == DEMO_MODELS
    assert any(r.kind is RuleKind.FALLBACK for r in rules.rules)


def test_load_accepts_path_str_and_text(tmp_path: Path) -> None:
    text = "version: 1\nrules:\n  - {name: r, when: {Modality: CT}, then: {model: m}}\n"
    f = tmp_path / "r.yaml"
    f.write_text(text)
    assert dicom_rules.load(f) == dicom_rules.load(str(f)) == dicom_rules.load(text)
    with pytest.raises(dicom_rules.RuleError) as info:
        dicom_rules.load(text.replace("Modality", "Modalityy"))
    assert info.value.lines[0].startswith("<rules>:3:")


def test_unreadable_file_is_a_rule_error(tmp_path: Path) -> None:
    f = tmp_path / "bad.yaml"
    f.write_bytes(b"\xff\xfe\x00version")
    with pytest.raises(dicom_rules.RuleError) as info:
        dicom_rules.load(f)
    assert "cannot read rule file" in str(info.value)


def test_model_of_conditions() -> None:
    rules = dicom_rules.parse(
        """
version: 1
aliases:
  nonimg: [SR, SEG]
rules:
  - name: r
    when:
      all:
        - Modality: {not_in: $nonimg}
        - any: [{body_part: CHEST}, {"0019[GEMS_ACQU_01]0c": {gt: 1}}]
        - not: {ImageType: {in: [LOCALIZER], case_sensitive: true}}
    then: {model: m}
"""
    )
    when = rules.rules[0].when
    assert isinstance(when, AllOf)
    first, second, third = when.items
    assert first == Compare(
        dicom_rules.parse_path("Modality"), Op.NOT_IN, ("SR", "SEG"), alias="nonimg"
    )
    assert isinstance(second, AnyOf)
    private = second.items[1]
    assert isinstance(private, Compare)
    assert private.path.segments == (PrivateTag(0x0019, "GEMS_ACQU_01", 0x0C),)
    assert isinstance(third, Not) and isinstance(third.item, Compare)
    assert third.item.case_sensitive
    assert first.position.line == 9


def test_defaults_apply_to_rules() -> None:
    rules = dicom_rules.parse(
        "version: 1\ndefaults: {priority: 7, scope: study, deliver: [pacs]}\n"
        "rules:\n  - {name: r, then: {model: m}}\n  - {name: s, priority: 1, scope: series, "
        "then: {model: m}}\n"
    )
    assert [(r.priority, r.scope) for r in rules.rules] == [(7, Scope.STUDY), (1, Scope.SERIES)]
    assert rules.defaults.deliver == ("pacs",)


def test_all_problems_are_reported_at_once() -> None:
    with pytest.raises(dicom_rules.RuleError) as info:
        dicom_rules.parse(
            """
version: 1
rules:
  - {name: a, when: {Modalty: CT}, then: {model: m}}
  - {name: b, when: {Modality: {equal: CT}}, then: {model: m}}
  - {name: b, when: {Modality: CT}, then: {model: x}}
""",
            models={"m"},
        )
    messages = [p.message for p in info.value.problems]
    assert len(messages) == 4
    assert "did you mean 'Modality'" in messages[0]
    assert "did you mean 'equals'" in messages[1]
    assert messages[2].startswith("duplicate rule name 'b'")  # sorted by line, then column
    assert messages[3].startswith("unknown model 'x'")


@pytest.mark.parametrize(
    "text",
    [
        "",
        "[]",
        "version: 1",
        "version: 1\nrules: {}",
        "version: 1\nrules:\n  - just a string",
        "version: 1\nrules:\n  - {when: {Modality: CT}, then: ignore}",
        "version: 1\nrules:\n  - {name: r, then: []}",
        "version: 1\nrules:\n  - {name: r, when: [], then: ignore}",
        "version: 1\nrules:\n  - {name: r, when: {Modality: {}}, then: ignore}",
        "version: 1\nrules:\n  - {name: r, when: {Modality: {in: []}}, then: ignore}",
        "version: 1\nrules:\n  - {name: r, when: {Modality: {equals: [CT]}}, then: ignore}",
        "version: 1\nrules:\n  - {name: r, when: {Modality: {exists: yes}}, then: ignore}",
        "version: 1\nrules:\n  - {name: r, when: {SliceThickness: {lt: '1'}}, then: ignore}",
        "version: 1\nrules:\n  - {name: r, priority: high, then: ignore}",
        "version: 1\nrules:\n  - {name: r, stop: 1, then: ignore}",
        "version: 1\nrules:\n  - {name: r, type: other, then: ignore}",
        "version: 1\nrules:\n  - {name: r, then: [ignore, {model: m}]}",
        "version: 1\nrules:\n  - {name: r, then: {parameters: {a: 1}}}",
        "version: 1\nrules:\n  - {name: r, scope: study, select: {count: 0}, then: ignore}",
        "version: 1\nrules:\n  - {name: r, scope: study, select: {prefer: [{newest: X}]}, "
        "then: ignore}",
        "version: 1\nrules:\n  - {name: r, when: {'0019[]0C': {exists: true}}, then: ignore}",
        "version: 1\nrules:\n  - {name: r, when: {'Modality..X': {exists: true}}, then: ignore}",
        "version: 1\nrules:\n  - {name: r, when: {tag: {private: {group: '0019'}}, "
        "exists: true}, then: ignore}",
        "version: 1\naliases: {a: CT}\nrules: []",
        "version: 1\nbody_parts: {CHEST: LUNG}\nrules: []",
        "version: 1\nrules:\n  - {name: r, when: {body_part: {lt: 3}}, then: ignore}",
        "version: 1\nrules:\n  - {name: r, then: {model: m, deliver: [1]}}",
        "version: 1\nrules: []\nextra: 1",
        "version: 1\nrules:\n  - {name: r, when: {Modality: {matches: '('}}, then: ignore}",
    ],
)
def test_invalid_text_gives_rule_error_with_position(text: str) -> None:
    with pytest.raises(dicom_rules.RuleError) as info:
        dicom_rules.parse(text)
    for p in info.value.problems:
        assert p.line >= 1 and p.column >= 1 and p.message


def test_deeply_nested_conditions_are_bounded() -> None:
    cond = "{Modality: CT}"
    for _ in range(40):
        cond = "{not: " + cond + "}"
    with pytest.raises(dicom_rules.RuleError) as info:
        dicom_rules.parse(f"version: 1\nrules:\n  - {{name: r, when: {cond}, then: ignore}}\n")
    assert "nest deeper" in str(info.value)


def test_yaml_python_tags_are_never_executed(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    text = (
        "version: 1\nrules:\n  - name: r\n    then: {model: !!python/object/apply:os.system "
        f'["touch {marker}"]}}\n'
    )
    with pytest.raises(dicom_rules.RuleError):
        dicom_rules.parse(text)
    assert not marker.exists()


def test_oversized_text_is_refused() -> None:
    with pytest.raises(dicom_rules.RuleError) as info:
        dicom_rules.parse("version: 1\nrules: []\n" + "#" * (1 << 20))
    assert "larger than" in str(info.value)


def test_missing_file_name_is_reported_as_such(tmp_path: Path) -> None:
    with pytest.raises(dicom_rules.RuleError) as info:
        dicom_rules.load(str(tmp_path / "rules.yaml"))
    assert info.value.path == str(tmp_path / "rules.yaml")
    assert "cannot read rule file" in str(info.value)
    rules = dicom_rules.load("{version: 1, rules: [{name: r, then: ignore}]}")  # one-line text
    assert rules.rules[0].name == "r"
