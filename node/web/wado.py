"""WADO-RS helper over stored files: an instance's metadata as DICOM JSON with bulk data URIs
(PS3.18 10.4.1.1.2); its frames are served by ``node.web.frames``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pydicom

__all__ = ["instance_metadata"]

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
