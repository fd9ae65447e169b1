"""The DICOM JSON header (PS3.18 F.2) of an instance: the one builder.

The node stores this header for each series when its first instance arrives (``node.ingest``),
the router evaluates the stored header (``node.routing``), and ``ainode rules explain FILE``
evaluates the header of each file it is given (``node.cli.rules``): all three build it here, so
the dry run and the live router see the same attributes.

Bulk data is left out: Pixel Data, and binary values (OB, OD, OF, OL, OV, OW, UN) longer than
``BULK_THRESHOLD`` bytes.  Shorter binary values stay, as ``InlineBinary`` (a rule can ask whether
such an element is present).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pydicom
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError

from node.types import DicomJson

__all__ = ["BULK_THRESHOLD", "header_from_dataset", "header_from_file"]

_BULK_VRS = {"OB", "OD", "OF", "OL", "OV", "OW", "UN"}

#: Binary values longer than this many bytes are bulk data and are left out of the header.
BULK_THRESHOLD = 1024

#: ``header_from_file`` leaves values longer than this unread until the builder asks for them.
_DEFER = 64 * 1024


def _strip_bulk(obj: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for tag, element in obj.items():
        if not isinstance(element, dict) or "BulkDataURI" in element:
            continue
        if "InlineBinary" in element and len(str(element["InlineBinary"])) > BULK_THRESHOLD:
            continue
        values = element.get("Value")
        if element.get("vr") == "SQ" and isinstance(values, list):
            element = dict(element, Value=[_strip_bulk(v) for v in values if isinstance(v, dict)])
        out[tag] = element
    return out


def header_from_dataset(ds: Dataset) -> DicomJson:
    """The DICOM JSON model (PS3.18 F.2) of ``ds`` without pixel data or other bulk data.

    Elements whose value cannot be converted (bad VR content) are left out rather than failing.
    ``ds`` is not modified.
    """
    result: DicomJson = {}
    for tag in list(ds.keys()):
        if tag == 0x7FE00010 or tag.group in (0x7FE0, 0xFFFE):
            continue
        try:
            # converting a raw element can fail (wrong length for its VR, unknown VR)
            element = ds[tag]
            if element.VR in _BULK_VRS and element.VR != "SQ":
                value = element.value
                if isinstance(value, bytes) and len(value) > BULK_THRESHOLD:
                    continue
            encoded = element.to_json_dict(
                bulk_data_element_handler=lambda _e: "", bulk_data_threshold=BULK_THRESHOLD
            )
        except Exception:  # noqa: BLE001 - one bad value must not lose the whole header
            continue
        result[f"{element.tag:08X}"] = encoded
    return _strip_bulk(result)


def header_from_file(path: Path) -> DicomJson:
    """The header of the DICOM file at ``path``, as ``header_from_dataset`` builds it.

    The whole data set is parsed (elements after Pixel Data included, as when the node receives
    the file), but long values such as the pixels are not read unless the builder needs them.
    Files without a PS3.10 preamble or file meta are read too (``force``).

    Raises
    ------
    InvalidDicomError, OSError
        The file is not readable DICOM.
    """
    ds = pydicom.dcmread(path, force=True, defer_size=_DEFER)
    if len(ds) == 0:
        raise InvalidDicomError(f"{path}: no DICOM elements")
    return header_from_dataset(ds)
