"""Every YAML example in docs/rules.md is valid rule syntax (so the reference cannot rot)."""

from __future__ import annotations

import re
import textwrap
from pathlib import Path

import pytest

import dicom_rules

DOC = Path(__file__).resolve().parents[2] / "docs" / "rules.md"
BLOCKS = re.findall(r"```yaml\n(.*?)```", DOC.read_text(encoding="utf-8"), flags=re.S)
ALIASES = "aliases:\n  non_image_modalities: [SR, SEG]\n"


def _as_rule_file(block: str) -> str:
    if block.startswith("version:"):
        return block
    if block.startswith("- name:"):
        return "version: 1\n" + ALIASES + "rules:\n" + textwrap.indent(block, "  ")
    if block.startswith("body_parts:"):
        return "version: 1\n" + block + "rules: []\n"
    if block.startswith("when:"):
        return "version: 1\nrules:\n  - name: r\n    then: {model: m}\n" + textwrap.indent(
            block, "    "
        )
    raise AssertionError(f"unrecognised example in docs/rules.md:\n{block}")


def test_doc_has_examples() -> None:
    assert len(BLOCKS) >= 8


@pytest.mark.parametrize("block", BLOCKS, ids=[f"example{i}" for i in range(len(BLOCKS))])
def test_doc_example_parses(block: str) -> None:
    rules = dicom_rules.parse(_as_rule_file(block))
    assert dicom_rules.parse(dicom_rules.render(rules)) == rules


def test_doc_synonym_and_code_tables_match_the_code() -> None:
    from dicom_rules.bodypart import BUILTIN_CODES, BUILTIN_SYNONYMS

    doc = DOC.read_text(encoding="utf-8")
    for canonical, synonyms in BUILTIN_SYNONYMS.items():
        assert f"| `{canonical}` | " + ", ".join(synonyms) + " |" in doc, canonical
    section = doc.split("Anatomic region codes", 1)[1].split("\n\n")[1]
    documented = {}
    for row in section.splitlines()[2:]:
        canonical, codes = (c.strip(" `") for c in row.strip("|").split("|"))
        documented.update({code.strip(): canonical for code in codes.split(",")})
    assert documented == BUILTIN_CODES
