"""WADO-RS Retrieve Series Metadata and Retrieve Frames (issue 22 §3: what OHIF reads)."""

from __future__ import annotations

import json
import subprocess
from email.parser import BytesParser
from email.policy import HTTP
from pathlib import Path

import numpy as np
import pydicom
import pydicom.encaps
import pytest

from node.samples import write_ct_series
from tests.api.conftest import RunningNode

_OCTET = "application/octet-stream"


def _parts(content_type: str, body: bytes) -> list[bytes]:
    msg = BytesParser(policy=HTTP).parsebytes(
        f"Content-Type: {content_type}\r\n\r\n".encode() + body
    )
    parts = [p.get_payload(decode=True) for p in msg.iter_parts()]
    assert all(isinstance(p, bytes) for p in parts)
    return [bytes(p) for p in parts if isinstance(p, bytes)]


def test_metadata_and_frames(running: RunningNode, tmp_path: Path) -> None:
    voxels = np.arange(3 * 8 * 8, dtype=float).reshape(3, 8, 8)
    files = write_ct_series(voxels, spacing=(1, 1, 1), out_dir=tmp_path / "ct")
    for f in files:
        running.node.spool.store(f.read_bytes(), calling_aet="T", source="t")
    ds = pydicom.dcmread(files[1])
    study, series, sop = ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID
    base = f"/dicom-web/studies/{study}/series/{series}"
    meta = running.http.get(f"{base}/metadata")
    assert meta.status_code == 200
    assert meta.headers["content-type"].startswith("application/dicom+json")
    by_sop = {m["00080018"]["Value"][0]: m for m in meta.json()}
    assert len(by_sop) == 3
    mine = by_sop[sop]
    assert mine["00280010"]["Value"] == [8] and mine["00100020"]["Value"] == [ds.PatientID]
    uri = mine["7FE00010"]["BulkDataURI"]
    assert uri.endswith(f"{base}/instances/{sop}/frames/1")
    frames = running.http.get(uri)
    assert frames.status_code == 200
    assert 'type="application/octet-stream"' in frames.headers["content-type"]
    (frame,) = _parts(frames.headers["content-type"], frames.content)
    assert frame == ds.PixelData  # one frame: the stored bytes
    assert running.http.get(f"{base}/instances/{sop}/frames/2").status_code == 404
    assert running.http.get(f"{base}/instances/{sop}/frames/x").status_code == 404
    assert running.http.get(f"/dicom-web/studies/{study}/series/1.2.3/metadata").status_code == 404


_GE = "transfer-syntax/ge-ct-slice-15-syntaxes/CTImage.dcm"
_J2K = f"{_GE}_JPEG2000LosslessOnlyTransferSyntax_1.2.840.10008.1.2.4.90.dcm"
_NATIVE = f"{_GE}_LittleEndianExplicitTransferSyntax_1.2.840.10008.1.2.1.dcm"
_JPEG_EXT = f"{_GE}_JPEGProcess6_8TransferSyntax_1.2.840.10008.1.2.4.53.dcm"


def _store(running: RunningNode, path: Path) -> str:
    running.node.spool.store(path.read_bytes(), calling_aet="T", source="t")
    ds = pydicom.dcmread(path, stop_before_pixels=True)
    base = f"/dicom-web/studies/{ds.StudyInstanceUID}/series/{ds.SeriesInstanceUID}"
    return f"{base}/instances/{ds.SOPInstanceUID}/frames/1"


def test_frames_of_a_compressed_instance(running: RunningNode, corpus: Path) -> None:
    """A JPEG 2000 lossless CT slice: decompressed to native bytes by default (equal to the
    slice stored uncompressed), its stored bitstream for ``transfer-syntax=*`` or
    ``image/jp2``, a 406 problem for a syntax it is not stored in."""
    url = _store(running, corpus / _J2K)
    expected = pydicom.dcmread(corpus / _NATIVE).pixel_array.astype("<i2").tobytes()
    stored = pydicom.dcmread(corpus / _J2K)
    bitstream = pydicom.encaps.get_frame(stored.PixelData, 0, number_of_frames=1)
    assert bitstream != expected

    r = running.http.get(url)  # httpx asks */*
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith(
        'multipart/related; type="application/octet-stream"'
    )
    (frame,) = _parts(r.headers["content-type"], r.content)
    assert frame == expected
    assert b"Content-Type: application/octet-stream; transfer-syntax=1.2.840.10008.1.2.1\r\n" in (
        r.content
    )
    native = (
        'multipart/related; type="application/octet-stream"; transfer-syntax=1.2.840.10008.1.2.1'
    )
    r = running.http.get(url, headers={"Accept": native})
    assert _parts(r.headers["content-type"], r.content) == [expected]

    for accept, part_type in (
        ('multipart/related; type="application/octet-stream"; transfer-syntax=*', _OCTET),
        ('multipart/related; type="image/jp2"', "image/jp2"),
        ("multipart/related; type=image/jp2; transfer-syntax=1.2.840.10008.1.2.4.90", "image/jp2"),
    ):
        r = running.http.get(url, headers={"Accept": accept})
        assert r.status_code == 200, (accept, r.text)
        assert f'type="{part_type}"' in r.headers["content-type"]
        assert (
            f"Content-Type: {part_type}; transfer-syntax=1.2.840.10008.1.2.4.90\r\n".encode()
            in (r.content)
        )
        assert _parts(r.headers["content-type"], r.content) == [bitstream]

    r = running.http.get(url, headers={"Accept": 'multipart/related; type="image/jpeg"'})
    assert r.status_code == 406
    assert r.headers["content-type"] == "application/problem+json"
    assert "stored as 1.2.840.10008.1.2.4.90" in r.json()["detail"]
    # q-values: the best acceptable range wins
    r = running.http.get(
        url,
        headers={
            "Accept": 'multipart/related; type="image/jpeg", '
            'multipart/related; type="image/jp2"; q=0.5'
        },
    )
    assert r.status_code == 200 and _parts(r.headers["content-type"], r.content) == [bitstream]


def test_frames_read_by_dicomweb_client(running: RunningNode, corpus: Path) -> None:
    """dicomweb-client (what many Python tools use) reads the decompressed frame."""
    from dicomweb_client.api import DICOMwebClient

    _store(running, corpus / _J2K)
    ds = pydicom.dcmread(corpus / _J2K, stop_before_pixels=True)
    client = DICOMwebClient(f"{running.url}/dicom-web")
    (frame,) = client.retrieve_instance_frames(
        ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID, frame_numbers=[1]
    )
    expected = pydicom.dcmread(corpus / _NATIVE).pixel_array.astype("<i2").tobytes()
    assert frame == expected


def test_frames_no_decoder_can_decompress(running: RunningNode, corpus: Path) -> None:
    """12-bit JPEG extended (no maintained decoder reachable from pydicom): a 406 that says to
    ask for the stored bitstream, which is served."""
    url = _store(running, corpus / _JPEG_EXT)
    r = running.http.get(url)
    assert r.status_code == 406
    assert "cannot be decompressed here" in r.json()["detail"]
    assert "transfer-syntax=*" in r.json()["detail"]
    r = running.http.get(
        url,
        headers={"Accept": 'multipart/related; type="application/octet-stream"; transfer-syntax=*'},
    )
    assert r.status_code == 200
    stored = pydicom.dcmread(corpus / _JPEG_EXT)
    assert _parts(r.headers["content-type"], r.content) == [
        pydicom.encaps.get_frame(stored.PixelData, 0, number_of_frames=1)
    ]


@pytest.mark.slow
def test_ohif_shows_a_compressed_instance_from_the_node(
    running: RunningNode, corpus: Path, checker_tools: Path, tmp_path: Path
) -> None:
    """OHIF 3 (prebuilt, headless Chromium) backed by the node's DICOMweb renders the JPEG 2000
    slice: ``ohif-snapshot`` fails unless a viewport shows non-black pixels."""
    _store(running, corpus / _J2K)
    study = str(pydicom.dcmread(corpus / _J2K, stop_before_pixels=True).StudyInstanceUID)
    shot = tmp_path / "ohif.png"
    proc = subprocess.run(
        [
            str(checker_tools / "ohif-snapshot"),
            "--out",
            str(shot),
            "--timeout",
            "150",
            "--study",
            study,
            "--dicomweb",
            f"{running.url}/dicom-web",
        ],
        capture_output=True,
        text=True,
        timeout=400,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    report = json.loads(proc.stdout[proc.stdout.index("{") :])
    assert report["ok"] and report["study"] == study
    assert shot.stat().st_size > 20_000


def test_frame_media_negotiation() -> None:
    """``choose`` on Accept headers clients send (PS3.18 8.7.3.5), for a native and a JPEG-LS
    instance."""
    from node.errors import NotAcceptableError
    from node.web.frames import choose

    native, jls = "1.2.840.10008.1.2.1", "1.2.840.10008.1.2.4.80"
    octet = 'multipart/related; type="application/octet-stream"'
    for accept in (None, "", "*/*", "multipart/related", octet, f"{octet}; transfer-syntax=*"):
        got = choose(accept, native)
        assert (got.media_type, got.transfer_syntax) == (_OCTET, native), accept
    assert choose(None, jls).transfer_syntax == native and not choose(None, jls).as_stored
    as_stored = choose(f"{octet}; transfer-syntax=*", jls)
    assert (as_stored.media_type, as_stored.transfer_syntax, as_stored.as_stored) == (
        _OCTET,
        jls,
        True,
    )
    assert choose('multipart/related; type="image/jls"', jls).media_type == "image/jls"
    assert choose(f"{octet}; transfer-syntax={jls}", jls).as_stored
    # q=0 excludes a range; the next acceptable one wins
    both = f'multipart/related; type="image/jls"; q=0, {octet}'
    assert choose(both, jls).transfer_syntax == native
    for refused in (
        'multipart/related; type="image/jp2"',
        'multipart/related; type="image/jls"; transfer-syntax=1.2.840.10008.1.2.4.81',
        f"{octet}; transfer-syntax=1.2.840.10008.1.2.4.50",
    ):
        with pytest.raises(NotAcceptableError, match="stored as 1.2.840.10008.1.2.4.80"):
            choose(refused, jls)
    with pytest.raises(NotAcceptableError):
        choose('multipart/related; type="image/jls"', native)


def test_search_for_instances_of_a_study(running: RunningNode, tmp_path: Path) -> None:
    """QIDO-RS ``/studies/{uid}/instances`` (PS3.18 10.6.1): every series' instances, as the
    WADO-RS pull (and the UPS performer) asks for them."""
    voxels = np.zeros((2, 4, 4))
    files = write_ct_series(voxels, spacing=(1, 1, 1), out_dir=tmp_path / "qido")
    for f in files:
        running.node.spool.store(f.read_bytes(), calling_aet="T", source="t")
    heads = [pydicom.dcmread(f, stop_before_pixels=True) for f in files]
    study = heads[0].StudyInstanceUID
    resp = running.http.get(f"/dicom-web/studies/{study}/instances")
    assert resp.status_code == 200
    assert resp.headers["content-type"].startswith("application/dicom+json")
    got = {i["00080018"]["Value"][0]: i for i in resp.json()}
    assert set(got) == {h.SOPInstanceUID for h in heads}
    for h in heads:
        item = got[h.SOPInstanceUID]
        assert item["0020000E"]["Value"] == [h.SeriesInstanceUID]
        assert item["00081190"]["Value"][0].endswith(
            f"/dicom-web/studies/{study}/series/{h.SeriesInstanceUID}/instances/{h.SOPInstanceUID}"
        )
    assert running.http.get("/dicom-web/studies/1.2.3/instances").status_code == 404
