"""The hand-encoded file meta equals pynetdicom's (PS3.10 7.1) and reads back with pydicom."""

from __future__ import annotations

import io

import pytest
from pydicom import dcmread
from pydicom.uid import UID, CTImageStorage, ExplicitVRLittleEndian, ImplicitVRLittleEndian
from pynetdicom import PYNETDICOM_IMPLEMENTATION_UID, PYNETDICOM_IMPLEMENTATION_VERSION
from pynetdicom.dsutils import create_file_meta, encode_file_meta

from node.ingest.header import dataset_offset, file_meta_bytes


@pytest.mark.parametrize(
    ("sop_class", "sop_instance", "syntax", "version"),
    [
        (CTImageStorage, "1.2.3.4", ExplicitVRLittleEndian, PYNETDICOM_IMPLEMENTATION_VERSION),
        ("1.2.840.10008.5.1.4.1.1.7", "1.2.3.45", ImplicitVRLittleEndian, "ODD"),
        ("1.2.3", "9" * 64, "1.2.840.10008.1.2.4.50", "EVEN"),
    ],
)
def test_file_meta_bytes_match_pynetdicom(
    sop_class: str, sop_instance: str, syntax: str, version: str
) -> None:
    ours = file_meta_bytes(
        sop_class_uid=sop_class,
        sop_instance_uid=sop_instance,
        transfer_syntax_uid=syntax,
        implementation_class_uid=PYNETDICOM_IMPLEMENTATION_UID,
        implementation_version_name=version,
    )
    meta = create_file_meta(
        sop_class_uid=UID(sop_class),
        sop_instance_uid=UID(sop_instance),
        transfer_syntax=UID(syntax),
        implementation_uid=PYNETDICOM_IMPLEMENTATION_UID,
        implementation_version=version,
    )
    assert ours == b"\0" * 128 + b"DICM" + encode_file_meta(meta)
    back = dcmread(io.BytesIO(ours)).file_meta
    assert back.MediaStorageSOPInstanceUID == sop_instance
    assert back.TransferSyntaxUID == syntax
    assert back.FileMetaInformationGroupLength == len(ours) - 132 - 12
    assert dataset_offset(ours + b"\x08\x00\x16\x00") == len(ours)
