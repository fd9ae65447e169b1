"""Attribute paths: parsing the compact spelling, printing it, and reading values from DICOM JSON.

Spelling (one string; segments joined by ``.``):

* a keyword of the DICOM data dictionary: ``BodyPartExamined``
* a tag in hex: ``0018,0015``, ``(0018,0015)`` or ``00180015``
* a private tag by creator: ``0019[GEMS_ACQU_01]0C`` (group, private creator, element byte;
  ``0019[GEMS_ACQU_01]100C`` and ``0019[GEMS_ACQU_01]xx0C`` are accepted too)
* one of the computed attributes ``body_part``, ``orientation``, ``instance_count`` (alone)

A header is the DICOM JSON model (PS3.18 F.2): a mapping from 8-hex-digit tags to
``{"vr": ..., "Value": [...]}``.  Reading never raises: whatever the content, a path yields a
(possibly empty) list of values, or ``None`` when the tag is absent.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from pydicom.datadict import dictionary_VR, keyword_for_tag, tag_for_keyword

from dicom_rules.model import SPECIAL_ATTRIBUTES, AttributePath, PrivateTag, Segment

__all__ = [
    "PathSyntaxError",
    "format_path",
    "format_segment",
    "parse_path",
    "parse_segment",
    "read_values",
    "vr_of",
]

_HEX_TAG = re.compile(r"^\(?([0-9A-Fa-f]{4}),?([0-9A-Fa-f]{4})\)?$")
_PRIVATE = re.compile(
    r"^([0-9A-Fa-f]{4})\[([^\[\]]+)\](?:[xX]{2}|[0-9A-Fa-f]{2})?([0-9A-Fa-f]{2})$"
)
_KEYWORD = re.compile(r"^[A-Za-z][A-Za-z0-9]*$")


class PathSyntaxError(ValueError):
    """A path string cannot be understood; the message says why (and may hint)."""


def parse_segment(text: str) -> Segment:
    """Parse one path segment (keyword, hex tag, or private tag).

    Raises
    ------
    PathSyntaxError
        Unknown keyword, malformed hex, even group for a private tag.
    """
    text = text.strip()
    m = _PRIVATE.match(text)
    if m:
        group = int(m.group(1), 16)
        if group % 2 == 0:
            raise PathSyntaxError(
                f"private tags have an odd group; '{m.group(1)}' is even (PS3.5 7.8)"
            )
        creator = m.group(2).strip()
        if not creator:
            raise PathSyntaxError(f"empty private creator in '{text}'")
        return PrivateTag(group=group, creator=creator, element=int(m.group(3), 16))
    m = _HEX_TAG.match(text)
    if m:
        return (int(m.group(1), 16) << 16) | int(m.group(2), 16)
    if _KEYWORD.match(text):
        tag = tag_for_keyword(text)
        if tag is None:
            raise PathSyntaxError(f"unknown DICOM keyword '{text}'")
        return int(tag)
    raise PathSyntaxError(
        f"cannot read '{text}' as a DICOM keyword, a hex tag like '0018,0015' or a private "
        "tag like '0019[GEMS_ACQU_01]0C'"
    )


def _split(text: str) -> list[str]:
    parts: list[str] = []
    depth = 0
    cur: list[str] = []
    for ch in text:
        if ch == "[":
            depth += 1
        elif ch == "]":
            depth = max(0, depth - 1)
        if ch == "." and depth == 0:
            parts.append("".join(cur))
            cur = []
        else:
            cur.append(ch)
    parts.append("".join(cur))
    return parts


def parse_path(text: str) -> AttributePath:
    """Parse a full path string (see the module docstring)."""
    text = text.strip()
    if text in SPECIAL_ATTRIBUTES:
        return AttributePath(special=text)
    if not text:
        raise PathSyntaxError("empty attribute path")
    parts = _split(text)
    if any(not p.strip() for p in parts):
        raise PathSyntaxError(f"empty segment in path '{text}'")
    return AttributePath(segments=tuple(parse_segment(p) for p in parts))


def format_segment(seg: Segment) -> str:
    """Canonical spelling of a segment: keyword when the dictionary has one, else hex."""
    if isinstance(seg, PrivateTag):
        return f"{seg.group:04X}[{seg.creator}]{seg.element:02X}"
    kw = keyword_for_tag(seg) if (seg >> 16) % 2 == 0 else ""
    if kw and tag_for_keyword(kw) == seg:
        return kw
    return f"{seg >> 16:04X},{seg & 0xFFFF:04X}"


def format_path(path: AttributePath) -> str:
    """Canonical spelling of a path (round-trips through ``parse_path``)."""
    if path.special is not None:
        return path.special
    return ".".join(format_segment(s) for s in path.segments)


def vr_of(seg: Segment) -> str | None:
    """The dictionary VR of a public tag (None for private or unknown tags)."""
    if isinstance(seg, PrivateTag):
        return None
    try:
        return str(dictionary_VR(seg))
    except KeyError:
        return None


# ------------------------------------------------------------------ reading DICOM JSON
def _private_key(item: Mapping[str, Any], seg: PrivateTag) -> str | None:
    """Header key of a private element, found through its Private Creator (PS3.5 7.8.1)."""
    prefix = f"{seg.group:04X}00"
    want = seg.creator
    want_fold = want.casefold()
    fallback: str | None = None
    for key, elem in item.items():
        if not isinstance(key, str) or len(key) != 8 or key[:6].upper() != prefix:
            continue
        try:
            block = int(key[6:], 16)
        except ValueError:
            continue
        if block < 0x10 or not isinstance(elem, Mapping):
            continue
        vals = elem.get("Value")
        if not isinstance(vals, list) or not vals or not isinstance(vals[0], str):
            continue
        got = vals[0].strip()
        target = f"{seg.group:04X}{block:02X}{seg.element:02X}"
        if got == want:
            return target
        if fallback is None and got.casefold() == want_fold:
            fallback = target
    return fallback


def _lookup(item: Mapping[str, Any], seg: Segment) -> Any:
    if isinstance(seg, PrivateTag):
        key = _private_key(item, seg)
        if key is None:
            return None
        elem = item.get(key)
        if elem is None:
            elem = item.get(key.lower())
        return elem
    key = f"{seg:08X}"
    elem = item.get(key)
    if elem is None:
        elem = item.get(key.lower())
    return elem


def _scalar(value: Any) -> Any:
    """A comparable form of one JSON value: str/int/float, a dict for a sequence item, or None."""
    if isinstance(value, bool):
        return None
    if isinstance(value, (str, int, float)):
        return value
    if isinstance(value, Mapping):
        if "Alphabetic" in value:  # PN (PS3.18 F.2.2)
            alpha = value.get("Alphabetic")
            return alpha if isinstance(alpha, str) else None
        return value
    return None


def read_values(header: Any, path: AttributePath) -> list[Any] | None:
    """Values of ``path`` in ``header``; ``None`` when the tag is absent everywhere.

    Sequences are searched in every item; the result concatenates the values found.  An element
    that is present but empty gives ``[]``.  Sequence items are returned as mappings.
    """
    if not isinstance(header, Mapping):
        return None
    items: list[Mapping[str, Any]] = [header]
    last = len(path.segments) - 1
    found_any = False
    out: list[Any] = []
    for i, seg in enumerate(path.segments):
        next_items: list[Mapping[str, Any]] = []
        found_any = False
        for item in items:
            elem = _lookup(item, seg)
            if not isinstance(elem, Mapping):
                continue
            found_any = True
            vals = elem.get("Value")
            if vals is None:
                continue
            if not isinstance(vals, list):
                vals = [vals]
            if i == last:
                for v in vals:
                    s = _scalar(v)
                    if s is not None:
                        out.append(s)
            else:
                next_items.extend(v for v in vals if isinstance(v, Mapping))
        if i != last:
            if not next_items:
                return [] if found_any else None
            items = next_items
    return out if found_any else None
