"""The DICOM JSON header builder (node.imaging.dicom_json, re-exported by node.routing)."""

from __future__ import annotations

import warnings
from pathlib import Path

import pydicom
import pytest
from pydicom.errors import InvalidDicomError

from node.routing import header_from_dataset, header_from_file


def test_header_has_no_bulk_data_and_leaves_dataset_alone(corpus: Path) -> None:
    path = corpus / "ct" / "single-slices" / "CT_small.dcm"
    ds = pydicom.dcmread(path)
    header = header_from_dataset(ds)
    assert "PixelData" in ds  # the caller's dataset is not modified
    assert "7FE00010" not in header
    assert header["00080060"] == {"vr": "CS", "Value": ["CT"]}
    assert header_from_file(path) == header


def test_nested_bulk_data_is_dropped(corpus: Path) -> None:
    path = corpus / "enhanced" / "siemens-xa10-enhanced-mr" / "6_1.dcm"
    header = header_from_file(path)
    text = str(header)
    assert "InlineBinary" not in text and "BulkDataURI" not in text
    assert header["00080060"]["Value"] == ["MR"]


def test_unreadable_files_raise(tmp_path: Path, corpus: Path) -> None:
    empty = tmp_path / "empty.dcm"
    empty.write_bytes(b"")
    with pytest.raises((InvalidDicomError, OSError, EOFError)):
        header_from_file(empty)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        header = header_from_file(corpus / "malformed" / "badVR.dcm")  # bad value: still a header
    assert header["00080060"]["Value"] == ["RTDOSE"]
