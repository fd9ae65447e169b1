"""The body-part table covers PS3.16 Annex L and CID 4031, generated from pydicom's tables."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from pydicom.sr._cid_dict import cid_concepts
from pydicom.sr._concepts_dict import concepts

import dicom_rules
from dicom_rules import BodyPartTable
from dicom_rules.bodypart import BUILTIN_CODES, STANDARD, StandardBodyPart, normalise
from tests.dicom_rules.headers import make, series

ROOT = Path(__file__).resolve().parents[2]

#: where ainode's multilingual synonyms deliberately win over a standard term (documented)
TERM_ON_TOP = {
    "ARM": "EXTREMITY",
    "LEG": "EXTREMITY",
    "LIVER": "ABDOMEN",
    "LUNG": "CHEST",
    "SKULL": "HEAD",
    "THORAX": "CHEST",
    "LUMBAR": "LSPINE",
}
MEANING_ON_TOP = {"LIVER": "ABDOMEN", "LUNG": "CHEST", "SKULL": "HEAD"}


def test_every_cid_4031_concept_has_a_term_and_code() -> None:
    codes: dict[str, str] = {}  # the first term of a code, as the table finds it (DCMTK's first)
    for term, s in STANDARD.items():
        for c in (s.code, *s.also_codes):
            codes.setdefault(c, term)
    for keyword in cid_concepts[4031]["SCT"]:
        for code, (meaning, _) in concepts["SCT"][keyword].items():
            assert code in codes, f"CID 4031 {code} {meaning!r} missing"
            std = STANDARD[codes[code]]
            assert std.meaning == meaning or code in std.also_codes
    covered = {c for s in STANDARD.values() if s.cid4031 for c in (s.code, *s.also_codes)}
    assert len(covered) == len(cid_concepts[4031]["SCT"])
    for term in STANDARD:  # CS value: upper case, digits, at most 16 characters
        assert term.isalnum() and term.isupper() and len(term) <= 16


def _first(matches: Callable[[StandardBodyPart], bool]) -> str:
    """The first term (in the table's order: DCMTK's Table L-1 terms first) that ``matches``:
    where terms share a code (ARM and UPPERARM, ENDOURETERIC and URETER) the code finds it."""
    return next(t for t, s in STANDARD.items() if matches(s))


def _by_meaning(std: StandardBodyPart) -> str:
    """The term a header carrying ``std.meaning`` finds: a term spelt like the meaning, else
    the first term with that meaning."""
    key = normalise(std.meaning)
    if key.replace(" ", "") in STANDARD:
        return key.replace(" ", "")
    return _first(lambda s: normalise(s.meaning) == key)


@pytest.mark.parametrize("term", sorted(STANDARD))
def test_term_code_and_meaning_all_derive_the_term(term: str) -> None:
    std = STANDARD[term]
    table = BodyPartTable()
    assert table.derive(make(BodyPartExamined=term)).value == TERM_ON_TOP.get(term, term)
    by_meaning = table.derive(make(BodyPartExamined=std.meaning))
    first = _by_meaning(std)
    if normalise(std.meaning).replace(" ", "") == first:  # the meaning is spelt like a term
        first = TERM_ON_TOP.get(first, first)
    assert by_meaning.value == MEANING_ON_TOP.get(first, first)
    for code, scheme in ((std.code, "SCT"), (std.srt, "SRT")):
        if code is None:
            continue
        item = {"CodeValue": code, "CodingSchemeDesignator": scheme, "CodeMeaning": std.meaning}
        coded = table.derive(make(AnatomicRegionSequence=[item]))
        first = _first(lambda s, c=code: c in (s.code, s.srt, *s.also_codes))
        assert coded.value == BUILTIN_CODES.get(code, first), (code, scheme)


def test_real_studies_the_issue_names() -> None:
    table = BodyPartTable()
    for bpe, term in (
        ("ANKLE", "ANKLE"),
        ("Wrist", "WRIST"),
        ("ORBIT", "ORBIT"),
        ("SACRUM", "SSPINE"),  # Table L-1 (DCMTK, PixelMed): SSPINE is the sacrum
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
    explanation = dicom_rules.explain(
        rules, [series(BodyPartExamined="Ankle joint", Modality="DX")]
    )
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


def test_table_l1_terms_are_dcmtks() -> None:
    """Every term of DCMTK's Annex L Table L-1 mapping is in the table with DCMTK's code, and the
    data file says where it came from (licence, commit, DCMTK's files)."""
    sys.path.insert(0, str(ROOT / "tools"))
    try:
        from generate_body_parts import DCMTK, dcmtk_terms
    finally:
        sys.path.remove(str(ROOT / "tools"))
    head = DCMTK.read_text(encoding="utf-8")
    assert "DCMTK-COPYRIGHT" in head and "# commit: " in head and "cid4031e.cc" in head
    assert (ROOT / "tools" / "data" / "DCMTK-COPYRIGHT").is_file()
    rows = dcmtk_terms()
    assert len(rows) >= 90
    for term, code, _meaning in rows:
        assert STANDARD[term].code == code and STANDARD[term].term_from == "dcmtk", term


def test_every_table_l1_term_is_in_the_table_and_two_other_copies_agree() -> None:
    """Table L-1 as highdicom carries it is in the table, each term with highdicom's code where
    DCMTK does not give one first.  Two other public copies (DICOMAnonymizer's transcription,
    dcm4chee-arc-light's list) agree on 311 of its terms, with the same codes but where highdicom
    has the newer one; HIPJOINT is in none of them and is gone, FACE and TIBIA are in all."""
    sys.path.insert(0, str(ROOT / "tools"))
    try:
        from generate_body_parts import TABLE_L1, highdicom_terms, table_l1_terms
    finally:
        sys.path.remove(str(ROOT / "tools"))
    table = {term: code for term, code, _meaning in highdicom_terms()}
    assert len(table) >= 300
    for term, code in table.items():
        std = STANDARD[term]
        assert std.code == code or std.term_from == "dcmtk", term
    head = TABLE_L1.read_text(encoding="utf-8")
    assert "mmiv-center/DICOMAnonymizer" in head and "Unlicense" in head
    assert "dcm4che/dcm4chee-arc-light" in head and "MPL 1.1" in head
    assert head.count(" commit ") == 2
    rows = table_l1_terms()
    assert len(rows) >= 300
    newer = {"CHEST": "816094009", "THORAX": "816094009", "DESCAORTA": "281130003"}
    for term, code, _meaning in rows:
        assert table[term] == newer.get(term, code), term
    for term, code in (("FACE", "89545001"), ("TIBIA", "12611008"), ("HIP", "24136001")):
        assert STANDARD[term].code == code and table[term] == code, term
    assert "HIPJOINT" not in STANDARD and "HIPJOINT" not in table
    assert "HIPJOINT" not in {term for term, _, _ in rows}
    # terms outside CID 4031 that a real study carries now have their standard code
    assert STANDARD["ACA"].code == "60176003" and STANDARD["SELLA"].code == "42575006"
