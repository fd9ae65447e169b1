"""WADO-RS helpers over stored files: an instance's metadata as DICOM JSON with bulk data
URIs, and its native frames (PS3.18 10.4.1.1.2-3)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pydicom

from node.errors import NotFoundError

__all__ = ["instance_frames", "instance_metadata"]

#: binary values up to this size are inline; the stored headers hold none larger
_INLINE_BYTES = 64 << 20


def instance_metadata(path: Path, instance_url: str) -> dict[str, Any]:
    """The data set of ``path`` as DICOM JSON; Pixel Data points at ``instance_url``/frames/1..N
    (as ``BulkDataURI``), every other value is inline (binary ones as ``InlineBinary``)."""
    ds = pydicom.dcmread(path, stop_before_pixels=True)
    out: dict[str, Any] = ds.to_json_dict(bulk_data_threshold=_INLINE_BYTES)
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    out["7FE00010"] = {
        "vr": "OB" if ds.file_meta.TransferSyntaxUID.is_compressed else "OW",
        "BulkDataURI": f"{instance_url}/frames/{','.join(str(n) for n in range(1, frames + 1))}",
    }
    out["00020010"] = {"vr": "UI", "Value": [str(ds.file_meta.TransferSyntaxUID)]}
    return out


def instance_frames(path: Path, numbers: list[int]) -> list[bytes]:
    """Frames ``numbers`` (1-based) of a native instance, as stored bytes.

    Raises
    ------
    NotFoundError
        A frame number out of range, or an instance whose pixel data is encapsulated
        (compressed) or not byte-aligned (1-bit).
    """
    ds = pydicom.dcmread(path)
    if ds.file_meta.TransferSyntaxUID.is_compressed or "PixelData" not in ds:
        raise NotFoundError(
            "frames of compressed or pixel-less instances are not served; retrieve the instance"
        )
    bits = int(ds.BitsAllocated)
    if bits % 8:
        raise NotFoundError(
            f"frames of {bits}-bit pixel data are not served; retrieve the instance"
        )
    count = int(ds.get("NumberOfFrames", 1) or 1)
    size = int(ds.Rows) * int(ds.Columns) * int(ds.SamplesPerPixel) * bits // 8
    data: bytes = ds.PixelData
    out = []
    for n in numbers:
        if not 1 <= n <= count:
            raise NotFoundError(f"frame {n} is out of range (1..{count})")
        out.append(data[(n - 1) * size : n * size])
    return out
