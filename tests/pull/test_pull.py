"""Pull a study from a real Orthanc by C-MOVE, C-GET and QIDO/WADO; byte-equal to Orthanc's copy."""

from __future__ import annotations

import struct
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date
from io import BytesIO
from pathlib import Path

import httpx
import pydicom
import pytest

from node.config import DicomwebSource, DimseSource
from node.errors import DestinationError
from node.ingest.pull import PullQuery, _multipart_parts, find_studies, pull
from tests.conftest import CORPUS
from tests.delivery.storescp import start_storescp
from tests.peers.orthanc import OrthancPeer, start_orthanc
from tests.pull.sink import Received, make_sink
from tests.util import free_port

CHEST = "ct/chest-ct-siemens-sensation10-b40f-30sl"


def dataset_bytes(data: bytes) -> bytes:
    """The data set after the PS3.10 file meta (group length (0002,0000) says where it ends)."""
    assert data[128:132] == b"DICM"
    tag, vr = struct.unpack("<I2s", data[132:138])
    assert tag == 0x00000002 and vr == b"UL"
    (group_len,) = struct.unpack("<I", data[140:144])
    return data[144 + group_len :]


def _load(orthanc: OrthancPeer, files: list[Path]) -> dict[str, bytes]:
    """Upload ``files``; return SOP Instance UID -> Orthanc's stored file."""
    out = {}
    for f in files:
        r = httpx.post(f"{orthanc.url}/instances", content=f.read_bytes(), timeout=30)
        r.raise_for_status()
        iid = r.json()["ID"]
        sop = pydicom.dcmread(f, stop_before_pixels=True).SOPInstanceUID
        out[str(sop)] = httpx.get(f"{orthanc.url}/instances/{iid}/file", timeout=30).content
    return out


def _check_equal(got: list[Received], orthanc_files: dict[str, bytes], *, exact: bool) -> None:
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


@pytest.fixture(scope="module")
def archive(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Archive]:
    files = sorted((CORPUS / CHEST).glob("*.dcm"))
    uid = str(pydicom.dcmread(files[0], stop_before_pixels=True).StudyInstanceUID)
    node_port = free_port()
    workdir = tmp_path_factory.mktemp("archive")
    with start_orthanc(
        workdir, modalities={"ainode": ("AINODE", "127.0.0.1", node_port)}
    ) as orthanc:
        yield Archive(orthanc, node_port, uid, files, _load(orthanc, files))


def test_multipart_parser_splits_parts() -> None:
    body = b"--b1\r\nContent-Type: application/dicom\r\n\r\nAAA\r\n--b1\r\n\r\nBB\r\n--b1--\r\n"
    assert list(_multipart_parts(body, 'multipart/related; type="x"; boundary=b1')) == [
        b"AAA",
        b"BB",
    ]
    assert list(_multipart_parts(b"raw", "application/dicom")) == [b"raw"]


def test_query_dates_and_empty_query() -> None:
    q = PullQuery(patient_id="P", date_from=date(2007, 4, 1), date_to=date(2007, 4, 30))
    assert q.study_date() == "20070401-20070430"
    assert PullQuery(date_from=date(2007, 4, 25), date_to=date(2007, 4, 25)).study_date() == (
        "20070425"
    )
    with pytest.raises(DestinationError, match="refusing"):
        find_studies(DimseSource(host="127.0.0.1", port=1), PullQuery(), node_ae_title="A")


def test_pull_by_c_get_is_complete_and_byte_equal(tmp_path: Path, archive: Archive) -> None:
    uid, orthanc, stored = archive.study_uid, archive.orthanc, archive.stored
    sink, got = make_sink(tmp_path)
    seen: list[tuple[int, int | None]] = []
    src = DimseSource(host="127.0.0.1", port=orthanc.dicom_port, ae_title="ORTHANC", method="c-get")
    result = pull(
        src,
        PullQuery(study_uid=uid),
        sink=sink,
        node_ae_title="AINODE",
        progress=lambda d, t: seen.append((d, t)),
    )
    assert result.is_complete and result.received == 30 and result.expected == 30
    assert seen[-1] == (30, 30)
    _check_equal(got, stored, exact=False)


def test_pull_by_qido_wado_is_complete_and_byte_equal(tmp_path: Path, archive: Archive) -> None:
    uid, orthanc, stored, files = archive.study_uid, archive.orthanc, archive.stored, archive.files
    sink, got = make_sink(tmp_path)
    src = DicomwebSource(type="dicomweb", url=orthanc.dicomweb_url)
    header = pydicom.dcmread(files[0], stop_before_pixels=True)
    d = date(int(header.StudyDate[:4]), int(header.StudyDate[4:6]), int(header.StudyDate[6:]))
    query = PullQuery(patient_id=str(header.PatientID), date_from=d, date_to=d, modality="CT")
    assert find_studies(src, query, node_ae_title="AINODE") == [uid]
    assert find_studies(src, PullQuery(patient_id="nobody-here"), node_ae_title="A") == []
    result = pull(src, query, sink=sink, node_ae_title="AINODE")
    assert result.studies == [uid]
    assert result.is_complete and result.received == 30
    _check_equal(got, stored, exact=True)
    # WADO-RS with transfer-syntax=* hands over Orthanc's file unchanged
    assert {r.data for r in got} == set(stored.values())


def test_pull_by_c_move_to_a_storescp_move_destination(tmp_path: Path, archive: Archive) -> None:
    """The C-MOVE request side against a real Orthanc; dcmtk storescp plays the node's SCP."""
    uid, orthanc, stored = archive.study_uid, archive.orthanc, archive.stored
    with start_storescp(tmp_path / "scp", aet="AINODE", port=archive.node_port) as scp:
        src = DimseSource(host="127.0.0.1", port=orthanc.dicom_port, ae_title="ORTHANC")
        seen: list[tuple[int, int | None]] = []
        result = pull(
            src,
            PullQuery(study_uid=uid),
            sink=make_sink(tmp_path)[0],
            node_ae_title="AINODE",
            progress=lambda d, t: seen.append((d, t)),
        )
        assert result.is_complete and result.received == 30 and result.expected == 30
        assert seen and seen[-1][0] == 30
        got = [
            Received(str(pydicom.dcmread(p).SOPInstanceUID), p.read_bytes()) for p in scp.files()
        ]
        _check_equal(got, stored, exact=False)


def test_c_move_to_unknown_destination_is_a_clear_error(tmp_path: Path, archive: Archive) -> None:
    uid, orthanc = archive.study_uid, archive.orthanc
    src = DimseSource(host="127.0.0.1", port=orthanc.dicom_port, ae_title="ORTHANC")
    with pytest.raises(DestinationError, match="STRANGER"):
        pull(src, PullQuery(study_uid=uid), sink=make_sink(tmp_path)[0], node_ae_title="STRANGER")
