"""Hostile DICOM instances built in memory: each one a way a sender can try to hurt the node.

Every builder returns the complete PS3.10 file as bytes (preamble, ``DICM``, file meta, data set),
encoded by hand where pydicom would refuse to write it.  Nothing here is committed as a file.
"""

from __future__ import annotations

import io
import struct
import warnings
from collections.abc import Callable
from dataclasses import dataclass

from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

from node.ingest.header import file_meta_bytes

__all__ = [
    "HostileCase",
    "PHI",
    "base_dataset",
    "cases",
    "encode",
    "explicit_element",
    "with_meta",
]

#: Identifying values every hostile file carries; none of them may show up in a log.
PHI = {"PatientName": "Hostile^Harriet^Q", "PatientID": "HX-771902", "PatientBirthDate": "19470312"}


def base_dataset(*, rows: int = 4, columns: int = 4, study_uid: str | None = None) -> Dataset:
    """A small, valid CT image (16-bit, ``rows`` x ``columns``) with fresh UIDs."""
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = CTImageStorage
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SOPClassUID = CTImageStorage
    ds.SOPInstanceUID = generate_uid()
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.StudyInstanceUID = study_uid or generate_uid()
    ds.SeriesInstanceUID = generate_uid()
    ds.Modality = "CT"
    ds.BodyPartExamined = "CHEST"
    ds.PatientName = PHI["PatientName"]
    ds.PatientID = PHI["PatientID"]
    ds.PatientBirthDate = PHI["PatientBirthDate"]
    ds.ImagePositionPatient = [0.0, 0.0, 0.0]
    ds.ImageOrientationPatient = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0]
    ds.PixelSpacing = [1.0, 1.0]
    ds.Rows, ds.Columns = rows, columns
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated = ds.BitsStored = 16
    ds.HighBit = 15
    ds.PixelRepresentation = 1
    ds.PixelData = b"\x01\x00" * (rows * columns)
    return ds


def encode(ds: Dataset) -> bytes:
    """``ds`` as a PS3.10 file (pydicom's own encoder, no validation of values)."""
    buf = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # unknown character sets are the point of some cases
        ds.save_as(buf, enforce_file_format=True)
    return buf.getvalue()


def explicit_element(tag: int, vr: bytes, value: bytes, *, length: int | None = None) -> bytes:
    """One explicit VR little endian element (PS3.5 7.1.2); ``length`` overrides the real one."""
    n = len(value) if length is None else length
    head = struct.pack("<HH", tag >> 16, tag & 0xFFFF) + vr
    if vr in (b"OB", b"OW", b"OF", b"OD", b"OL", b"OV", b"SQ", b"UC", b"UR", b"UT", b"UN"):
        return head + b"\0\0" + struct.pack("<I", n) + value
    return head + struct.pack("<H", n) + value


def with_meta(body: bytes, *, sop_uid: str = "1.2.3.4", sop_class: str = CTImageStorage) -> bytes:
    """Prepend preamble and file meta (explicit VR little endian) to a hand-encoded data set."""
    return (
        file_meta_bytes(
            sop_class_uid=sop_class,
            sop_instance_uid=sop_uid,
            transfer_syntax_uid=ExplicitVRLittleEndian,
            implementation_class_uid="1.2.826.0.1.3680043.9.7433.1.1",
            implementation_version_name="HOSTILE",
        )
        + body
    )


def _uid_elements(study: bytes, series: bytes, sop: bytes) -> tuple[bytes, bytes, bytes]:
    return (
        explicit_element(0x0020000D, b"UI", study),
        explicit_element(0x0020000E, b"UI", series),
        explicit_element(0x00080018, b"UI", sop),
    )


def _identity(*, study: bytes, series: bytes, sop: bytes) -> bytes:
    """Tags in ascending order: SOP class, SOP instance, patient, study, series UIDs."""
    st, se, so = _uid_elements(study, series, sop)
    return b"".join(
        (
            explicit_element(0x00080016, b"UI", CTImageStorage.encode() + b"\0"),
            so,
            explicit_element(0x00080060, b"CS", b"CT"),
            explicit_element(0x00100010, b"PN", PHI["PatientName"].encode() + b" "),
            explicit_element(0x00100020, b"LO", PHI["PatientID"].encode() + b" "),
            explicit_element(0x00100030, b"DA", PHI["PatientBirthDate"].encode()),
            st,
            se,
        )
    )


def _uid(text: str) -> bytes:
    raw = text.encode("utf-8", "surrogateescape")
    return raw + b"\0" if len(raw) % 2 else raw


def deep_nesting(depth: int = 3000) -> bytes:
    """A sequence nested ``depth`` levels deep (undefined lengths): pydicom recurses per level."""
    item_start = b"\xfe\xff\x00\xe0\xff\xff\xff\xff"
    item_end = b"\xfe\xff\x0d\xe0\x00\x00\x00\x00"
    seq_end = b"\xfe\xff\xdd\xe0\x00\x00\x00\x00"
    seq_start = struct.pack("<HH", 0x0040, 0xA730) + b"SQ\0\0" + b"\xff\xff\xff\xff"
    nested = seq_start + (item_start + seq_start) * depth + (seq_end + item_end) * depth + seq_end
    uid = generate_uid()
    body = _identity(study=_uid(generate_uid()), series=_uid(generate_uid()), sop=_uid(uid))
    return with_meta(body + nested, sop_uid=uid)


def huge_declared_image() -> bytes:
    """Rows = Columns = 65535 and NumberOfFrames 65535, with 8 bytes of pixel data."""
    ds = base_dataset()
    ds.Rows = ds.Columns = 65535
    ds.NumberOfFrames = 65535
    ds.PixelData = b"\0" * 8
    return encode(ds)


def huge_declared_slice() -> bytes:
    """One 65535 x 65535 frame declared, 8 bytes of pixel data (no NumberOfFrames)."""
    ds = base_dataset()
    ds.Rows = ds.Columns = 65535
    ds.PixelData = b"\0" * 8
    return encode(ds)


def truncated_pixel_data() -> bytes:
    """A valid 64 x 64 image whose file ends halfway through the pixel data."""
    data = encode(base_dataset(rows=64, columns=64))
    return data[: len(data) - 4096]


def short_pixel_data() -> bytes:
    """Complete elements, but Pixel Data holds half the bytes Rows x Columns needs."""
    ds = base_dataset(rows=64, columns=64)
    ds.PixelData = b"\0" * (64 * 64)
    return encode(ds)


def wrong_vr_rows() -> bytes:
    """Rows encoded as a 3-byte US and Columns as text (VR/length mismatches)."""
    uid = generate_uid()
    body = _identity(study=_uid(generate_uid()), series=_uid(generate_uid()), sop=_uid(uid))
    body += explicit_element(0x00280010, b"US", b"\x40\x00\x00")
    body += explicit_element(0x00280011, b"US", b"64")
    body += explicit_element(0x7FE00010, b"OW", b"\0" * 16)
    return with_meta(body, sop_uid=uid)


def uid_as_binary_vr() -> bytes:
    """Study Instance UID sent with VR OB and binary content."""
    uid = generate_uid()
    st, se, so = _uid_elements(b"\xff\xfe\x00\x01", _uid(generate_uid()), _uid(uid))
    body = (
        explicit_element(0x00080016, b"UI", CTImageStorage.encode() + b"\0")
        + so
        + explicit_element(0x0020000D, b"OB", b"\xff\xfe\x00\x01")
        + se
    )
    del st
    return with_meta(body, sop_uid=uid)


def unknown_vr() -> bytes:
    """An element with the VR bytes ``ZZ`` (not a DICOM VR) among valid ones."""
    uid = generate_uid()
    body = _identity(study=_uid(generate_uid()), series=_uid(generate_uid()), sop=_uid(uid))
    body += b"\x09\x00\x10\x00ZZ\x04\x00abcd"
    return with_meta(body, sop_uid=uid)


def zero_length_study_uid() -> bytes:
    """Study Instance UID present with length 0."""
    uid = generate_uid()
    return with_meta(_identity(study=b"", series=_uid(generate_uid()), sop=_uid(uid)), sop_uid=uid)


def zero_length_everything() -> bytes:
    """Valid UIDs, but Rows, Columns, Modality, PixelData all zero length."""
    uid = generate_uid()
    body = _identity(study=_uid(generate_uid()), series=_uid(generate_uid()), sop=_uid(uid))
    body += explicit_element(0x00280010, b"US", b"")
    body += explicit_element(0x00280011, b"US", b"")
    body += explicit_element(0x7FE00010, b"OW", b"")
    return with_meta(body, sop_uid=uid)


def length_past_end() -> bytes:
    """A private element declaring 4 GB - 2 bytes of value, followed by 10 bytes."""
    uid = generate_uid()
    body = _identity(study=_uid(generate_uid()), series=_uid(generate_uid()), sop=_uid(uid))
    body += explicit_element(0x00291010, b"OB", b"\0" * 10, length=0xFFFFFFFE)
    return with_meta(body, sop_uid=uid)


def giant_private_element(size: int) -> bytes:
    """A valid CT image plus a private OB element of ``size`` bytes."""
    ds = base_dataset()
    ds.add_new(0x00290010, "LO", "HOSTILE TEST")
    ds.add_new(0x00291000, "OB", b"\xab" * size)
    return encode(ds)


def charset_mismatch() -> bytes:
    """SpecificCharacterSet ISO_IR 100 (Latin-1) but UTF-8 and invalid bytes in text values."""
    ds = base_dataset()
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.SeriesDescription = "placeholder"
    ds["SeriesDescription"].value = b"Th\xc3\xb6rax \xff\xfe\x80"
    return encode(ds)


def charset_unknown() -> bytes:
    """SpecificCharacterSet names a character set that does not exist."""
    ds = base_dataset()
    ds.SpecificCharacterSet = "ISO_IR 999"
    ds.SeriesDescription = "placeholder"
    ds["SeriesDescription"].value = b"\x1b$B\xff\xff\x1b(B chest"
    return encode(ds)


def charset_utf8_invalid() -> bytes:
    """SpecificCharacterSet ISO_IR 192 (UTF-8) with bytes that are not UTF-8."""
    ds = base_dataset()
    ds.SpecificCharacterSet = ["ISO_IR 192", "ISO 2022 IR 87"]
    ds.SeriesDescription = "placeholder"
    ds["SeriesDescription"].value = b"\xc3\x28\xa0\xa1 \xed\xa0\x80"
    ds.BodyPartExamined = "CHEST"
    return encode(ds)


def _bad_uid_file(study: str) -> bytes:
    uid = generate_uid()
    body = _identity(study=_uid(study), series=_uid(generate_uid()), sop=_uid(uid))
    return with_meta(body, sop_uid=uid)


def _bad_sop_uid_file(sop: str) -> bytes:
    body = _identity(study=_uid(generate_uid()), series=_uid(generate_uid()), sop=_uid(sop))
    return with_meta(body, sop_uid="1.2.3.4")


@dataclass(frozen=True)
class HostileCase:
    """One hostile file and what the node must answer (``None``: stored, fails later)."""

    name: str
    build: Callable[[], bytes]
    status: int | None  # expected C-STORE status; STOW FailureReason is the same value
    reason: str  # a fragment of the quarantine reason / error comment


def cases() -> list[HostileCase]:
    """Every generated hostile case (the 100 MB element is built by its own test)."""
    return [
        HostileCase("deep-nesting", deep_nesting, 0xC000, "nest"),
        HostileCase("huge-declared-image", huge_declared_image, None, ""),
        HostileCase("huge-declared-slice", huge_declared_slice, None, ""),
        HostileCase("truncated-pixel-data", truncated_pixel_data, 0xC000, "truncated"),
        HostileCase("short-pixel-data", short_pixel_data, None, ""),
        HostileCase("wrong-vr-rows", wrong_vr_rows, None, ""),
        HostileCase("uid-as-binary-vr", uid_as_binary_vr, 0xC000, "StudyInstanceUID"),
        HostileCase("unknown-vr", unknown_vr, None, ""),
        HostileCase("zero-length-study-uid", zero_length_study_uid, 0xA900, "StudyInstanceUID"),
        HostileCase("zero-length-everything", zero_length_everything, None, ""),
        HostileCase("length-past-end", length_past_end, 0xC000, "truncated"),
        HostileCase("charset-mismatch", charset_mismatch, None, ""),
        HostileCase("charset-unknown", charset_unknown, None, ""),
        HostileCase("charset-utf8-invalid", charset_utf8_invalid, None, ""),
        HostileCase("uid-dotdot", lambda: _bad_uid_file("../../etc"), 0xC000, "StudyInstance"),
        HostileCase("uid-slash", lambda: _bad_uid_file("1.2/3.4"), 0xC000, "StudyInstance"),
        HostileCase("uid-nul", lambda: _bad_uid_file("1.2\x003.4"), 0xC000, "StudyInstance"),
        HostileCase("uid-long", lambda: _bad_uid_file("1." + "2" * 70), 0xC000, "StudyInstance"),
        HostileCase("uid-unicode", lambda: _bad_uid_file("1.2.\u0663"), 0xC000, "StudyInstance"),
        HostileCase("sop-uid-dotdot", lambda: _bad_sop_uid_file(".."), 0xC000, "SOPInstance"),
        HostileCase("sop-uid-abs-path", lambda: _bad_sop_uid_file("/tmp/x"), 0xC000, "SOPInstance"),
    ]
