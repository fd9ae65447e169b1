"""SNOMED CT codes for a bundle's ``channel_def`` names, from DICOM's own tables.

The table is PS3.16 CID 7151 "Segmentation Property Types" as pydicom ships it
(``pydicom.sr.codedict``, generated from the DICOM standard's DocBook, updated with each
pydicom release): no hand-kept list.  A channel name (``"spleen"``, ``"left kidney"``,
``"lung_nodule"``) is turned into the table's keyword (``Spleen``, ``LeftKidney``...); when the
whole name is not a keyword, its longest trailing run of words that is (``Nodule``) is taken.

The category (CID 7150) follows the sub-table the type comes from: CID 7159 "Lesion
Segmentation Types" gives *Morphologically Abnormal Structure*, CID 7157 "Device Segmentation
Types" *Physical Object*, everything else *Anatomical Structure*.

A name that matches nothing keeps the generic *Tissue* type, and a bundle's ``ainode.yaml``
``labels`` entry (category, type, colour) overrides any of this per label.
"""

from __future__ import annotations

import re
from functools import lru_cache

from node.types import Code

__all__ = ["segment_codes"]

_GENERIC_TYPE = Code("85756007", "SCT", "Tissue")
_ANATOMY = Code("91723000", "SCT", "Anatomical Structure")


#: Words the table spells differently (its keyword for "tumor" is ``Neoplasm``).
_SYNONYMS = {"tumor": "neoplasm", "tumour": "neoplasm"}


def _keyword(words: list[str]) -> str:
    words = [_SYNONYMS.get(w.lower(), w) for w in words]
    return "".join(w[:1].upper() + w[1:].lower() for w in words)


@lru_cache(maxsize=1)
def _tables() -> tuple[object, object, object, object]:
    from pydicom.sr.codedict import Collection, codes

    return Collection("CID7151"), Collection("CID7159"), Collection("CID7157"), codes.cid7150


def _code(c: object) -> Code:
    return Code(str(c.value), str(c.scheme_designator), str(c.meaning))  # type: ignore[attr-defined]


def segment_codes(name: str) -> tuple[Code, Code, bool]:
    """(category, type, found) for a segment called ``name`` (PS3.16 CID 7150 / CID 7151).

    ``found`` is False when no keyword of CID 7151 matched and the generic codes were used.
    """
    types, lesions, devices, categories = _tables()
    words = [w for w in re.split(r"[^A-Za-z0-9]+", name) if w]
    for start in range(len(words)):
        keyword = _keyword(words[start:])
        if keyword and keyword in types.dir():  # type: ignore[attr-defined]
            property_type = _code(getattr(types, keyword))
            if keyword in lesions.dir():  # type: ignore[attr-defined]
                category = _code(categories.MorphologicallyAbnormalStructure)  # type: ignore[attr-defined]
            elif keyword in devices.dir():  # type: ignore[attr-defined]
                category = _code(categories.PhysicalObject)  # type: ignore[attr-defined]
            else:
                category = _code(categories.AnatomicalStructure)  # type: ignore[attr-defined]
            return category, property_type, True
    return _ANATOMY, _GENERIC_TYPE, False
