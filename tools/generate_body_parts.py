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
  Terms): the Body Part Examined term of a concept is its code meaning in upper case with every
  non-alphanumeric removed, cut to 16 characters (the CS VR limit), except where Annex L chose a
  shorter or different term; those exceptions are listed in ``ANNEX_L_TERMS`` (keyed by SNOMED CT
  code) and Annex L terms for regions outside CID 4031 in ``ANNEX_L_EXTRA`` (keyed by the code
  meaning, whose code is looked up in pydicom's concept dictionary, never typed in).  Both lists
  were transcribed from Annex L; the standard's XML could not be downloaded where this was
  written, so each entry records ``term_from`` ("annex-l" transcribed, "meaning" derived by the
  rule) for a later check against the published table.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

import pydicom
from pydicom.sr._cid_dict import cid_concepts, name_for_cid
from pydicom.sr._concepts_dict import concepts
from pydicom.sr._snomed_dict import mapping as snomed_to_srt

OUT = Path(__file__).resolve().parents[1] / "dicom_rules" / "body_parts.json"

#: SNOMED CT code -> Annex L Body Part Examined term, where it is not the upper-cased meaning.
ANNEX_L_TERMS: dict[str, str] = {
    "818982008": "ABDOMENPELVIS",  # Abdomen and Pelvis
    "85856004": "ACJOINT",  # Acromioclavicular joint
    "70258002": "ANKLE",  # Ankle joint
    "40983000": "ARM",  # Upper arm
    "28273000": "BILEDUCT",  # Bile duct
    "89837001": "BLADDER",  # Bladder
    "122494005": "CSPINE",  # Cervical spine
    "1217257000": "CTSPINE",  # Cervico-thoracic spine
    "416550000": "CHESTABDOMEN",  # Chest and Abdomen
    "416775004": "CHESTABDPELVIS",  # Chest, Abdomen and Pelvis
    "16953009": "ELBOW",  # Elbow joint
    "38266002": "WHOLEBODY",  # Entire body
    "774007": "HEADNECK",  # Head and Neck
    "24136001": "HIPJOINT",  # Hip joint
    "361078006": "IAC",  # Internal Auditory Canal
    "661005": "JAW",  # Jaw region
    "30021000": "LEG",  # Lower leg
    "122496007": "LSPINE",  # Lumbar spine
    "1217253001": "LSSPINE",  # Lumbo-sacral spine
    "417437006": "NECKCHEST",  # Neck and Chest
    "416152001": "NECKCHESTABDOMEN",  # Neck, Chest and Abdomen
    "416319003": "NECKCHESTABDPELV",  # Neck, Chest, Abdomen and Pelvis
    "363654007": "ORBIT",  # Orbital structure
    "45289007": "PAROTID",  # Parotid gland
    "1217254007": "SSPINE",  # Sacro-coccygeal Spine
    "39723000": "SIJOINT",  # Sacroiliac joint
    "42575006": "SELLA",  # Sella turcica
    "7844006": "SCJOINT",  # Sternoclavicular joint
    "54019009": "SUBMANDIBULAR",  # Submandibular gland
    "53620006": "TMJ",  # Temporomandibular joint
    "122495006": "TSPINE",  # Thoracic spine
    "1217256009": "TLSPINE",  # Thoraco-lumbar spine
    "74670003": "WRIST",  # Wrist joint
}

#: Annex L terms of regions outside CID 4031: term -> SNOMED CT code meaning (code looked up).
ANNEX_L_EXTRA: dict[str, str] = {
    "ADRENAL": "Adrenal gland",
    "AORTA": "Aorta",
    "AXILLA": "Axilla",
    "BACK": "Back",
    "BRAIN": "Brain",
    "BUTTOCK": "Buttock",
    "CALF": "Structure of calf of leg (body structure)",
    "CAROTID": "Carotid Artery",
    "CEREBELLUM": "Cerebellum",
    "CERVIX": "Cervix",
    "CHEEK": "Cheek",
    "CIRCLEOFWILLIS": "Circle of Willis",
    "CORNEA": "Cornea",
    "CORONARYARTERY": "Coronary artery",
    "EAR": "Ear",
    "EYELID": "Eyelid",
    "FACE": "Face",
    "KIDNEY": "Kidney",
    "LIVER": "Liver",
    "LUNG": "Lung",
    "MOUTH": "Mouth",
    "NOSE": "Nose",
    "OVARY": "Ovary",
    "PENIS": "Penis",
    "PHARYNX": "Pharynx",
    "SCALP": "Scalp",
    "SCLERA": "Sclera",
    "SCROTUM": "Scrotum",
    "SPLEEN": "Spleen",
    "TESTIS": "Testis",
    "THYMUS": "Thymus",
    "THYROID": "Thyroid",
    "TIBIA": "Tibia",
    "TONGUE": "Tongue",
    "ULNA": "Ulna",
    "UTERUS": "Uterus",
    "VAGINA": "Vagina",
    "VULVA": "Vulva",
}

_NON_ALNUM = re.compile(r"[^0-9A-Z]+")


def _term(meaning: str) -> str:
    return _NON_ALNUM.sub("", meaning.upper())[:16]


def _sct_by_meaning() -> dict[str, tuple[str, str]]:
    """lower-case meaning -> (code, meaning) over pydicom's SNOMED CT concepts."""
    out: dict[str, tuple[str, str]] = {}
    for entries in concepts["SCT"].values():
        for code, (meaning, _cids) in entries.items():
            out.setdefault(meaning.lower(), (code, meaning))
    return out


def build() -> dict[str, object]:
    """The data file's content."""
    entries: dict[str, dict[str, object]] = {}
    for keyword in cid_concepts[4031]["SCT"]:
        for code, (meaning, _cids) in concepts["SCT"][keyword].items():
            annex = ANNEX_L_TERMS.get(code)
            term = annex or _term(meaning)
            entries[code] = {
                "term": term,
                "code": code,
                "scheme": "SCT",
                "meaning": meaning,
                "cid4031": True,
                "term_from": "annex-l" if annex else "meaning",
            }
    by_meaning = _sct_by_meaning()
    missing = []
    for term, meaning in ANNEX_L_EXTRA.items():
        hit = by_meaning.get(meaning.lower())
        if hit is None:
            missing.append(meaning)
            continue
        code, exact = hit
        entries.setdefault(
            code,
            {
                "term": term,
                "code": code,
                "scheme": "SCT",
                "meaning": exact,
                "cid4031": False,
                "term_from": "annex-l",
            },
        )
    for entry in entries.values():  # legacy SNOMED RT codes (PS3.16 Annex O), where known
        srt = snomed_to_srt["SCT"].get(str(entry["code"]))
        if srt:
            entry["srt"] = srt
    if missing:
        raise SystemExit(f"not in pydicom's SNOMED CT concepts: {', '.join(missing)}")
    terms = [e["term"] for e in entries.values()]
    dupes = sorted({t for t in terms if terms.count(t) > 1})
    if dupes:
        raise SystemExit(f"Body Part Examined terms used twice: {', '.join(map(str, dupes))}")
    return {
        "provenance": {
            "standard": "DICOM PS3.16: CID 4031 "
            f"({name_for_cid[4031]}) and Annex L (Body Part Examined defined terms)",
            "codes_from": f"pydicom {pydicom.__version__} (pydicom.sr._cid_dict, "
            "pydicom.sr._concepts_dict, pydicom.sr._snomed_dict; generated by pydicom from "
            "the standard's tables; MIT licence)",
            "generator": "tools/generate_body_parts.py",
            "term_from": "annex-l: transcribed from PS3.16 Annex L; meaning: the code meaning "
            "upper-cased without punctuation, cut to 16 characters",
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
