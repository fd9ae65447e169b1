"""STOW-RS against the real `python -m node serve`: kill -9 durability, Orthanc as client."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import numpy as np
import pydicom
import pytest
from dicomweb_client import DICOMwebClient

from node.samples import write_ct_series
from node.store.index import Index
from tests.peers.node import start_node
from tests.peers.orthanc import start_orthanc
from tests.util import wait_until


def _stored_bytes(data_dir: Path) -> dict[str, bytes]:
    """SOP Instance UID -> stored file bytes, read through a fresh index."""
    index = Index(data_dir / "index.sqlite")
    try:
        out = {}
        for row in index.list_studies(limit=1000):
            for inst in index.study_instances(row["study_uid"]):
                out[inst.sop_uid] = inst.path.read_bytes()
        return out
    finally:
        index.close()


@pytest.mark.slow
def test_acknowledged_stow_survives_kill_9(tmp_path: Path) -> None:
    files = write_ct_series(
        np.random.default_rng(5).normal(0, 50, (12, 64, 64)),
        spacing=(2, 1, 1),
        out_dir=tmp_path / "ct",
    )
    acknowledged: list[str] = []
    with start_node(tmp_path / "node") as node:
        client = DICOMwebClient(url=f"{node.url}/dicom-web")
        for start in range(0, len(files), 4):
            batch = [pydicom.dcmread(p) for p in files[start : start + 4]]
            result = client.store_instances(batch)
            acknowledged += [str(r.ReferencedSOPInstanceUID) for r in result.ReferencedSOPSequence]
        node.kill()  # no clean shutdown: only what was fsync'd before the 200 may count
        stored = _stored_bytes(node.data_dir)
        sent = {str(pydicom.dcmread(p).SOPInstanceUID): p.read_bytes() for p in files}
        assert len(acknowledged) == len(files)
        for sop_uid in acknowledged:
            assert stored[sop_uid] == sent[sop_uid]
        node.start()  # and the restarted node lists the study with every instance
        rows = httpx.get(f"{node.url}/api/studies", timeout=60).json()["studies"]
        assert [r["instance_count"] for r in rows] == [len(files)]


@pytest.mark.slow
def test_orthanc_pushes_a_study_over_stow(tmp_path: Path, corpus: Path) -> None:
    files = sorted((corpus / "ct" / "chest-ct-siemens-sensation10-b40f-30sl").glob("*.dcm"))[:6]
    with start_node(tmp_path / "node") as node:
        servers = {"ainode": [f"{node.url}/dicom-web/"]}
        extra = {
            "DicomWeb": {
                "Enable": True,
                "Root": "/dicom-web/",
                "StudiesMetadata": "Full",
                "Servers": servers,
            }
        }
        with start_orthanc(tmp_path / "orthanc", extra=extra) as orthanc:
            for path in files:
                r = httpx.post(f"{orthanc.url}/instances", content=path.read_bytes(), timeout=30)
                r.raise_for_status()
            studies = orthanc.get("/studies")
            assert isinstance(studies, list) and len(studies) == 1
            r = httpx.post(
                f"{orthanc.url}/dicom-web/servers/ainode/stow",
                content=json.dumps({"Resources": studies}),
                timeout=60,
            )
            assert r.status_code == 200, r.text
            sent = {
                oid: httpx.get(f"{orthanc.url}/instances/{oid}/file", timeout=30).content
                for oid in orthanc.instances()
            }
        study_uid = str(pydicom.dcmread(files[0], stop_before_pixels=True).StudyInstanceUID)

        def arrived() -> bool:
            resp = httpx.get(f"{node.url}/api/studies/{study_uid}", timeout=60)
            return resp.status_code == 200 and resp.json()["instance_count"] == len(files)

        wait_until(arrived, timeout=10, what="study listed with every instance")
        stored = _stored_bytes(node.data_dir)
        assert sorted(stored.values()) == sorted(sent.values())  # exactly what Orthanc sent
