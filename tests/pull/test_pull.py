"""Pull a study from a real Orthanc by C-MOVE, C-GET and QIDO/WADO; byte-equal to Orthanc's copy."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import pydicom
import pytest

from node.config import DicomwebSource, DimseSource
from node.errors import SourceError
from node.ingest.pull import PullQuery, find_studies, pull
from tests.delivery.storescp import start_storescp
from tests.pull.conftest import Archive, Received, check_equal
from tests.pull.sink import spool_in, stored_study


def test_query_dates_and_empty_query() -> None:
    q = PullQuery(patient_id="P", date_from=date(2007, 4, 1), date_to=date(2007, 4, 30))
    assert q.study_date() == "20070401-20070430"
    assert PullQuery(date_from=date(2007, 4, 25), date_to=date(2007, 4, 25)).study_date() == (
        "20070425"
    )
    with pytest.raises(SourceError, match="refusing"):
        find_studies(DimseSource(host="127.0.0.1", port=1), PullQuery(), node_ae_title="A")


def test_pull_by_c_get_is_complete_and_byte_equal(tmp_path: Path, archive: Archive) -> None:
    uid, orthanc, stored = archive.study_uid, archive.orthanc, archive.stored
    seen: list[tuple[int, int | None]] = []
    src = DimseSource(host="127.0.0.1", port=orthanc.dicom_port, ae_title="ORTHANC", method="c-get")
    with spool_in(tmp_path / "data") as spool:
        result = pull(
            src,
            PullQuery(study_uid=uid),
            sink=spool,
            node_ae_title="AINODE",
            progress=lambda d, t: seen.append((d, t)),
        )
    assert result.is_complete and result.received == 30 and result.expected == 30
    assert seen[-1] == (30, 30)
    check_equal(stored_study(tmp_path / "data", uid), stored, exact=False)


def test_pull_by_qido_wado_is_complete_and_byte_equal(tmp_path: Path, archive: Archive) -> None:
    uid, orthanc, stored, files = archive.study_uid, archive.orthanc, archive.stored, archive.files
    src = DicomwebSource(type="dicomweb", url=orthanc.dicomweb_url)
    header = pydicom.dcmread(files[0], stop_before_pixels=True)
    d = date(int(header.StudyDate[:4]), int(header.StudyDate[4:6]), int(header.StudyDate[6:]))
    query = PullQuery(patient_id=str(header.PatientID), date_from=d, date_to=d, modality="CT")
    assert find_studies(src, query, node_ae_title="AINODE") == [uid]
    assert find_studies(src, PullQuery(patient_id="nobody-here"), node_ae_title="A") == []
    with spool_in(tmp_path / "data") as spool:
        result = pull(src, query, sink=spool, node_ae_title="AINODE")
    assert result.studies == [uid]
    assert result.is_complete and result.received == 30
    got = stored_study(tmp_path / "data", uid)
    check_equal(got, stored, exact=True)
    # WADO-RS with transfer-syntax=* hands over Orthanc's file unchanged
    assert {r.data for r in got} == set(stored.values())


def test_pull_by_c_move_to_a_storescp_move_destination(tmp_path: Path, archive: Archive) -> None:
    """The C-MOVE request side against a real Orthanc; dcmtk storescp plays the node's SCP."""
    uid, orthanc, stored = archive.study_uid, archive.orthanc, archive.stored
    with (
        start_storescp(tmp_path / "scp", aet="AINODE", port=archive.node_port) as scp,
        spool_in(tmp_path / "data") as spool,
    ):
        src = DimseSource(host="127.0.0.1", port=orthanc.dicom_port, ae_title="ORTHANC")
        seen: list[tuple[int, int | None]] = []
        result = pull(
            src,
            PullQuery(study_uid=uid),
            sink=spool,
            node_ae_title="AINODE",
            progress=lambda d, t: seen.append((d, t)),
        )
        assert result.is_complete and result.received == 30 and result.expected == 30
        assert seen and seen[-1][0] == 30
        got = [
            Received(str(pydicom.dcmread(p).SOPInstanceUID), p.read_bytes()) for p in scp.files()
        ]
        check_equal(got, stored, exact=False)


def test_c_move_to_unknown_destination_is_a_clear_error(tmp_path: Path, archive: Archive) -> None:
    uid, orthanc = archive.study_uid, archive.orthanc
    src = DimseSource(host="127.0.0.1", port=orthanc.dicom_port, ae_title="ORTHANC")
    with spool_in(tmp_path / "data") as spool, pytest.raises(SourceError, match="STRANGER"):
        pull(src, PullQuery(study_uid=uid), sink=spool, node_ae_title="STRANGER")


def test_c_find_query_by_patient_date_and_modality(archive: Archive) -> None:
    src = DimseSource(host="127.0.0.1", port=archive.orthanc.dicom_port, ae_title="ORTHANC")
    ds = pydicom.dcmread(archive.files[0], stop_before_pixels=True)
    day = date(int(ds.StudyDate[:4]), int(ds.StudyDate[4:6]), int(ds.StudyDate[6:]))
    hit = PullQuery(patient_id=str(ds.PatientID), date_from=day, date_to=day, modality="CT")
    assert find_studies(src, hit, node_ae_title="AINODE") == [archive.study_uid]
    wrong_modality = PullQuery(patient_id=str(ds.PatientID), modality="MR")
    assert find_studies(src, wrong_modality, node_ae_title="AINODE") == []
    later = PullQuery(date_from=date(day.year + 1, 1, 1))
    assert find_studies(src, later, node_ae_title="AINODE") == []
