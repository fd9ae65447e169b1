"""The body-part table covers PS3.16 Annex L and CID 4031, generated from pydicom's tables."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from pydicom.sr._cid_dict import cid_concepts
from pydicom.sr._concepts_dict import concepts

import dicom_rules
from dicom_rules import BodyPartTable
from dicom_rules.bodypart import STANDARD
from tests.dicom_rules.headers import make, series

ROOT = Path(__file__).resolve().parents[2]

#: where ainode's multilingual synonyms deliberately win over a standard term (documented)
TERM_ON_TOP = {
    "ARM": "EXTREMITY",
    "LEG": "EXTREMITY",
    "LIVER": "ABDOMEN",
    "LUNG": "CHEST",
    "SKULL": "HEAD",
}
MEANING_ON_TOP = {"LIVER": "ABDOMEN", "LUNG": "CHEST", "SKULL": "HEAD"}
CODE_ON_TOP = {"LUNG": "CHEST"}


def test_every_cid_4031_concept_has_a_term_and_code() -> None:
    codes = {s.code: term for term, s in STANDARD.items()}
    for keyword in cid_concepts[4031]["SCT"]:
        for code, (meaning, _) in concepts["SCT"][keyword].items():
            assert code in codes, f"CID 4031 {code} {meaning!r} missing"
            assert STANDARD[codes[code]].meaning == meaning
    assert sum(s.cid4031 for s in STANDARD.values()) == len(cid_concepts[4031]["SCT"])
    for term in STANDARD:  # CS value: upper case, digits, at most 16 characters
        assert term.isalnum() and term.isupper() and len(term) <= 16


@pytest.mark.parametrize("term", sorted(STANDARD))
def test_term_code_and_meaning_all_derive_the_term(term: str) -> None:
    std = STANDARD[term]
    table = BodyPartTable()
    assert table.derive(make(BodyPartExamined=term)).value == TERM_ON_TOP.get(term, term)
    by_meaning = table.derive(make(BodyPartExamined=std.meaning))
    assert by_meaning.value == MEANING_ON_TOP.get(term, term)
    for code, scheme in ((std.code, "SCT"), (std.srt, "SRT")):
        if code is None:
            continue
        item = {"CodeValue": code, "CodingSchemeDesignator": scheme, "CodeMeaning": std.meaning}
        coded = table.derive(make(AnatomicRegionSequence=[item]))
        assert coded.value == CODE_ON_TOP.get(term, term), (code, scheme)


def test_real_studies_the_issue_names() -> None:
    table = BodyPartTable()
    for bpe, term in (
        ("ANKLE", "ANKLE"),
        ("Wrist", "WRIST"),
        ("ORBIT", "ORBIT"),
        ("SACRUM", "SACRUM"),
        ("Sacroiliac joint", "SIJOINT"),
        ("TMJ", "TMJ"),
    ):
        bp = table.derive(make(BodyPartExamined=bpe))
        assert bp.value == term and bp.standard is not None and bp.standard.term == term
    described = table.derive(make(StudyDescription="CT ORBITS W/O CONTRAST"))
    assert described.value == "ORBIT"
    assert table.derive(make(SeriesDescription="Feedback")).value is None  # no prefix of BACK
    coded = table.derive(
        make(
            AnatomicRegionSequence=[
                {
                    "CodeValue": "T-15750",
                    "CodingSchemeDesignator": "SRT",
                    "CodeMeaning": "Ankle joint",
                }
            ]
        )
    )
    assert coded.value == "ANKLE"  # legacy SNOMED RT code


def test_explain_shows_the_standard_mapping() -> None:
    rules = dicom_rules.parse(
        "version: 1\nrules:\n  - {name: ankle, when: {body_part: ANKLE}, then: {model: m}}\n"
    )
    explanation = rules.explain([series(BodyPartExamined="Ankle joint", Modality="DX")])
    body = explanation.to_json()["series"][0]["body_part"]
    assert body["value"] == "ANKLE" and body["synonym"] == "ANKLE JOINT"
    assert body["standard"] == {
        "term": "ANKLE",
        "code": ["70258002", "SCT", "Ankle joint"],
        "srt": "T-15750",
    }
    assert "PS3.16 Annex L term ANKLE = SCT 70258002 'Ankle joint'" in body["how"]
    assert [d.model for d in explanation.decisions] == ["m"]


def test_data_file_is_what_the_generator_writes() -> None:
    data = json.loads((ROOT / "dicom_rules" / "body_parts.json").read_text())
    assert "pydicom" in data["provenance"]["codes_from"]
    result = subprocess.run(
        [sys.executable, str(ROOT / "tools" / "generate_body_parts.py"), "--check"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
