"""Body part normalisation: one canonical ``body_part`` per series, and how it was derived.

Order of evidence (the first that gives an answer wins):

1. BodyPartExamined (0018,0015), looked up in the synonym table (a value not in the table is
   used as written, upper-cased);
2. AnatomicRegionSequence (0008,2218) codes, at the top level or in the shared / per-frame
   functional groups' FrameAnatomySequence of enhanced multi-frame objects (PS3.3 C.7.6.16.2.8),
   by code value (SNOMED CT / SRT) or by keywords in CodeMeaning;
3. keywords in SeriesDescription, ProtocolName, StudyDescription,
   RequestedProcedureDescription, PerformedProcedureStepDescription (in that order).

Canonical names follow the Body Part Examined defined terms of PS3.16 Annex L (CHEST, HEAD,
ABDOMEN, WHOLEBODY ...).  The table is documented in docs/rules.md and can be extended or
overridden per rule file (``body_parts:``).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from dicom_rules.model import AttributePath
from dicom_rules.paths import read_values

__all__ = ["BUILTIN_SYNONYMS", "BodyPart", "BodyPartTable", "normalise"]

#: canonical -> synonyms (matched after normalisation: upper case, punctuation -> space).
BUILTIN_SYNONYMS: dict[str, tuple[str, ...]] = {
    "CHEST": (
        "THORAX",
        "THORACIC",
        "LUNG",
        "LUNGS",
        "PULMONARY",
        "CXR",
        "TORAX",
        "THORAKS",
        "BRUST",
        "POUMON",
        "POUMONS",
        "PECHO",
        "TORACE",
        "POLMONE",
        "POLMONI",
    ),
    "CHESTABDOMEN": ("CHEST ABDOMEN", "THORAX ABDOMEN", "CHEST ABD", "THORAX ABD"),
    "CHESTABDPELVIS": (
        "CHEST ABDOMEN PELVIS",
        "CHEST ABD PELVIS",
        "THORAX ABDOMEN PELVIS",
        "THORAX ABD PELVIS",
        "CAP",
        "CHEST TO PELVIS",
        "THORAX TO PELVIS",
    ),
    "ABDOMEN": ("ABD", "ABDO", "ABDOMINAL", "LIVER", "ABDOMEN", "BAUCH", "ABDOMINALE"),
    "ABDOMENPELVIS": ("ABDOMEN PELVIS", "ABD PELVIS", "ABDO PELVIS", "ABDOMEN BECKEN"),
    "PELVIS": ("PELVIC", "BECKEN", "BASSIN"),
    "HEAD": (
        "SKULL",
        "CRANIUM",
        "CRANIAL",
        "SCHAEDEL",
        "SCHADEL",
        "CRANE",
        "DENTAL",
        "SINUS",
        "SINUSES",
    ),
    "BRAIN": ("CEREBRAL", "CEREBRUM", "NEURO", "GEHIRN", "CERVEAU", "CEREBRO"),
    "HEADNECK": ("HEAD NECK", "HEAD AND NECK", "HEADNECK", "HN"),
    "NECK": ("HALS", "COU", "CUELLO"),
    "CSPINE": ("C SPINE", "CERVICAL SPINE", "HWS"),
    "TSPINE": ("T SPINE", "THORACIC SPINE", "BWS"),
    "LSPINE": ("L SPINE", "LUMBAR SPINE", "LUMBAR", "LWS"),
    "SPINE": ("WIRBELSAEULE", "VERTEBRAL COLUMN"),
    "WHOLEBODY": ("WHOLE BODY", "WB", "TOTAL BODY", "GANZKOERPER", "CORPS ENTIER"),
    "HEART": ("CARDIAC", "CORONARY", "CARDIO", "CORONARIES", "HERZ", "COEUR"),
    "BREAST": ("MAMMA", "MAMMO", "MAMMOGRAPHY", "SEIN"),
    "KNEE": ("KNIE", "GENOU"),
    "SHOULDER": ("SCHULTER", "EPAULE"),
    "HIP": ("HUEFTE", "HANCHE"),
    "EXTREMITY": ("LIMB", "ARM", "LEG"),
}

#: code value -> canonical, for AnatomicRegionSequence (SNOMED CT "SCT" and legacy SRT codes).
BUILTIN_CODES: dict[str, str] = {
    "51185008": "CHEST",  # Thorax
    "43799004": "CHEST",  # Chest
    "39607008": "CHEST",  # Lung
    "T-D3000": "CHEST",
    "T-28000": "CHEST",
    "69536005": "HEAD",
    "T-D1100": "HEAD",
    "12738006": "BRAIN",
    "T-A0100": "BRAIN",
    "818981001": "ABDOMEN",
    "113345001": "ABDOMEN",
    "T-D4000": "ABDOMEN",
    "12921003": "PELVIS",
    "816092008": "PELVIS",
    "T-D6000": "PELVIS",
    "80891009": "HEART",
    "T-32000": "HEART",
    "45048000": "NECK",
    "T-D1600": "NECK",
    "38266002": "WHOLEBODY",
    "416775004": "CHESTABDPELVIS",
    "76752008": "BREAST",
    "T-04000": "BREAST",
}

_NON_ALNUM = re.compile(r"[^0-9A-Z]+")


def normalise(text: str) -> str:
    """Upper case, every run of non-alphanumerics to one space, trimmed ("L_SPINE" -> "L SPINE")."""
    return _NON_ALNUM.sub(" ", text.upper()).strip()


@dataclass(frozen=True, slots=True)
class BodyPart:
    """The canonical body part of a series and the evidence for it.

    ``source`` is the attribute that decided (``BodyPartExamined``, ``AnatomicRegionSequence``,
    ``SeriesDescription`` ...) or None; ``raw`` the value seen there; ``synonym`` the table
    entry that matched (None when the value was used as written or by code).
    """

    value: str | None
    source: str | None = None
    tag: str | None = None
    raw: str | None = None
    synonym: str | None = None
    how: str = "no BodyPartExamined, anatomic region code or body-part keyword in descriptions"

    def to_json(self) -> dict[str, Any]:
        """JSON form used by ``explain``."""
        return {
            "value": self.value,
            "source": self.source,
            "tag": self.tag,
            "raw": self.raw,
            "synonym": self.synonym,
            "how": self.how,
        }


def _path(*tags: int) -> AttributePath:
    return AttributePath(segments=tags)


_BPE = _path(0x00180015)
_ARS = 0x00082218
_CODE_VALUE = 0x00080100
_CODE_MEANING = 0x00080104
_FRAME_ANATOMY = 0x00209071
_REGION_PATHS: tuple[tuple[str, AttributePath, AttributePath], ...] = tuple(
    (name, _path(*prefix, _ARS, _CODE_VALUE), _path(*prefix, _ARS, _CODE_MEANING))
    for name, prefix in (
        ("AnatomicRegionSequence", ()),
        (
            "SharedFunctionalGroupsSequence.FrameAnatomySequence.AnatomicRegionSequence",
            (0x52009229, _FRAME_ANATOMY),
        ),
        (
            "PerFrameFunctionalGroupsSequence.FrameAnatomySequence.AnatomicRegionSequence",
            (0x52009230, _FRAME_ANATOMY),
        ),
    )
)
_TEXT_FIELDS: tuple[tuple[str, str, AttributePath], ...] = (
    ("SeriesDescription", "0008,103E", _path(0x0008103E)),
    ("ProtocolName", "0018,1030", _path(0x00181030)),
    ("StudyDescription", "0008,1030", _path(0x00081030)),
    ("RequestedProcedureDescription", "0032,1060", _path(0x00321060)),
    ("PerformedProcedureStepDescription", "0040,0254", _path(0x00400254)),
)


class BodyPartTable:
    """The synonym table in effect for one rule file (built-in, plus the file's ``body_parts``).

    Parameters
    ----------
    overrides:
        canonical -> synonyms from the rule file; a synonym listed there maps to that canonical
        name even if the built-in table maps it elsewhere.
    """

    def __init__(self, overrides: Mapping[str, tuple[str, ...]] | None = None) -> None:
        table: dict[str, str] = {}
        for canonical, synonyms in BUILTIN_SYNONYMS.items():
            table[normalise(canonical)] = canonical
            for s in synonyms:
                table[normalise(s)] = canonical
        for canonical, synonyms in (overrides or {}).items():
            canon = normalise(canonical).replace(" ", "")
            table[normalise(canonical)] = canon
            for s in synonyms:
                if normalise(s):
                    table[normalise(s)] = canon
        self.table = table
        # phrases by token tuple, longest first
        self._phrases = sorted(
            ((tuple(k.split(" ")), v) for k, v in table.items() if k),
            key=lambda kv: (-len(kv[0]), -len(" ".join(kv[0]))),
        )
        self._by_first: dict[str, list[tuple[tuple[str, ...], str]]] = {}
        for tokens, canon in self._phrases:
            self._by_first.setdefault(tokens[0], []).append((tokens, canon))

    def exact(self, raw: str) -> tuple[str, str | None]:
        """Canonical name for a BodyPartExamined value and the synonym that matched (or None)."""
        key = normalise(raw)
        canon = self.table.get(key) or self.table.get(key.replace(" ", ""))
        if canon is not None:
            return canon, key
        return key.replace(" ", "_") if key else raw.strip().upper(), None

    def find(self, text: str) -> tuple[str, str] | None:
        """The best body-part keyword in free text: (canonical, synonym) or None.

        Whole phrases match token by token; a single keyword of 4+ letters also matches the
        start of a token ("THORAXROUTINE").  The longest phrase wins, then the earliest.
        """
        tokens = normalise(text).split(" ")
        best: tuple[int, int, str, str] | None = None  # (-ntokens, position, canon, synonym)
        for i, tok in enumerate(tokens):
            if not tok:
                continue
            for cand_tokens, canon in self._by_first.get(tok, ()):
                n = len(cand_tokens)
                if tuple(tokens[i : i + n]) == cand_tokens:
                    key = (-n, i, canon, " ".join(cand_tokens))
                    if best is None or key[:2] < best[:2]:
                        best = key
                    break
            if best is None or best[0] == -1:
                for cand_tokens, canon in self._phrases:
                    if len(cand_tokens) != 1:
                        continue
                    word = cand_tokens[0]
                    if len(word) >= 4 and tok != word and tok.startswith(word):
                        key = (-1, i, canon, word)
                        if best is None or key[:2] < best[:2]:
                            best = key
                        break
        if best is None:
            return None
        return best[2], best[3]

    def derive(self, header: Any) -> BodyPart:
        """The canonical body part of the series whose header is ``header`` (never raises)."""
        vals = read_values(header, _BPE)
        for v in vals or ():
            if isinstance(v, str) and v.strip():
                canon, syn = self.exact(v)
                how = (
                    f"BodyPartExamined '{v.strip()}' is a synonym of {canon}"
                    if syn is not None and syn != canon
                    else f"BodyPartExamined '{v.strip()}'"
                    + ("" if syn is not None else " (not in the synonym table; used as written)")
                )
                return BodyPart(canon, "BodyPartExamined", "0018,0015", v.strip(), syn, how)
        for name, code_path, meaning_path in _REGION_PATHS:
            for code in read_values(header, code_path) or ():
                if isinstance(code, str) and code.strip() in BUILTIN_CODES:
                    canon = BUILTIN_CODES[code.strip()]
                    return BodyPart(
                        canon,
                        name,
                        "0008,2218",
                        code.strip(),
                        None,
                        f"no BodyPartExamined; anatomic region code {code.strip()} is {canon}",
                    )
            for meaning in read_values(header, meaning_path) or ():
                if isinstance(meaning, str):
                    hit = self.find(meaning)
                    if hit:
                        return BodyPart(
                            hit[0],
                            name,
                            "0008,2218",
                            meaning.strip(),
                            hit[1],
                            f"no BodyPartExamined; anatomic region '{meaning.strip()}' "
                            f"contains '{hit[1]}' -> {hit[0]}",
                        )
        for name, tag, path in _TEXT_FIELDS:
            for text in read_values(header, path) or ():
                if isinstance(text, str):
                    hit = self.find(text)
                    if hit:
                        return BodyPart(
                            hit[0],
                            name,
                            tag,
                            text.strip(),
                            hit[1],
                            f"no BodyPartExamined; {name} '{text.strip()}' contains "
                            f"'{hit[1]}' -> {hit[0]}",
                        )
        return BodyPart(None)
