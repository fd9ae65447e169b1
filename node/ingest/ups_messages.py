"""The data sets of UPS over DIMSE (PS3.4 Annex CC): DICOM JSON <-> pydicom, C-FIND identifiers.

The workitem table holds DICOM JSON (PS3.18 F.2); DIMSE carries pydicom data sets.  These
helpers convert between them for ``node.ingest.ups_scp`` and read a C-FIND identifier as the
``(search key, value)`` pairs of ``node.store.ups.SEARCH_KEYS``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pydicom.datadict import dictionary_VR
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue

from node.store.ups import SEARCH_KEYS, TAGS, strip_transaction, validate_dataset
from node.store.workitems import Workitem

__all__ = ["find_answer", "from_json", "identifier_query", "status", "to_json", "vr_of"]

_TXN = TAGS["TransactionUID"]
_ROOTS = {path[0] for path, _ in SEARCH_KEYS.values()}


def status(code: int, comment: str | None = None) -> Dataset:
    """A DIMSE status with an Error Comment (0000,0902) when ``comment`` is given."""
    ds = Dataset()
    ds.Status = code
    if comment:
        ds.ErrorComment = comment[:64]  # LO: at most 64 characters (PS3.5 6.2)
    return ds


def to_json(ds: Dataset | None) -> dict[str, Any]:
    """A received data set as checked DICOM JSON (upper-case tags, PS3.18 F.2)."""
    if ds is None:
        return {}
    return validate_dataset(ds.to_json_dict())


def from_json(data: Mapping[str, Any]) -> Dataset:
    """A pydicom data set of DICOM JSON ``data``."""
    return Dataset.from_json(dict(data))


def _text(element: Any) -> str:
    value = element.value
    if isinstance(value, MultiValue | list):
        return "\\".join(str(v) for v in value)
    return "" if value is None else str(value)


def identifier_query(identifier: Dataset) -> tuple[list[tuple[str, str]], bool]:
    """The ``(search key, value)`` pairs of a C-FIND identifier, and whether it asked to match
    on an attribute ainode does not match on (answered with the pending status 0xFF01).

    Keys with an empty value are return keys (universal matching, PS3.4 C.2.2.2.3).
    """
    query: list[tuple[str, str]] = []
    for key, (path, _) in SEARCH_KEYS.items():
        element: Any = identifier.get(int(path[0], 16))
        if element is None:
            continue
        if len(path) == 2:
            items = element.value or []
            element = items[0].get(int(path[1], 16)) if items else None
            if element is None:
                continue
        text = _text(element)
        if text:
            query.append((key, text))
    unsupported = False
    for element in identifier:
        tag = f"{element.tag:08X}"
        if tag in _ROOTS or tag == "00080005":
            continue
        if element.VR == "SQ":  # a sequence matches when one of its items' values is set
            leaves = [e for item in element.value or [] for e in item if e.VR != "SQ"]
            unsupported = unsupported or any(_text(e) for e in leaves)
        elif _text(element):
            unsupported = True
    return query, unsupported


def find_answer(item: Workitem, identifier: Dataset) -> Dataset:
    """The C-FIND response identifier: the requested attributes of ``item`` (PS3.4 C.4.1.1.3)."""
    stored = strip_transaction(item.dataset)
    out: dict[str, Any] = {}
    for element in identifier:
        tag = f"{element.tag:08X}"
        if tag == _TXN:
            continue
        out[tag] = stored.get(tag) or {"vr": element.VR}
    if "00080005" in stored:
        out["00080005"] = stored["00080005"]
    return from_json(out)


def vr_of(tag: str) -> str:
    """The dictionary VR of an 8-hex-digit ``tag`` (UN when pydicom does not know it)."""
    try:
        return str(dictionary_VR(int(tag, 16)))
    except KeyError:
        return "UN"
