"""WADO-RS Retrieve Series Metadata and Retrieve Frames (issue 22 §3: what OHIF reads)."""

from __future__ import annotations

from email.parser import BytesParser
from email.policy import HTTP
from pathlib import Path

import numpy as np
import pydicom

from node.samples import write_ct_series
from tests.api.conftest import RunningNode


def _parts(content_type: str, body: bytes) -> list[bytes]:
    msg = BytesParser(policy=HTTP).parsebytes(
        f"Content-Type: {content_type}\r\n\r\n".encode() + body
    )
    return [p.get_payload(decode=True) for p in msg.iter_parts()]


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
