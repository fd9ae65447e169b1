"""What distinguishes volumes, read from one instance's header (no pixel is read).

``frame_evidence`` collects, per frame, the values dcm2niix also splits by: echo number or time,
image / frame type, diffusion b-value and gradient direction (standard tags, then GE's private
ones), temporal position, stack ID and dimension index values (PS3.3 C.7.6.17), plus the
acquisition order of repetitions.  ``pixel_problem`` says when the header already shows that the
pixel data cannot be decoded (no decoder for the transfer syntax; fewer bytes than Rows x Columns
x bits; a JPEG DCT stream whose own frame and scan headers contradict each other, read from the
first bytes of its first fragment, no pixel decoded).  Used by ``node.imaging.split``.
"""

from __future__ import annotations

import math
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydicom.dataset import Dataset
from pydicom.uid import UID

from node.imaging.frames import FrameHeader

__all__ = ["FrameEvidence", "frame_evidence", "pixel_problem"]

#: Transfer syntaxes no installed decoder reads (see node/imaging/decode.py).
_UNDECODABLE_SYNTAXES = {
    "1.2.840.10008.1.2.4.53": "JPEG Spectral Selection (retired)",
    "1.2.840.10008.1.2.4.55": "JPEG Full Progression (retired)",
}


#: JPEG sequential DCT syntaxes (Baseline, Extended) whose stream headers are checked.
_JPEG_DCT_SYNTAXES = frozenset({"1.2.840.10008.1.2.4.50", "1.2.840.10008.1.2.4.51"})
_ITEM_TAG = b"\xfe\xff\x00\xe0"  # (FFFE,E000) little endian: encapsulated data is explicit LE


@dataclass(slots=True)
class FrameEvidence:
    """One frame's header facts and the values that distinguish its volume."""

    header: FrameHeader
    instance_number: int
    facts: dict[str, str]  # distinguishing values (strings: they become the volume id)
    order: tuple[float, ...]  # acquisition order of repetitions
    image_type: tuple[str, ...]
    echo_number: int | None
    b_value: float | None
    text: str  # series description + protocol name, for localizer recognition


# ---------------------------------------------------------------- header facts
def _item(ds: Dataset | None, keyword: str) -> Dataset | None:
    if ds is None:
        return None
    seq = ds.get(keyword)
    return seq[0] if seq else None


def _group_value(pf: Dataset | None, shared: Dataset | None, seq: str, keyword: str) -> Any:
    for group in (pf, shared):
        item = _item(group, seq)
        if item is not None and keyword in item and item.get(keyword) not in (None, ""):
            return item.get(keyword)
    return None


def _num(value: Any) -> float | None:
    if value is None or value == "":
        return None
    if isinstance(value, list | tuple) or type(value).__name__ == "MultiValue":
        value = value[0] if len(value) else None
        if value is None:
            return None
    try:
        out = float(value)
    except (TypeError, ValueError):
        return None
    return out if math.isfinite(out) else None


def _text(ds: Dataset, tag: int) -> str | None:
    """A text element's value (backslash-joined when multi-valued) without pydicom's conversion
    (the split reads ~15 values of every instance; converting them costs more than reading)."""
    try:
        elem = ds.get_item(tag)
    except (KeyError, ValueError):
        return None
    if elem is None:
        return None
    value = elem.value
    if isinstance(value, bytes):
        text = value.decode("latin-1").strip(" \x00")
    elif value is None:
        return None
    elif isinstance(value, str | int | float):
        text = str(value).strip()
    else:
        text = "\\".join(str(v).strip() for v in value)
    return text or None


def _tnum(ds: Dataset, tag: int) -> float | None:
    text = _text(ds, tag)
    return None if text is None else _num(text.split("\\")[0])


def _fmt(value: float) -> str:
    return f"{value:g}"


def _private(ds: Dataset, group: int, creator: str, element: int) -> Any:
    try:
        block = ds.private_block(group, creator)
        return block[element].value if element in block else None
    except (KeyError, ValueError):
        return None


def _ge_diffusion(ds: Dataset) -> tuple[float | None, tuple[float, float, float] | None]:
    """GE's b-value (0043,1039)[0] modulo 1e9 and direction (0019,10BB-BD)."""
    b = None
    slop = _private(ds, 0x0043, "GEMS_PARM_01", 0x39)
    if slop is not None:
        first = _num(slop)
        if first is not None:
            b = float(first % 1e9)
    parts = [_num(_private(ds, 0x0019, "GEMS_ACQU_01", e)) for e in (0xBB, 0xBC, 0xBD)]
    direction = None
    if all(p is not None for p in parts):
        direction = (float(parts[0]), float(parts[1]), float(parts[2]))  # type: ignore[arg-type]
    return b, direction


def frame_evidence(
    ds: Dataset, frame: FrameHeader, pf: Dataset | None, shared: Dataset | None
) -> FrameEvidence:
    """The evidence of one frame (``pf``/``shared``: its functional groups, if any)."""
    facts: dict[str, str] = {}
    echo_number = _echo_facts(ds, pf, shared, facts)
    image_type = _image_type(ds, pf, shared)
    facts["type"] = "\\".join(image_type)
    b = _diffusion_facts(ds, pf, shared, facts)
    content = _item(pf, "FrameContentSequence")
    temporal = _content_facts(ds, content, facts)
    if temporal is None:
        temporal = _tnum(ds, 0x00200100)
    if temporal is not None:
        facts["time"] = _fmt(temporal)
    trigger = _num(
        _group_value(pf, shared, "CardiacSynchronizationSequence", "NominalCardiacTriggerDelayTime")
    )
    if trigger is None:
        trigger = _tnum(ds, 0x00181060)
    acq = _num(content.get("FrameAcquisitionNumber") if content is not None else None)
    if acq is None:
        acq = _tnum(ds, 0x00200012)
    inst = _tnum(ds, 0x00200013) or 0.0
    text = " ".join(_text(ds, t) or "" for t in (0x0008103E, 0x00181030))
    order = (
        acq if acq is not None else 0.0,
        temporal if temporal is not None else 0.0,
        trigger if trigger is not None else 0.0,
        inst,
        float(frame.frame_index or 0),
    )
    return FrameEvidence(
        header=frame,
        instance_number=int(inst),
        facts=facts,
        order=order,
        image_type=image_type,
        echo_number=echo_number,
        b_value=b,
        text=text,
    )


# ---------------------------------------------------------------- pixel data, headers only
def pixel_problem(path: Path, ds: Dataset, offset: int | None) -> str | None:
    """Why the pixel data of this file cannot be decoded, as far as the header shows."""
    ts = str(getattr(ds.file_meta, "TransferSyntaxUID", "") or "")
    if ts in _UNDECODABLE_SYNTAXES:
        return f"transfer syntax {_UNDECODABLE_SYNTAXES[ts]} ({ts}) has no installed decoder"
    if offset is None:
        return None
    uid = UID(ts) if ts else UID("1.2.840.10008.1.2")
    if uid.is_compressed:
        return _jpeg_stream_problem(path, offset) if ts in _JPEG_DCT_SYNTAXES else None
    try:
        size = path.stat().st_size
        rows, cols = int(ds.get("Rows") or 0), int(ds.get("Columns") or 0)
        need = rows * cols * int(_num(ds.get("NumberOfFrames")) or 1)
        need = need * int(ds.get("SamplesPerPixel") or 1) * int(ds.get("BitsAllocated") or 16) // 8
        if size >= offset + 12 + need:
            return None  # the bytes are there: no need to read the element header
        with path.open("rb") as fp:
            fp.seek(offset)
            head = fp.read(12)
    except (OSError, ValueError, TypeError):
        return None
    if len(head) < 8:
        return "the file ends before its Pixel Data"
    endian = "<" if uid.is_little_endian else ">"
    if uid.is_implicit_VR:
        length, start = struct.unpack(endian + "I", head[4:8])[0], offset + 8
    elif head[4:6] in (b"OB", b"OW", b"OF", b"OD", b"OL", b"OV", b"UN"):
        if len(head) < 12:
            return "the file ends before its Pixel Data"
        length, start = struct.unpack(endian + "I", head[8:12])[0], offset + 12
    else:
        length, start = struct.unpack(endian + "H", head[6:8])[0], offset + 8
    if length == 0xFFFFFFFF:  # encapsulated: fragments are checked by the decoder
        return None
    if uid.is_compressed:
        return None
    rows, cols = int(ds.get("Rows") or 0), int(ds.get("Columns") or 0)
    frames = int(_num(ds.get("NumberOfFrames")) or 1)
    samples = int(ds.get("SamplesPerPixel") or 1)
    bits = int(ds.get("BitsAllocated") or 16)
    expected = rows * cols * frames * samples * bits // 8 if bits != 1 else 0
    if expected and length < expected:
        return f"Pixel Data holds {length} bytes where the header needs {expected}"
    if start + min(length, expected or length) > size:
        return f"the file is truncated: Pixel Data needs {length} bytes, {size - start} are there"
    return None


def _jpeg_stream_problem(path: Path, offset: int) -> str | None:
    """Why the first JPEG stream of an encapsulated Pixel Data cannot be decoded, as its own
    headers show (ISO/IEC 10918-1 B.2): a sequential DCT frame (SOF0/SOF1) whose first scan does
    not span the spectral range 0..63 (what libjpeg refuses: "scan start must be zero and scan
    stop must be 63 for the sequential operating modes").  Reads the element, offset-table and
    first-fragment headers and at most 4 KiB of the stream; None when nothing is wrong or the
    layout is not the expected one (the decoder then has the last word)."""
    try:
        with path.open("rb") as fp:
            fp.seek(offset + 12)  # tag, VR, reserved, undefined length
            item = fp.read(8)
            if len(item) < 8 or item[:4] != _ITEM_TAG:
                return None
            fp.seek(struct.unpack("<I", item[4:8])[0], 1)  # the Basic Offset Table
            item = fp.read(8)
            if len(item) < 8 or item[:4] != _ITEM_TAG:
                return None
            head = fp.read(min(struct.unpack("<I", item[4:8])[0], 4096))
    except OSError:
        return None
    if head[:2] != b"\xff\xd8":
        return None
    i, sof = 2, None
    while i + 4 <= len(head):
        if head[i] != 0xFF:
            return None
        marker = head[i + 1]
        if marker == 0xFF:  # fill byte
            i += 1
            continue
        length = int.from_bytes(head[i + 2 : i + 4], "big")
        if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):
            sof = marker - 0xC0
        elif marker == 0xDA:
            n = head[i + 4] if i + 4 < len(head) else 0
            at = i + 5 + 2 * n
            if sof is None or sof > 1 or at + 1 >= len(head):
                return None
            ss, se = head[at], head[at + 1]
            if (ss, se) != (0, 63):
                return (
                    f"JPEG stream: a sequential DCT frame (SOF{sof}) whose scan has spectral "
                    f"selection {ss}..{se}, not 0..63 (ISO/IEC 10918-1 B.2.3); no decoder reads it"
                )
            return None
        i += 2 + length
    return None


def _echo_facts(
    ds: Dataset, pf: Dataset | None, shared: Dataset | None, facts: dict[str, str]
) -> int | None:
    """``echo`` (Echo Number) or, without one, ``te`` (echo time); the echo number."""
    echo_number: int | None = None
    en = _tnum(ds, 0x00180086)
    if en is not None:
        echo_number = int(en)
    te = _num(_group_value(pf, shared, "MREchoSequence", "EffectiveEchoTime"))
    if te is None:
        te = _tnum(ds, 0x00180081)
    if echo_number is not None:
        facts["echo"] = str(echo_number)
    elif te is not None:
        facts["te"] = _fmt(round(te, 2))
    return echo_number


def _image_type(ds: Dataset, pf: Dataset | None, shared: Dataset | None) -> tuple[str, ...]:
    """Frame Type of the functional groups, else Image Type: upper-case values."""
    ftype = None
    for seq in ("MRImageFrameTypeSequence", "CTImageFrameTypeSequence", "FrameTypeSequence"):
        ftype = _group_value(pf, shared, seq, "FrameType")
        if ftype is not None:
            break
    raw_type = ftype if ftype is not None else _text(ds, 0x00080008)
    if isinstance(raw_type, str):
        raw_type = raw_type.split("\\")
    return tuple(str(v).strip().upper() for v in (raw_type or ()) if str(v).strip())


def _diffusion_facts(
    ds: Dataset, pf: Dataset | None, shared: Dataset | None, facts: dict[str, str]
) -> float | None:
    """``b`` and ``dir`` (standard attributes, else GE's private ones); the b-value."""
    b = _num(_group_value(pf, shared, "MRDiffusionSequence", "DiffusionBValue"))
    if b is None:
        b = _num(ds.get(0x00189087).value) if 0x00189087 in ds else None
    direction = None
    diff = _item(pf, "MRDiffusionSequence") or _item(shared, "MRDiffusionSequence")
    grad = _item(diff, "DiffusionGradientDirectionSequence")
    vec = grad.get("DiffusionGradientOrientation") if grad is not None else None
    if vec is None:
        vec = ds.get("DiffusionGradientOrientation")
    if vec is not None and len(vec) == 3:
        direction = tuple(float(v) for v in vec)
    if b is None or direction is None:
        is_ge = (_text(ds, 0x00080070) or "").upper().startswith("GE")
        ge_b, ge_dir = _ge_diffusion(ds) if is_ge else (None, None)
        b = b if b is not None else ge_b
        direction = direction if direction is not None else ge_dir
    if b is not None:
        facts["b"] = _fmt(round(b, 1))
        if direction is not None and b > 0:
            facts["dir"] = ",".join(_fmt(round(c, 3)) for c in direction)
    return b


def _content_facts(ds: Dataset, content: Dataset | None, facts: dict[str, str]) -> float | None:
    """Enhanced multi-frame: ``stack`` and other dimension indices (``dim``); the temporal
    position index, if the frame has one."""
    if content is None:
        return None
    if content.get("StackID") not in (None, ""):
        facts["stack"] = str(content.StackID)
    temporal = _num(content.get("TemporalPositionIndex"))
    dims = content.get("DimensionIndexValues")
    if dims is not None and not isinstance(dims, list | tuple):
        dims = [dims] if type(dims).__name__ != "MultiValue" else list(dims)
    pointers = [
        int(item.get("DimensionIndexPointer") or 0)
        for item in ds.get("DimensionIndexSequence") or ()
    ]
    if dims is not None and pointers and len(pointers) == len(list(dims)):
        skip = {0x00209057, 0x00200032, 0x00209056, 0x00209128}  # position, stack, time
        extra = [str(v) for v, p in zip(dims, pointers, strict=True) if p not in skip]
        if extra:
            facts["dim"] = ",".join(extra)
    return temporal
