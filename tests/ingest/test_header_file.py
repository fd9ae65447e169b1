"""``parse_received_file``: the header of a received file, parsed in bounded memory.

Files above ``IN_MEMORY_BYTES`` are parsed up to the pixel data and the rest is walked by its
length fields.  The threshold is lowered here so small synthetic files take that path; each
case is checked against ``parse_received`` on the same bytes (the in-memory path).
"""

from __future__ import annotations

import io
import struct
from pathlib import Path

import pydicom
import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.encaps import encapsulate
from pydicom.uid import (
    CTImageStorage,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEGBaseline8Bit,
    generate_uid,
)

from node.errors import MalformedInstanceError
from node.ingest import header as header_module
from node.ingest.header import parse_received, parse_received_file


@pytest.fixture(autouse=True)
def file_path_always(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(header_module, "IN_MEMORY_BYTES", 0)
    monkeypatch.setattr(header_module, "_DEFER", 256)  # big values before the pixels: deferred


def _file(tmp_path: Path, *, syntax: str = ExplicitVRLittleEndian, encapsulated: bool = False,
          trailing: bool = False) -> bytes:  # fmt: skip
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = CTImageStorage
    ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.file_meta.TransferSyntaxUID = JPEGBaseline8Bit if encapsulated else syntax
    ds.SOPClassUID = CTImageStorage
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID
    ds.StudyInstanceUID, ds.SeriesInstanceUID = generate_uid(), generate_uid()
    ds.Modality, ds.SeriesDescription = "CT", "head"
    ds.ImageComments = "x" * 2000  # a deferred value before the pixel data
    seq_item = Dataset()
    seq_item.CodeValue = "123"
    ds.ProcedureCodeSequence = [seq_item]
    ds.Rows = ds.Columns = 32
    ds.BitsAllocated = 16 if not encapsulated else 8
    if encapsulated:
        ds.PixelData = encapsulate([b"\xff\xd8" + b"\1" * 300 + b"\xff\xd9"] * 3)
        ds["PixelData"].VR = "OB"
    else:
        ds.PixelData = b"\2" * 2048
    if trailing:
        ds.add_new(0xFFFCFFFC, "OB", b"\0" * 64)  # data set trailing padding
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    return buf.getvalue()


def _check(tmp_path: Path, data: bytes) -> None:
    path = tmp_path / "f.dcm"
    path.write_bytes(data)
    got = parse_received_file(path, len(data))
    want = parse_received(data)
    assert (got.study_uid, got.series_uid, got.sop_uid, got.sop_class_uid) == (
        want.study_uid,
        want.series_uid,
        want.sop_uid,
        want.sop_class_uid,
    )
    assert got.transfer_syntax_uid == want.transfer_syntax_uid
    assert got.series_description == "head"


@pytest.mark.parametrize(
    "kwargs",
    [
        {},
        {"syntax": ImplicitVRLittleEndian},
        {"encapsulated": True},
        {"trailing": True},
        {"encapsulated": True, "trailing": True},
    ],
)
def test_complete_files_parse_like_in_memory(tmp_path: Path, kwargs: dict[str, object]) -> None:
    _check(tmp_path, _file(tmp_path, **kwargs))  # type: ignore[arg-type]


@pytest.mark.parametrize("cut", [1, 100, 1500])
@pytest.mark.parametrize("kwargs", [{}, {"syntax": ImplicitVRLittleEndian}, {"encapsulated": True}])
def test_truncated_files_are_malformed(tmp_path: Path, kwargs: dict[str, object], cut: int) -> None:
    data = _file(tmp_path, **kwargs)[:-cut]  # type: ignore[arg-type]
    with pytest.raises(MalformedInstanceError):
        parse_received(data)  # the in-memory path agrees
    path = tmp_path / "cut.dcm"
    path.write_bytes(data)
    with pytest.raises(MalformedInstanceError, match="truncated|delimitation"):
        parse_received_file(path, len(data))


def test_encapsulated_pixel_data_without_its_delimiter_is_malformed(tmp_path: Path) -> None:
    data = _file(tmp_path, encapsulated=True)
    assert data.endswith(b"\xfe\xff\xdd\xe0\0\0\0\0")
    data = data[:-8]
    path = tmp_path / "nodelim.dcm"
    path.write_bytes(data)
    with pytest.raises(MalformedInstanceError, match="delimit"):
        parse_received_file(path, len(data))


def test_a_deferred_value_cut_before_the_pixels_is_malformed(tmp_path: Path) -> None:
    data = _file(tmp_path)
    at = data.index(b"x" * 2000)
    data = data[: at + 1000]  # ends inside ImageComments (deferred: longer than _DEFER)
    path = tmp_path / "short.dcm"
    path.write_bytes(data)
    with pytest.raises(MalformedInstanceError, match="truncated"):
        parse_received_file(path, len(data))


def test_a_pixel_length_past_the_end_is_malformed(tmp_path: Path) -> None:
    data = bytearray(_file(tmp_path))
    at = data.index(b"\xe0\x7f\x10\x00OW")
    data[at + 8 : at + 12] = struct.pack("<L", 3 * 1024**3)  # "3 GiB" of pixels declared
    path = tmp_path / "huge.dcm"
    path.write_bytes(bytes(data))
    with pytest.raises(MalformedInstanceError, match="truncated"):
        parse_received_file(path, len(data))
    assert pydicom  # imported for the save_as/encapsulate helpers above
