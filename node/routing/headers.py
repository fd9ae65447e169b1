"""DICOM JSON headers (PS3.18 F.2) from files or datasets, bulk data dropped.

This is the form ``node.types.Series.header`` and ``dicom_rules`` use.  Used by the CLI
(``ainode rules explain``) and tests; the node's ingest stores the same form.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pydicom
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError

from node.types import DicomJson

__all__ = ["header_from_dataset", "header_from_file"]

log = logging.getLogger(__name__)

_BULK_VRS = frozenset({"OB", "OD", "OF", "OL", "OV", "OW", "UN"})


def _drop_bulk(element: Any) -> str:
    return ""


def _strip(obj: Any) -> Any:
    """Remove InlineBinary / BulkDataURI values (pixels, private blobs) recursively."""
    if isinstance(obj, dict):
        out = {}
        for k, v in obj.items():
            if isinstance(v, dict) and ("BulkDataURI" in v or "InlineBinary" in v):
                out[k] = {"vr": v.get("vr", "UN")}
            else:
                out[k] = _strip(v)
        return out
    if isinstance(obj, list):
        return [_strip(v) for v in obj]
    return obj


def header_from_dataset(ds: Dataset) -> DicomJson:
    """The DICOM JSON header of ``ds`` without bulk data (elements that cannot be converted
    are left out rather than failing the whole header)."""
    slim = Dataset()  # a new dataset: the caller's is never modified
    for elem in ds:  # iterating a Dataset yields its elements
        if elem.VR not in _BULK_VRS:
            slim.add(elem)
    data = slim.to_json_dict(
        bulk_data_threshold=1, bulk_data_element_handler=_drop_bulk, suppress_invalid_tags=True
    )
    return _strip(data)  # type: ignore[no-any-return]


def header_from_file(path: Path) -> DicomJson:
    """Read the header of the DICOM file at ``path`` (pixels not read).

    Raises
    ------
    InvalidDicomError, OSError
        The file is not readable DICOM.
    """
    ds = pydicom.dcmread(path, stop_before_pixels=True, force=True)
    if len(ds) == 0:
        raise InvalidDicomError(f"{path}: no DICOM elements")
    return header_from_dataset(ds)
