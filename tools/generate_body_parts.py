"""Generate dicom_rules/body_parts.json: Body Part Examined defined terms and their SNOMED CT codes.

Run from the repository root: ``python tools/generate_body_parts.py`` (writes the file; ``--check``
exits 1 when the committed file differs from what the installed pydicom gives).

Sources
-------
* **CID 4031 "Common Anatomic Regions"** (PS3.16): every SNOMED CT concept of the context group,
  with its code meaning, read from pydicom's tables ``pydicom.sr._cid_dict.cid_concepts`` and
  ``pydicom.sr._concepts_dict.concepts``, which pydicom generates from the DICOM standard's own
  PS3.16 tables.  Nothing is typed in for these.
* **PS3.16 Annex L** (Correspondence of Anatomic Region Codes and Body Part Examined Defined
  Terms), in this order, the first source of a term winning:

  1. ``tools/data/dcmtk-annex-l.tsv``: DCMTK's mapping of Annex L Table L-1 terms to CID 4031
     concepts (maintained by OFFIS; see tools/extract_dcmtk_body_parts.py for its provenance).
     97 terms, ``term_from: "dcmtk"``.
  2. highdicom's copy of the whole of Table L-1 (``highdicom/_standard/anatomic_regions.json``,
     read through ``highdicom._standard_utils.get_anatomic_region_map``; MIT licence); the
     table's own code meaning is kept, and codes that pydicom's SNOMED CT concepts do not have
     (LOWERTRUNK, UPPERTRUNK: in no CID yet) are listed under ``codes_not_in_pydicom``.
     ``term_from: "highdicom"``.  ``tools/data/table-l1.tsv`` (tools/extract_table_l1.py) holds
     the rows on which two other public copies agree, as an independent cross-check
     (tests/dicom_rules/test_bodypart_standard.py).
  3. ``ANNEX_L_TERMS``: two older spellings kept for headers that still carry them (ARM, LEG),
     transcribed here (``term_from: "annex-l"``).
  4. A CID 4031 concept that still has no term gets its code meaning in upper case without
     punctuation, cut to 16 characters (``term_from: "meaning"``): an alias no scanner is known
     to write, so a region code or meaning still finds a term.  Where that alias is already a
     term (the concept "Hip", while Table L-1's HIP is the hip joint), the code is listed in
     that term's ``also_codes``.

  Checked on 2026-12-07: HIPJOINT, transcribed here before, is in none of the three copies of
  Table L-1 (all give HIP for the hip joint, as DCMTK does) and was removed; FACE and TIBIA are
  in all three.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

import highdicom
import pydicom
from pydicom.sr._cid_dict import cid_concepts, name_for_cid
from pydicom.sr._concepts_dict import concepts
from pydicom.sr._snomed_dict import mapping as snomed_to_srt

OUT = Path(__file__).resolve().parents[1] / "dicom_rules" / "body_parts.json"
DCMTK = Path(__file__).resolve().parent / "data" / "dcmtk-annex-l.tsv"
TABLE_L1 = Path(__file__).resolve().parent / "data" / "table-l1.tsv"

#: SNOMED CT code -> older Annex L spelling of a CID 4031 concept (Table L-1 now has UPPERARM and
#: LOWERLEG; PixelMed and dcm4chee-arc-light still list LEG, PixelMed and DICOMAnonymizer ARM).
ANNEX_L_TERMS: dict[str, str] = {
    "40983000": "ARM",  # Upper arm
    "30021000": "LEG",  # Lower leg
}

_NON_ALNUM = re.compile(r"[^0-9A-Z]+")


def _term(meaning: str) -> str:
    return _NON_ALNUM.sub("", meaning.upper())[:16]


def _tsv(path: Path) -> list[tuple[str, str, str]]:
    rows = []
    for line in path.read_text(encoding="utf-8").splitlines():
        if line and not line.startswith("#") and line != "term\tcode\tmeaning":
            term, code, meaning = line.split("\t")
            rows.append((term, code, meaning))
    return rows


def dcmtk_terms() -> list[tuple[str, str, str]]:
    """(term, SNOMED CT code, meaning) rows of tools/data/dcmtk-annex-l.tsv."""
    return _tsv(DCMTK)


def table_l1_terms() -> list[tuple[str, str, str]]:
    """(term, SNOMED CT code, Table L-1 meaning) rows of tools/data/table-l1.tsv."""
    return _tsv(TABLE_L1)


def highdicom_terms() -> list[tuple[str, str, str]]:
    """(term, code, meaning) of Table L-1 as highdicom carries it, in term order."""
    from highdicom._standard_utils import get_anatomic_region_map

    rows = []
    for term, (concept, _paired) in sorted(get_anatomic_region_map().items()):
        if concept.scheme_designator != "SCT":
            raise SystemExit(f"{term}: highdicom gives scheme {concept.scheme_designator}")
        rows.append((term, str(concept.value), str(concept.meaning)))
    return rows


def build() -> dict[str, object]:
    """The data file's content."""
    cid: dict[str, str] = {}  # CID 4031 code -> meaning (pydicom's)
    for keyword in cid_concepts[4031]["SCT"]:
        for code, (meaning, _cids) in concepts["SCT"][keyword].items():
            cid[code] = meaning
    entries: dict[str, dict[str, object]] = {}  # term -> entry

    def add(term: str, code: str, meaning: str, term_from: str) -> None:
        entries.setdefault(
            term,
            {
                "term": term,
                "code": code,
                "scheme": "SCT",
                "meaning": meaning,
                "cid4031": code in cid,
                "term_from": term_from,
            },
        )

    for term, code, _meaning in dcmtk_terms():
        if code not in cid:
            raise SystemExit(f"{term}: DCMTK's code {code} is not in pydicom's CID 4031")
        add(term, code, cid[code], "dcmtk")
    known = {code for entries in concepts["SCT"].values() for code in entries}
    only_highdicom = []  # newer Table L-1 codes that no PS3.16 CID (so no pydicom table) has yet
    for term, code, meaning in highdicom_terms():
        if code not in known:
            only_highdicom.append(f"{term} {code}")
        add(term, code, meaning, "highdicom")
    for code, term in ANNEX_L_TERMS.items():
        add(term, code, cid[code], "annex-l")
    have_term = {str(e["code"]) for e in entries.values()}
    for code, meaning in cid.items():  # CID 4031 concepts no source gives a term: an alias
        if code in have_term:
            continue
        alias = _term(meaning)
        if alias in entries:  # e.g. "Hip" (29836001), while Table L-1's HIP is the hip joint
            also = entries[alias].setdefault("also_codes", [])
            assert isinstance(also, list)
            also.append({"code": code, "meaning": meaning})
        else:
            add(alias, code, meaning, "meaning")
    for entry in entries.values():  # legacy SNOMED RT codes (PS3.16 Annex O), where known
        srt = snomed_to_srt["SCT"].get(str(entry["code"]))
        if srt:
            entry["srt"] = srt
    return {
        "provenance": {
            "standard": "DICOM PS3.16: CID 4031 "
            f"({name_for_cid[4031]}) and Annex L (Body Part Examined defined terms)",
            "codes_from": f"pydicom {pydicom.__version__} (pydicom.sr._cid_dict, "
            "pydicom.sr._concepts_dict, pydicom.sr._snomed_dict; generated by pydicom from "
            "the standard's tables; MIT licence)",
            "generator": "tools/generate_body_parts.py",
            "codes_not_in_pydicom": only_highdicom,
            "term_from": "dcmtk: DCMTK's Annex L Table L-1 mapping (tools/data/dcmtk-annex-l.tsv, "
            "its provenance in that file); highdicom: Table L-1 as highdicom "
            f"{highdicom.__version__} carries it (highdicom/_standard/anatomic_regions.json; "
            "MIT licence; cross-checked against tools/data/table-l1.tsv); annex-l: an older "
            "Annex L "
            "spelling (ARM, LEG); meaning: an alias, the code meaning upper-cased without "
            "punctuation, cut to 16 characters",
        },
        "entries": sorted(entries.values(), key=lambda e: str(e["term"])),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="compare, do not write")
    args = parser.parse_args()
    text = json.dumps(build(), indent=1, ensure_ascii=False) + "\n"
    if args.check:
        same = OUT.is_file() and OUT.read_text(encoding="utf-8") == text
        print("up to date" if same else f"{OUT} differs from the generator's output")
        return 0 if same else 1
    OUT.write_text(text, encoding="utf-8")
    print(f"wrote {OUT}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
