"""A real Orthanc with ainode as a DICOM modality pushes a study (``/modalities/ainode/store``)."""

from __future__ import annotations

from pathlib import Path

import httpx
import pydicom

from node.store.index import Index
from tests.peers.node import start_node
from tests.peers.orthanc import start_orthanc
from tests.util import wait_until


def test_orthanc_pushes_a_study_that_arrives_complete(tmp_path: Path, corpus: Path) -> None:
    files = sorted((corpus / "mr/ge-signa-dwi-brain-14").glob("*"))
    study_uid = str(pydicom.dcmread(files[0], stop_before_pixels=True).StudyInstanceUID)
    with start_node(
        tmp_path / "node",
        node={"allowed_calling_aets": ["ORTHANC"]},
        study={"stable_seconds": 1.0},
    ) as node:
        modalities = {"ainode": ("AINODE", "127.0.0.1", node.dicom_port)}
        with start_orthanc(tmp_path / "orthanc", modalities=modalities) as orthanc:
            for f in files:
                r = httpx.post(f"{orthanc.url}/instances", content=f.read_bytes(), timeout=30)
                r.raise_for_status()
            studies = orthanc.get("/studies")
            assert isinstance(studies, list) and len(studies) == 1
            orthanc_study = studies[0]
            r = httpx.post(
                f"{orthanc.url}/modalities/ainode/store",
                json={"Resources": [orthanc_study], "Synchronous": True},
                timeout=120,
            )
            assert r.status_code == 200, r.text
        index = Index(node.data_dir / "index.sqlite")
        try:

            def complete() -> bool:
                row = index.study_row(study_uid)
                return row is not None and row["state"] == "complete"

            wait_until(complete, timeout=30, what="study complete")
            row = index.study_row(study_uid)
            assert row is not None and row["instance_count"] == len(files)
            insts = index.study_instances(study_uid)
            assert {i.calling_aet for i in insts} == {"ORTHANC"}
            for f in files:
                sop = str(pydicom.dcmread(f, stop_before_pixels=True).SOPInstanceUID)
                inst = index.get_instance(sop)
                assert inst is not None
                assert pydicom.dcmread(inst.path).PixelData == pydicom.dcmread(f).PixelData
        finally:
            index.close()
        r = httpx.get(f"{node.url}/api/studies/{study_uid}", timeout=60)
        assert r.status_code == 200 and r.json()["state"] == "complete"
