"""Module and attribute checks at dciodvfy's level, in process, for what ainode writes or copies.

Two uses share one table of the standard's module definitions (PS3.3, as shipped with highdicom
in ``highdicom._standard_utils``: attribute, Type and nesting path per module):

* ``sanitise_header`` repairs the copy of a source header that result building reads (patient,
  study, equipment and frame-of-reference modules): it copies what is valid, repairs what can be
  repaired without inventing facts (a known character set spelled wrongly, a value encoded with
  the wrong VR, a date written ``YYYY-MM-DD``), empties Type 2 values and drops Type 3 values and
  sequence items that are broken, and returns what it did (keywords and reasons, never values);
* ``conformance_problems`` is the gate's check of a finished result object: every element's VR,
  VM and value (PS3.5 6.2), private elements with their creator (PS3.5 7.8.1), and Type 1 / 2
  attributes of the copied modules and of every item of their sequences (PS3.3 C.7.1-C.7.5,
  C.12.1).
"""

from __future__ import annotations

import codecs
import datetime as dt
import re
from collections.abc import Iterator
from functools import cache
from typing import Any

from highdicom._standard_utils import get_module_attribute_map  # PS3.3 module tables
from pydicom import config
from pydicom.charset import python_encoding
from pydicom.datadict import dictionary_has_tag, dictionary_VM, dictionary_VR, keyword_for_tag
from pydicom.dataelem import DataElement, RawDataElement
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue
from pydicom.sequence import Sequence as DicomSequence
from pydicom.tag import BaseTag
from pydicom.valuerep import validate_value

from node.errors import ResultError

__all__ = ["COPIED_MODULES", "conformance_problems", "drop_reference_purposes", "sanitise_header"]

#: Modules whose attributes results copy from their source (PS3.3 C.7.1.1, C.7.1.3, C.7.2.1,
#: C.7.2.2, C.7.2.3, C.7.5.1, C.7.4.1) and the SOP Common module ainode fills itself (C.12.1).
COPIED_MODULES = (
    "patient",
    "clinical-trial-subject",
    "general-study",
    "patient-study",
    "clinical-trial-study",
    "general-equipment",
    "frame-of-reference",
)
_CHECKED_MODULES = (*COPIED_MODULES, "sop-common")

#: Attributes whose value identifies the patient or the study: a broken one cannot be emptied or
#: dropped (the result would no longer match its source), so the job is refused instead.
_IDENTITY = frozenset(
    {"PatientID", "PatientName", "StudyInstanceUID", "SOPInstanceUID", "SOPClassUID"}
)
#: Type 2 attributes of the Patient and General Study modules that results copy.
_SOURCE_TYPE2 = frozenset(
    {
        "PatientName",
        "PatientID",
        "PatientBirthDate",
        "PatientSex",
        "StudyDate",
        "StudyTime",
        "AccessionNumber",
        "ReferringPhysicianName",
        "StudyID",
    }
)
_CODE_VALUES = ("CodeValue", "LongCodeValue", "URNCodeValue")
_BINARY_VRS = frozenset({"OB", "OW", "OF", "OD", "OL", "OV", "UN", "SQ"})
_TYPE_RANK = {"1": 0, "1C": 1, "2": 2, "2C": 3, "3": 4}


@cache
def _types() -> dict[tuple[tuple[str, ...], str], str]:
    """(nesting path, keyword) -> Type, over the checked modules (the strictest Type wins)."""
    table = get_module_attribute_map()
    out: dict[tuple[tuple[str, ...], str], str] = {}
    for module in _CHECKED_MODULES:
        for entry in table[module]:
            key = (tuple(entry["path"]), str(entry["keyword"]))
            given = str(entry["type"])
            if key not in out or _TYPE_RANK.get(given, 5) < _TYPE_RANK.get(out[key], 5):
                out[key] = given
    return out


@cache
def _module_roots() -> dict[str, tuple[str, ...]]:
    """Root keywords of each copied module (to drop a broken optional module as a whole)."""
    table = get_module_attribute_map()
    return {m: tuple(str(e["keyword"]) for e in table[m] if not e["path"]) for m in COPIED_MODULES}


def _vm_ok(vm: str, n: int) -> bool:
    """Whether ``n`` values fit the dictionary VM ``vm`` ("1", "1-3", "2-2n", "1-n")."""
    if n == 0:
        return True
    match = re.fullmatch(r"(\d+)(?:-(\d*)(n?))?", vm.replace(" ", ""))
    if match is None:
        return True
    low = int(match.group(1))
    if match.group(2) is None and not match.group(3):
        return n == low
    if match.group(3):
        step = int(match.group(2)) if match.group(2) else 1
        return n >= low and (n - low) % max(step, 1) == 0 if step > 1 else n >= low
    return low <= n <= int(match.group(2))


def _values(elem: DataElement) -> list[Any]:
    value = elem.value
    if value is None or value == "":
        return []
    if isinstance(value, MultiValue | list | tuple):
        return list(value)
    return [value]


def element_problem(elem: DataElement) -> str | None:
    """Why ``elem`` is not valid DICOM (wrong VR, VM or value), or None."""
    if elem.tag.is_private or not dictionary_has_tag(elem.tag) or elem.tag.element == 0:
        return None
    expected = dictionary_VR(elem.tag)
    if expected != elem.VR and elem.VR not in expected.split(" or "):
        return f"encoded with VR {elem.VR}, the dictionary says {expected}"
    if elem.VR in _BINARY_VRS:
        return None
    values = _values(elem)
    if not _vm_ok(dictionary_VM(elem.tag), len(values)):
        return f"has {len(values)} value(s), VM {dictionary_VM(elem.tag)} allowed"
    for value in values:
        if elem.VR in ("IS", "DS") and not isinstance(value, str):
            value = getattr(value, "original_string", None) or str(value)
        try:
            validate_value(elem.VR, value, config.RAISE)
        except (ValueError, TypeError) as exc:
            reason = str(exc).split(" Please see")[0]
            return re.sub(r"'.*?'", "(value)", reason)  # no source values in messages
    return None


def _charset_problem(ds: Dataset) -> str | None:
    terms = _values(ds["SpecificCharacterSet"]) if "SpecificCharacterSet" in ds else []
    unknown = [t for t in terms if str(t) not in python_encoding]
    return f"{len(unknown)} unknown Specific Character Set term(s)" if unknown else None


def conformance_problems(ds: Dataset) -> list[str]:
    """Attribute-level problems of a result object, as dciodvfy would report them.

    Checks every element (nested ones too) for VR, VM and value validity; private elements for
    their Private Creator; Specific Character Set terms; Type 1 (present, non-empty) and Type 2
    (present) attributes of the copied modules and of the items of their sequences.
    """
    problems: list[str] = []
    if (reason := _charset_problem(ds)) is not None:
        problems.append(f"SpecificCharacterSet: {reason}")
    for where, item in _items(ds, ()):
        creators = {(e.tag.group, e.tag.element) for e in item if e.tag.is_private_creator}
        for elem in item:
            if elem.tag.is_private and not elem.tag.is_private_creator:
                if (elem.tag.group, elem.tag.element >> 8) not in creators:
                    problems.append(f"{where}{elem.tag}: private element without Private Creator")
                continue
            if elem.VR == "SQ" or elem.tag == 0x7FE00010:
                continue
            if (reason := element_problem(elem)) is not None:
                problems.append(f"{where}{elem.keyword or elem.tag} {reason}")
    problems += _type_problems(ds, ())
    return problems


def _items(ds: Dataset, path: tuple[str, ...]) -> Iterator[tuple[str, Dataset]]:
    where = "".join(f"{p}/" for p in path)
    yield where, ds
    for elem in ds:
        if elem.VR == "SQ" and elem.value:
            for item in elem.value:
                yield from _items(item, (*path, elem.keyword or str(elem.tag)))


def _type_problems(ds: Dataset, path: tuple[str, ...]) -> list[str]:
    types = _types()
    where = "".join(f"{p}/" for p in path)
    problems = []
    if path:  # a sequence item: every Type 1 / 2 attribute the module table lists at this path
        wanted = [(k, t) for (p, k), t in types.items() if p == path]
    else:  # the root: modules every result carries
        wanted = [(k, t) for k, t in _root_required()]
    for keyword, kind in wanted:
        if kind == "1" and (keyword not in ds or ds[keyword].value in (None, "", [])):
            problems.append(f"{where}{keyword} (Type 1) missing or empty")
        elif kind == "2" and keyword not in ds:
            problems.append(f"{where}{keyword} (Type 2) missing")
    if path and path[-1].endswith("CodeSequence"):
        if not any(k in ds for k in _CODE_VALUES):
            problems.append(f"{where}CodeValue (Type 1C) missing")
        if not ds.get("CodeMeaning"):
            problems.append(f"{where}CodeMeaning (Type 1) missing or empty")
    for elem in ds:
        if elem.VR != "SQ" or not elem.value:
            continue
        sub = (*path, elem.keyword)
        if elem.keyword.endswith("CodeSequence") or any(p[: len(sub)] == sub for p, _ in types):
            for item in elem.value:
                problems += _type_problems(item, sub)
    return problems


@cache
def _root_required() -> tuple[tuple[str, str], ...]:
    """Type 1 / 2 root attributes of the modules every result object has."""
    table = get_module_attribute_map()
    return tuple(
        (str(e["keyword"]), str(e["type"]))
        for m in ("patient", "general-study", "general-equipment", "sop-common")
        for e in table[m]
        if not e["path"] and e["type"] in ("1", "2")
    )


# ---------------------------------------------------------------- sanitising a source header


def _fixed_charset(term: str) -> str | None:
    """The defined term a misspelt character set means (``ISO-8859-1`` -> ``ISO_IR 100``)."""
    spaced = re.sub(r"[-_ ]+", " ", term.strip().upper())
    for known in python_encoding:
        if known and re.sub(r"[-_ ]+", " ", known) == spaced:
            return known
    try:
        codec = codecs.lookup(term).name
    except LookupError:
        return None
    for known, name in python_encoding.items():
        if (known.startswith("ISO_IR") and known != "ISO_IR 6") or known in ("GB18030", "GBK"):
            try:
                if codecs.lookup(name).name == codec:
                    return known
            except LookupError:
                continue
    return None


def _is_ascii(ds: Dataset) -> bool:
    for elem in ds.iterall():
        if elem.VR in ("SH", "LO", "ST", "LT", "UT", "PN", "UC") and isinstance(
            elem.value, str | MultiValue
        ):
            text = "\\".join(map(str, _values(elem)))
            if not text.isascii():
                return False
    return True


def _sanitise_charset(ds: Dataset, repairs: list[str]) -> None:
    if "SpecificCharacterSet" not in ds:
        return
    terms = [str(t) for t in _values(ds["SpecificCharacterSet"])]
    if not terms:
        # The default repertoire is a subset of ISO_IR 100 (PS3.3 C.12.1.1.2); highdicom
        # refuses an empty value.
        ds.SpecificCharacterSet = "ISO_IR 100"
        repairs.append("SpecificCharacterSet: empty value set to ISO_IR 100")
        return
    if all(t in python_encoding for t in terms):
        return
    fixed = [t if t in python_encoding else _fixed_charset(t) for t in terms]
    if all(fixed):
        ds.SpecificCharacterSet = fixed[0] if len(fixed) == 1 else fixed
        repairs.append("SpecificCharacterSet: misspelt term replaced by its defined term")
    elif _is_ascii(ds):
        del ds.SpecificCharacterSet
        repairs.append("SpecificCharacterSet: unknown term removed (all text is ASCII)")
    else:
        raise ResultError(
            "the source's Specific Character Set names an unknown character set and its text "
            "is not ASCII, so names cannot be copied faithfully; correct the source header"
        )


def _repair_element(elem: DataElement) -> DataElement | None:
    """A valid element with the same content (dictionary VR, ISO date), or None."""
    expected = dictionary_VR(elem.tag)
    value = elem.value
    if " or " in expected or expected in _BINARY_VRS:
        return None
    if isinstance(value, bytes):
        value = value.decode("ascii", errors="replace")
    if expected == "DA" and isinstance(value, str):
        match = re.fullmatch(r"(\d{4})[-./](\d{2})[-./](\d{2})", value.strip())
        if match is not None:
            value = "".join(match.groups())
    if expected in ("DA", "TM", "DT") and isinstance(value, dt.date | dt.time):
        return None
    candidate = DataElement(elem.tag, expected, value)
    return candidate if element_problem(candidate) is None else None


#: An element already found valid in this series: (path, tag, VR, value bytes, endianness, implicit
#: VR, character set).  Slices of one series repeat most values, so each is checked once.
_SeenKey = tuple[tuple[str, ...], int, str | None, bytes, bool, bool, str]


def _raw_key(
    path: tuple[str, ...], raw: object, charset: str, seen: set[_SeenKey] | None
) -> _SeenKey | None:
    """The cache key of a still-undecoded, non-sequence element; None when it has none."""
    if seen is None or not isinstance(raw, RawDataElement) or raw.VR == "SQ":
        return None
    if not isinstance(raw.value, bytes) or raw.length == 0xFFFFFFFF:
        return None
    return (
        path,
        int(raw.tag),
        raw.VR,
        raw.value,
        bool(raw.is_little_endian),
        bool(raw.is_implicit_VR),
        charset,
    )


def _sanitise_item(
    ds: Dataset,
    path: tuple[str, ...],
    repairs: list[str],
    seen: set[_SeenKey] | None = None,
    charset: str = "",
) -> list[str]:
    """Repair ``ds`` (a header or a sequence item at ``path``) in place; return what is still
    missing for the item to be valid (Type 1 attributes).

    Elements outside the copied modules are not decoded.  ``seen`` holds the raw values already
    found valid in other headers of the same series (``sanitise_header``), skipped here."""
    types = _types()
    where = "/".join(path) + "/" if path else ""
    for tag in list(ds.keys()):
        keyword = keyword_for_tag(tag)
        kind = types.get((path, keyword))
        if kind is None and path and not path[-1].endswith("CodeSequence"):
            continue  # not part of a copied module: never copied, nothing to repair
        if kind is None and not path:
            continue
        key = _raw_key(path, ds.get_item(tag), charset, seen)
        if key is not None and key in seen:  # type: ignore[operator]
            continue
        elem = ds[tag]
        if elem.VR == "SQ":
            kept = []
            for n, item in enumerate(elem.value or [], start=1):
                missing = _sanitise_item(item, (*path, keyword), repairs, seen, charset)
                if missing:
                    repairs.append(
                        f"{where}{keyword}: dropped item {n} lacking {', '.join(missing)}"
                    )
                else:
                    kept.append(item)
            if len(kept) != len(elem.value or []):
                elem.value = DicomSequence(kept)
            if not kept and elem.value is not None and kind in ("3", "1C", "2C", None):
                del ds[elem.tag]
            continue
        problem = element_problem(elem)
        if problem is None:
            if key is not None:
                seen.add(key)  # type: ignore[union-attr]
            continue
        fixed = _repair_element(elem)
        if fixed is not None:
            ds[elem.tag] = fixed
            repairs.append(f"{where}{keyword}: {problem}; re-encoded")
        elif keyword in _IDENTITY and not path:
            raise ResultError(
                f"the source's {keyword} is not valid DICOM ({problem}); results must carry "
                "it unchanged to match the patient and study, so correct the source"
            )
        elif kind in ("2", "2C"):
            ds[elem.tag] = DataElement(elem.tag, dictionary_VR(elem.tag), None)
            repairs.append(f"{where}{keyword}: {problem}; emptied (Type 2)")
        else:
            del ds[elem.tag]
            repairs.append(f"{where}{keyword}: {problem}; dropped")
    missing = []
    if path:
        for (p, name), kind in types.items():
            if p == path and kind == "1" and (name not in ds or ds[name].value in ("", None)):
                missing.append(name)
        if path[-1].endswith("CodeSequence") and not any(k in ds for k in _CODE_VALUES):
            missing.append("CodeValue")
    return missing


def _may_be_sequence(ds: Dataset, tag: BaseTag) -> bool:
    """True when the element at ``tag`` is, or may decode to, a sequence (decoded to know)."""
    raw = ds.get_item(tag)
    if not isinstance(raw, RawDataElement):
        return raw is not None and raw.VR == "SQ"
    if raw.VR == "SQ":
        return True
    if raw.VR not in (None, "UN"):
        return False
    if tag.is_private:
        return True  # an implicit-VR private element: its VR comes from the private dictionary
    try:
        return "SQ" in dictionary_VR(tag)
    except KeyError:
        return False


def _strip_private(ds: Dataset) -> int:
    """Remove private elements from ``ds`` and every sequence item in it (what pydicom's
    ``remove_private_tags`` does, without decoding the standard elements that are not sequences).

    Returns how many private elements were nested in sequence items (those of private sequences
    included), as counted before removal.
    """
    nested = 0
    for tag in list(ds.keys()):
        if _may_be_sequence(ds, tag) and ds[tag].VR == "SQ":
            for item in ds[tag].value or []:
                nested += _count_private(item)
        if tag.is_private:
            del ds[tag]
    for tag in list(ds.keys()):
        if _may_be_sequence(ds, tag) and ds[tag].VR == "SQ":
            for item in ds[tag].value or []:
                _strip_private(item)
    return nested


def _count_private(ds: Dataset) -> int:
    """Private elements in ``ds`` and, recursively, in the items of its sequences."""
    count = 0
    for tag in list(ds.keys()):
        if tag.is_private:
            count += 1
        if _may_be_sequence(ds, tag) and ds[tag].VR == "SQ":
            for item in ds[tag].value or []:
                count += _count_private(item)
    return count


def sanitise_header(ds: Dataset, seen: set[_SeenKey] | None = None) -> list[str]:
    """Repair a source header copy in place so that what results copy from it is valid.

    Parameters
    ----------
    ds
        A source header read without pixel data (a private copy: it is modified).
    seen
        Raw values already found valid in other headers of the same series; filled here (None:
        check every copied element).

    Returns
    -------
    list[str]
        What was repaired, dropped or emptied (attribute keywords and reasons, no values).

    Raises
    ------
    ResultError
        An identifying attribute (Patient ID/Name, Study Instance UID) is broken: results
        cannot carry it unchanged, and changing it would file them under another patient.
    """
    repairs: list[str] = []
    _sanitise_charset(ds, repairs)
    nested = _strip_private(ds)  # results copy no private data
    if nested:
        repairs.append(f"removed {nested} private element(s) inside standard sequence items")
    charset = repr(ds.get("SpecificCharacterSet"))
    _sanitise_item(ds, (), repairs, seen, charset)
    for keyword, kind in _root_required():
        if kind == "2" and keyword not in ds and keyword in _SOURCE_TYPE2:
            # Type 2: present, empty when unknown (PS3.5 7.4.3); highdicom needs them
            setattr(ds, keyword, None)
            repairs.append(f"{keyword}: missing Type 2 attribute added empty")
    roots = _module_roots()
    types = _types()
    for module in ("clinical-trial-subject", "clinical-trial-study"):
        present = [k for k in roots[module] if k in ds]
        broken = [
            k
            for k in roots[module]
            if types.get(((), k)) == "1" and (k not in ds or ds[k].value in ("", None))
        ]
        if present and broken:
            for keyword in present:
                del ds[keyword]
            repairs.append(f"dropped the {module} module: Type 1 {', '.join(broken)} missing")
    return repairs


def drop_reference_purposes(kos: Dataset) -> None:
    """Remove the concept name of a Key Object Selection's IMAGE, WAVEFORM and COMPOSITE items.

    TID 2010 (PS3.16) names no concept for these items: a Purpose of Reference must not be
    present.  highdicom gives each one ("Source"), which the PixelMed SR validator refuses.
    """
    for item in kos.get("ContentSequence", []):
        kind = item.get("ValueType")
        if kind in ("IMAGE", "WAVEFORM", "COMPOSITE") and "ConceptNameCodeSequence" in item:
            del item.ConceptNameCodeSequence
