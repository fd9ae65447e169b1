"""A real Orthanc archive holding the chest CT study, shared by the pull tests."""

from __future__ import annotations

import struct
from collections.abc import Iterator
from dataclasses import dataclass
from io import BytesIO
from pathlib import Path

import httpx
import pydicom
import pytest

from tests.conftest import CORPUS
from tests.peers.orthanc import OrthancPeer, start_orthanc
from tests.util import free_port

CHEST = "ct/chest-ct-siemens-sensation10-b40f-30sl"


@dataclass(frozen=True)
class Received:
    sop_uid: str
    data: bytes


def dataset_bytes(data: bytes) -> bytes:
    """The data set after the PS3.10 file meta (group length (0002,0000) says where it ends)."""
    assert data[128:132] == b"DICM"
    tag, vr = struct.unpack("<I2s", data[132:138])
    assert tag == 0x00000002 and vr == b"UL"
    (group_len,) = struct.unpack("<I", data[140:144])
    return data[144 + group_len :]


def load_into(orthanc: OrthancPeer, files: list[Path]) -> dict[str, bytes]:
    """Upload ``files``; return SOP Instance UID -> Orthanc's stored file."""
    out = {}
    for f in files:
        r = httpx.post(f"{orthanc.url}/instances", content=f.read_bytes(), timeout=30)
        r.raise_for_status()
        iid = r.json()["ID"]
        sop = pydicom.dcmread(f, stop_before_pixels=True).SOPInstanceUID
        out[str(sop)] = httpx.get(f"{orthanc.url}/instances/{iid}/file", timeout=30).content
    return out


def check_equal(got: list[Received], orthanc_files: dict[str, bytes], *, exact: bool) -> None:
    """Every instance arrived once; data sets byte-equal (``exact``) or, over DIMSE, equal element
    by element with byte-equal pixel data: Orthanc stores sequences with undefined length but its
    DCMTK network layer sends them with explicit lengths (PS3.5 7.5), so the wire bytes of a
    C-GET/C-MOVE differ from Orthanc's file in those length fields only."""
    by_sop = {r.sop_uid: r.data for r in got}
    assert len(got) == len(by_sop) == len(orthanc_files)
    assert set(by_sop) == set(orthanc_files)
    for sop, data in by_sop.items():
        if exact:
            assert dataset_bytes(data) == dataset_bytes(orthanc_files[sop]), sop
            continue
        mine = pydicom.dcmread(BytesIO(data))
        theirs = pydicom.dcmread(BytesIO(orthanc_files[sop]))
        assert mine.file_meta.TransferSyntaxUID == theirs.file_meta.TransferSyntaxUID
        assert mine.PixelData == theirs.PixelData
        assert mine == theirs, sop


@dataclass(frozen=True)
class Archive:
    """A real Orthanc holding the chest CT study, which knows the node as AE AINODE."""

    orthanc: OrthancPeer
    node_port: int
    study_uid: str
    files: list[Path]
    stored: dict[str, bytes]


@pytest.fixture(scope="session")
def archive(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Archive]:
    files = sorted((CORPUS / CHEST).glob("*.dcm"))
    uid = str(pydicom.dcmread(files[0], stop_before_pixels=True).StudyInstanceUID)
    node_port = free_port()
    workdir = tmp_path_factory.mktemp("archive")
    with start_orthanc(
        workdir, modalities={"ainode": ("AINODE", "127.0.0.1", node_port)}
    ) as orthanc:
        yield Archive(orthanc, node_port, uid, files, load_into(orthanc, files))
