"""WADO-RS Retrieve Frames (PS3.18 10.4.1.1.3): which representation a client accepts, and the
frames of a stored instance in it.

A frame is sent either *as stored* -- the native bytes, or the compressed bitstream of one frame
of encapsulated pixel data -- or *decompressed* to native Explicit VR Little Endian bytes with
pydicom's pixel decoders (pylibjpeg, libjpeg, openjpeg, RLE).  ``choose`` reads the ``Accept``
header (PS3.18 8.7.3.5, Table 8.7.3-5):

* ``multipart/related; type="application/octet-stream"`` without ``transfer-syntax`` or with
  ``1.2.840.10008.1.2.1`` (the default, also for no ``Accept``, ``*/*`` or a bare
  ``multipart/related``): native bytes, decompressed when stored compressed;
* ``...; transfer-syntax=*``: as stored, each part labelled with the stored transfer syntax (what
  OHIF asks for by default; its codecs decode the bitstream);
* ``type="image/jpeg"`` / ``image/jls`` / ``image/jp2`` / ``image/jpx`` / ``image/dicom-rle`` /
  ``image/jphc`` (with the stored transfer syntax or none): as stored, when it is stored in that
  family;
* any other request (a transcoding to another compressed syntax) has no answer: 406.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pydicom
from pydicom.encaps import get_frame
from pydicom.pixels.utils import pixel_array
from pydicom.uid import UID

from node.errors import NotAcceptableError, NotFoundError

__all__ = ["FrameMedia", "choose", "instance_frames"]

NATIVE = "1.2.840.10008.1.2.1"
_OCTET = "application/octet-stream"
_NATIVE_STORED = {"1.2.840.10008.1.2", NATIVE, "1.2.840.10008.1.2.1.99"}  # LE bytes once read

#: media type of each compressed transfer syntax (PS3.18 Table 8.7.3-5)
MEDIA_OF: dict[str, str] = {
    "1.2.840.10008.1.2.4.50": "image/jpeg",
    "1.2.840.10008.1.2.4.51": "image/jpeg",
    "1.2.840.10008.1.2.4.57": "image/jpeg",
    "1.2.840.10008.1.2.4.70": "image/jpeg",
    "1.2.840.10008.1.2.4.80": "image/jls",
    "1.2.840.10008.1.2.4.81": "image/jls",
    "1.2.840.10008.1.2.4.90": "image/jp2",
    "1.2.840.10008.1.2.4.91": "image/jp2",
    "1.2.840.10008.1.2.4.92": "image/jpx",
    "1.2.840.10008.1.2.4.93": "image/jpx",
    "1.2.840.10008.1.2.4.201": "image/jphc",
    "1.2.840.10008.1.2.4.202": "image/jphc",
    "1.2.840.10008.1.2.4.203": "image/jphc",
    "1.2.840.10008.1.2.5": "image/dicom-rle",
}


@dataclass(frozen=True, slots=True)
class FrameMedia:
    """How frames are sent: ``media_type`` of each part and of the multipart ``type``,
    ``transfer_syntax`` of the bytes, ``as_stored`` (no decoding) or decompressed."""

    media_type: str
    transfer_syntax: str
    as_stored: bool


def _encapsulated(ts: str) -> bool:
    """True when pixel data of transfer syntax ``ts`` is encapsulated (one bitstream per frame)."""
    try:
        return bool(UID(ts).is_encapsulated)
    except ValueError:  # not a transfer syntax pydicom knows
        return ts in MEDIA_OF


def _ranges(accept: str | None) -> list[tuple[float, str, str | None]]:
    """(q, media type, transfer-syntax) of each media range, best first; the multipart
    wrapper is unwrapped to its ``type`` parameter."""
    out: list[tuple[float, int, str, str | None]] = []
    for pos, item in enumerate((accept or "").split(",")):
        fields = [f.strip() for f in item.split(";")]
        media = fields[0].lower()
        if not media:
            continue
        params: dict[str, str] = {}
        for f in fields[1:]:
            key, _, value = f.partition("=")
            params[key.strip().lower()] = value.strip().strip('"')
        if media == "multipart/related":
            media = params.get("type", "").lower() or "*/*"
        try:
            q = float(params.get("q", "1"))
        except ValueError:
            q = 1.0
        if q > 0:
            out.append((q, pos, media, params.get("transfer-syntax")))
    out.sort(key=lambda r: (-r[0], r[1]))
    return [(q, m, ts) for q, _, m, ts in out]


def choose(accept: str | None, stored_ts: str) -> FrameMedia:
    """The representation of the frames of an instance stored in ``stored_ts`` that the
    ``Accept`` header asks for (module docstring; PS3.18 8.7.3.5).

    Raises
    ------
    NotAcceptableError
        No media range of ``accept`` can be served (406).
    """
    native = FrameMedia(_OCTET, NATIVE, stored_ts in _NATIVE_STORED)
    stored_media = MEDIA_OF.get(stored_ts)
    encapsulated = _encapsulated(stored_ts)
    ranges = _ranges(accept)
    if not ranges:
        return native
    for _, media, ts in ranges:
        if media in ("*/*", "*", "application/*", _OCTET):
            if ts in (None, NATIVE):
                return native
            if ts == "*":  # as stored: a compressed bitstream, else the native bytes
                return FrameMedia(_OCTET, stored_ts, True) if encapsulated else native
            if ts == stored_ts and encapsulated:
                return FrameMedia(_OCTET, stored_ts, True)
        elif stored_media is not None and media == stored_media and ts in (None, "*", stored_ts):
            return FrameMedia(stored_media, stored_ts, True)
    raise NotAcceptableError(
        f"frames of this instance are stored as {stored_ts}; the node sends them as stored "
        f"({stored_media or _OCTET}, or {_OCTET} with transfer-syntax=*) or decompressed "
        f"({_OCTET} with transfer-syntax={NATIVE}), not as {accept!r}"
    )


def _native_frame(ds: pydicom.Dataset, index: int) -> bytes:
    """One frame decoded to native little-endian bytes (colour stays as stored: ``raw``)."""
    try:
        arr = pixel_array(ds, index=index, raw=True)
    except (NotImplementedError, RuntimeError, ValueError) as exc:
        ts = ds.file_meta.TransferSyntaxUID
        raise NotAcceptableError(
            f"frames stored as {ts} ({UID(ts).name}) cannot be decompressed here ({exc}); "
            "ask for them as stored (transfer-syntax=*) or retrieve the instance"
        ) from None
    little = arr.astype(arr.dtype.newbyteorder("<"), copy=False)
    return bytes(np.ascontiguousarray(little).tobytes())


def instance_frames(path: Path, numbers: list[int], media: FrameMedia) -> list[bytes]:
    """Frames ``numbers`` (1-based) of the instance at ``path``, in ``media``.

    Raises
    ------
    NotFoundError
        A frame number out of range, an instance without pixel data, or native pixel data that
        is not byte-aligned (1-bit).
    NotAcceptableError
        Compressed frames that no installed decoder can decompress.
    """
    ds = pydicom.dcmread(path)
    if "PixelData" not in ds:
        raise NotFoundError("this instance has no pixel data, so no frames")
    count = int(ds.get("NumberOfFrames", 1) or 1)
    for n in numbers:
        if not 1 <= n <= count:
            raise NotFoundError(f"frame {n} is out of range (1..{count})")
    stored_ts = str(ds.file_meta.TransferSyntaxUID)
    bits = int(ds.BitsAllocated)
    if media.as_stored and _encapsulated(stored_ts):
        data = ds.PixelData
        return [get_frame(data, n - 1, number_of_frames=count) for n in numbers]
    if bits % 8:
        raise NotFoundError(
            f"frames of {bits}-bit pixel data are not served; retrieve the instance"
        )
    if stored_ts in _NATIVE_STORED:
        size = int(ds.Rows) * int(ds.Columns) * int(ds.SamplesPerPixel) * bits // 8
        raw: bytes = ds.PixelData
        return [raw[(n - 1) * size : n * size] for n in numbers]
    return [_native_frame(ds, n - 1) for n in numbers]
