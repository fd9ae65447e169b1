"""Read what ingest needs from a received instance, without decoding pixels.

The bytes are parsed once with pydicom (PS3.10 file format); pixel data is read as raw bytes only
to check that it is complete, never decoded.  The header travels on as the DICOM JSON model
(PS3.18 F.2) with bulk data removed, built by ``node.imaging.dicom_json.header_from_dataset``.
"""

from __future__ import annotations

import io
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, Literal

import pydicom
from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError

from node.errors import MalformedInstanceError, MissingAttributeError

__all__ = [
    "IN_MEMORY_BYTES",
    "Header",
    "dataset_offset",
    "file_meta_bytes",
    "is_valid_uid",
    "parse_received",
    "parse_received_file",
]

#: PS3.5 9.1: digits and dots, at most 64 characters.  Leading zeros in components are accepted
#: because real scanners send them; anything else (separators, ``..``) never reaches a path.
_UID = re.compile(r"^[0-9]+(\.[0-9]+)*$")
_SEQ_DELIMITER = b"\xfe\xff\xdd\xe0\x00\x00\x00\x00"
_UNDEFINED = 0xFFFFFFFF


def is_valid_uid(value: object) -> bool:
    """True when ``value`` is a syntactically valid UID (PS3.5 9.1) safe to use in a path."""
    return isinstance(value, str) and len(value) <= 64 and _UID.fullmatch(value) is not None


@dataclass(frozen=True, slots=True)
class Header:
    """Identity and key fields of one received instance (no pydicom types)."""

    study_uid: str
    series_uid: str
    sop_uid: str
    sop_class_uid: str
    transfer_syntax_uid: str
    modality: str | None
    body_part: str | None
    series_description: str | None
    dataset: Dataset  # parsed once, used for the JSON header of a new series only


def _text(ds: Dataset, keyword: str) -> str | None:
    try:
        value = ds.get(keyword)
    except Exception:  # noqa: BLE001 - a malformed optional value is simply absent
        return None
    if value is None:
        return None
    text = str(value).strip()
    return text or None


def _raw_text(ds: Dataset, keyword: str) -> str | None:
    """An ASCII value (UI, CS) read from the raw element, without pydicom's value validation."""
    tag = pydicom.datadict.tag_for_keyword(keyword)
    if tag is None or tag not in ds:
        return None
    item = ds.get_item(tag)
    value: Any = item.value if item is not None else None
    if isinstance(value, bytes):
        text = value.decode("ascii", "replace")
    elif value is None:
        return None
    else:
        text = str(value)
    text = text.strip("\x00 ")
    return text or None


def _check_complete(data: bytes, ds: Dataset, *, is_deflated: bool) -> None:
    """Raise MalformedInstanceError when a top-level element is shorter than its length says."""
    for tag in list(ds.keys()):
        raw = ds.get_item(tag)
        if not isinstance(raw, RawDataElement) or raw.value is None:
            continue
        value = raw.value
        if not isinstance(value, bytes):
            continue
        if raw.length != _UNDEFINED:
            if len(value) != raw.length:
                raise MalformedInstanceError(
                    f"truncated: element {tag} declares {raw.length} bytes but {len(value)} "
                    "were received"
                )
        elif not is_deflated and tag == 0x7FE00010:
            # encapsulated pixel data (PS3.5 A.4) must end with a sequence delimiter item
            end = raw.value_tell + len(value)
            if data[end : end + 8] != _SEQ_DELIMITER:
                raise MalformedInstanceError(
                    "truncated: encapsulated pixel data has no sequence delimitation item"
                )


#: Parser messages are kept when they are short and printable; pydicom quotes raw values in some.
_MAX_DETAIL = 120


def _describe(exc: BaseException) -> str:
    """The exception class and a bounded, value-free message (reasons go to the sender and logs).

    pydicom messages can quote element values (a name, an ID); quoted text is replaced by
    ``'...'`` so a refusal reason never carries patient data.
    """
    text = re.sub(r"'[^']*'|\"[^\"]*\"|b'[^']*'", "'...'", str(exc))
    text = "".join(ch if ch.isprintable() else "?" for ch in text)
    if len(text) > _MAX_DETAIL:
        text = text[: _MAX_DETAIL - 3] + "..."
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _parse(source: Any, **kwargs: Any) -> Dataset:
    try:
        return pydicom.dcmread(source, force=False, **kwargs)
    except InvalidDicomError as exc:
        raise MalformedInstanceError(f"not a DICOM PS3.10 file: {exc}") from exc
    except RecursionError as exc:
        raise MalformedInstanceError(
            "unreadable DICOM data: sequences nested too deeply to parse"
        ) from exc
    except Exception as exc:  # noqa: BLE001 - any parser failure means "cannot understand"
        raise MalformedInstanceError(f"unreadable DICOM data: {_describe(exc)}") from exc


def _transfer_syntax(ds: Dataset) -> str:
    tsuid = str(ds.file_meta.get("TransferSyntaxUID", "") or "").strip()
    if not tsuid:
        raise MalformedInstanceError("file meta has no Transfer Syntax UID (0002,0010)")
    if not is_valid_uid(tsuid):
        raise MalformedInstanceError("file meta has an invalid Transfer Syntax UID")
    return tsuid


def _identify(ds: Dataset, tsuid: str) -> Header:
    try:
        uids = {
            kw: _raw_text(ds, kw)
            for kw in ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID", "SOPClassUID")
        }
    except Exception as exc:  # noqa: BLE001
        raise MalformedInstanceError(f"unreadable DICOM data: {_describe(exc)}") from exc
    missing = [kw for kw, v in uids.items() if not v]
    if missing:
        raise MissingAttributeError(f"required attribute(s) absent or empty: {', '.join(missing)}")
    for kw, v in uids.items():
        if not is_valid_uid(v):
            raise MalformedInstanceError(f"{kw} is not a valid UID (PS3.5 9.1)")
    return Header(
        study_uid=str(uids["StudyInstanceUID"]),
        series_uid=str(uids["SeriesInstanceUID"]),
        sop_uid=str(uids["SOPInstanceUID"]),
        sop_class_uid=str(uids["SOPClassUID"]),
        transfer_syntax_uid=tsuid,
        modality=_raw_text(ds, "Modality"),
        body_part=_raw_text(ds, "BodyPartExamined"),
        series_description=_text(ds, "SeriesDescription"),
        dataset=ds,
    )


#: Files up to this size are parsed in memory (``parse_received``); larger ones from the file,
#: with bulk values skipped and their completeness checked by seeking (``parse_received_file``).
IN_MEMORY_BYTES = 64 * 1024 * 1024
_DEFER = 1024 * 1024
_ITEM, _ITEM_END, _SEQ_END = 0xFFFEE000, 0xFFFEE00D, 0xFFFEE0DD
_LONG_VRS = {
    b"OB",
    b"OD",
    b"OF",
    b"OL",
    b"OV",
    b"OW",
    b"SQ",
    b"SV",
    b"UC",
    b"UN",
    b"UR",
    b"UT",
    b"UV",
}


def parse_received_file(path: Path, size: int) -> Header:
    """``parse_received`` for a received file of ``size`` bytes at ``path``, in bounded memory.

    Up to ``IN_MEMORY_BYTES`` the file is read and parsed exactly as ``parse_received`` does.
    Larger files are parsed up to the pixel data with values over 1 MiB left unread; then every
    remaining top-level element (pixel data fragments included) is walked by its length fields
    to check that the file is complete.

    Raises
    ------
    MalformedInstanceError, MissingAttributeError
        As ``parse_received``.
    """
    if size <= IN_MEMORY_BYTES:
        return parse_received(path.read_bytes())
    with path.open("rb") as f:
        ds = _parse(f, stop_before_pixels=True, defer_size=_DEFER)
        rest = f.tell()
        if rest > size:  # pydicom seeked past the end over a deferred (large) value
            raise MalformedInstanceError("truncated: a value ends past the end of the file")
        tsuid = _transfer_syntax(ds)
        for tag in list(ds.keys()):
            raw = ds.get_item(tag)
            if isinstance(raw, RawDataElement) and raw.length != _UNDEFINED:
                have = len(raw.value) if isinstance(raw.value, bytes) else None
                if raw.value is None and raw.value_tell + raw.length > size:
                    raise MalformedInstanceError(
                        f"truncated: element {tag} declares {raw.length} bytes past the end"
                    )
                if have is not None and have != raw.length:
                    raise MalformedInstanceError(
                        f"truncated: element {tag} declares {raw.length} bytes but {have} "
                        "were received"
                    )
        if tsuid != pydicom.uid.DeflatedExplicitVRLittleEndian:
            syntax = pydicom.uid.UID(tsuid)
            implicit = syntax == pydicom.uid.ImplicitVRLittleEndian
            little = syntax != pydicom.uid.ExplicitVRBigEndian
            _walk(f, rest, size, implicit=implicit, little=little)
    return _identify(ds, tsuid)


def _walk(f: BinaryIO, pos: int, size: int, *, implicit: bool, little: bool) -> None:
    """Check by their length fields that the elements from ``pos`` to the end are complete."""
    order: Literal["little", "big"] = "little" if little else "big"

    def read(at: int, n: int) -> bytes:
        f.seek(at)
        data = f.read(n)
        if len(data) != n:
            raise MalformedInstanceError("truncated: the data set ends inside an element header")
        return data

    def tag_at(at: int) -> int:
        b = read(at, 4)
        return (int.from_bytes(b[:2], order) << 16) | int.from_bytes(b[2:4], order)

    def element(at: int, depth: int) -> int:
        """Skip one element (or item/delimiter) at ``at``; return the position after it."""
        if depth > 64:
            raise MalformedInstanceError("unreadable DICOM data: sequences nested too deeply")
        tag = tag_at(at)
        if tag >> 16 == 0xFFFE:
            length = int.from_bytes(read(at + 4, 4), order)
            start = at + 8
            if tag == _ITEM and length == _UNDEFINED:
                return until(start, _ITEM_END, depth + 1)
        elif implicit:
            length = int.from_bytes(read(at + 4, 4), order)
            start = at + 8
        else:
            vr = read(at + 4, 2)
            if vr in _LONG_VRS:
                length = int.from_bytes(read(at + 8, 4), order)
                start = at + 12
            else:
                length = int.from_bytes(read(at + 6, 2), order)
                start = at + 8
        if length == _UNDEFINED:
            return until(start, _SEQ_END, depth + 1)
        end = start + length
        if end > size:
            raise MalformedInstanceError(
                f"truncated: element ({tag >> 16:04X},{tag & 0xFFFF:04X}) declares {length} "
                f"bytes but {max(0, size - start)} were received"
            )
        return end

    def until(at: int, delimiter: int, depth: int) -> int:
        while True:
            if at + 8 > size:
                raise MalformedInstanceError(
                    "truncated: an undefined-length value has no delimitation item"
                )
            if tag_at(at) == delimiter:
                return at + 8
            at = element(at, depth)

    while pos < size:
        if pos + 8 > size:
            raise MalformedInstanceError("truncated: the data set ends inside an element header")
        pos = element(pos, 0)


def parse_received(data: bytes) -> Header:
    """Parse a PS3.10 file held in ``data`` and return its identity and key fields.

    Parameters
    ----------
    data:
        A complete DICOM file: preamble, ``DICM``, file meta (PS3.10 7.1) and data set.

    Returns
    -------
    Header
        UIDs (validated per PS3.5 9.1), transfer syntax, modality, body part, series description.

    Raises
    ------
    MalformedInstanceError
        The bytes are not a complete, readable PS3.10 file (no meta, no transfer syntax,
        truncated element, unreadable encoding, invalid UID).
    MissingAttributeError
        Study, Series or SOP Instance UID or SOP Class UID is absent or empty (PS3.4 B.4.2).
    """
    try:
        ds = pydicom.dcmread(io.BytesIO(data), force=False)
    except InvalidDicomError as exc:
        raise MalformedInstanceError(f"not a DICOM PS3.10 file: {exc}") from exc
    except RecursionError as exc:
        raise MalformedInstanceError(
            "unreadable DICOM data: sequences nested too deeply to parse"
        ) from exc
    except Exception as exc:  # noqa: BLE001 - any parser failure means "cannot understand"
        raise MalformedInstanceError(f"unreadable DICOM data: {_describe(exc)}") from exc
    meta = ds.file_meta
    tsuid = str(meta.get("TransferSyntaxUID", "") or "").strip()
    if not tsuid:
        raise MalformedInstanceError("file meta has no Transfer Syntax UID (0002,0010)")
    if not is_valid_uid(tsuid):
        raise MalformedInstanceError("file meta has an invalid Transfer Syntax UID")
    try:
        _check_complete(data, ds, is_deflated=tsuid == pydicom.uid.DeflatedExplicitVRLittleEndian)
    except MalformedInstanceError:
        raise
    except Exception as exc:  # noqa: BLE001
        raise MalformedInstanceError(f"unreadable DICOM data: {_describe(exc)}") from exc
    return _identify(ds, tsuid)


def dataset_offset(data: bytes) -> int:
    """Offset of the data set after the preamble and file meta of a PS3.10 file in ``data``.

    The file meta group is always explicit VR little endian (PS3.10 7.1); it is walked element by
    element so a missing group length does not matter.

    Raises
    ------
    MalformedInstanceError
        There is no ``DICM`` prefix or the meta group is cut short.
    """
    if data[128:132] != b"DICM":
        raise MalformedInstanceError("no DICM prefix (PS3.10 7.1)")
    pos = 132
    while pos + 8 <= len(data) and int.from_bytes(data[pos : pos + 2], "little") == 0x0002:
        vr = data[pos + 4 : pos + 6]
        if vr in (b"OB", b"OW", b"OF", b"SQ", b"UT", b"UN", b"UC", b"UR", b"OD", b"OL", b"OV"):
            if pos + 12 > len(data):
                break
            pos += 12 + int.from_bytes(data[pos + 8 : pos + 12], "little")
        else:
            pos += 8 + int.from_bytes(data[pos + 6 : pos + 8], "little")
    if pos > len(data):
        raise MalformedInstanceError("file meta is cut short")
    return pos


def _short_element(group: int, elem: int, vr: bytes, value: bytes) -> bytes:
    """One explicit VR little endian element with a 2-byte length (PS3.5 7.1.2)."""
    return b"".join(
        (
            group.to_bytes(2, "little"),
            elem.to_bytes(2, "little"),
            vr,
            len(value).to_bytes(2, "little"),
            value,
        )
    )


def _padded(value: str, pad: bytes) -> bytes:
    raw = value.encode("ascii")
    return raw + pad if len(raw) % 2 else raw


def file_meta_bytes(
    *,
    sop_class_uid: str,
    sop_instance_uid: str,
    transfer_syntax_uid: str,
    implementation_class_uid: str,
    implementation_version_name: str,
) -> bytes:
    """Preamble, ``DICM`` and the File Meta Information group of a PS3.10 file (PS3.10 7.1).

    Encodes the same elements as pynetdicom's ``create_file_meta``/``encode_file_meta``
    (group length, version, media storage SOP class and instance, transfer syntax,
    implementation class UID and version name) directly as bytes: building them through a
    pydicom Dataset costs about a millisecond per received instance.  UIDs are padded with NUL,
    the version name (SH) with a space (PS3.5 6.2).  Values must be ASCII.
    """
    body = b"".join(
        (
            # (0002,0001) OB: 2-byte reserved field, then a 4-byte length (PS3.5 7.1.2)
            b"\x02\x00\x01\x00OB\x00\x00\x02\x00\x00\x00\x00\x01",
            _short_element(0x0002, 0x0002, b"UI", _padded(sop_class_uid, b"\0")),
            _short_element(0x0002, 0x0003, b"UI", _padded(sop_instance_uid, b"\0")),
            _short_element(0x0002, 0x0010, b"UI", _padded(transfer_syntax_uid, b"\0")),
            _short_element(0x0002, 0x0012, b"UI", _padded(implementation_class_uid, b"\0")),
            _short_element(0x0002, 0x0013, b"SH", _padded(implementation_version_name, b" ")),
        )
    )
    length = b"\x02\x00\x00\x00UL\x04\x00" + len(body).to_bytes(4, "little")
    return b"\0" * 128 + b"DICM" + length + body
