"""The whole path with real peers: storescu -> ainode -> rules -> models -> results -> Orthanc.

The synthetic sample studies here; the real Siemens chest CT with every checker in
``test_real_chest_ct.py`` (two files, so that pytest-xdist runs them on two workers at once).
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pydicom
import pytest

from node.jobs.store import COMBINE_MODEL, JobStore
from node.samples import write_sample_studies
from node.types import JobState
from tests.e2e.flow import assert_air_per_model, jobs_final
from tests.peers.dcmtk import storescu
from tests.peers.node import start_node
from tests.peers.orthanc import start_orthanc
from tests.util import wait_until


@pytest.mark.slow
def test_sample_studies_flow_through_models_into_orthanc(
    tmp_path: Path, checker_tools: Path
) -> None:
    samples = tmp_path / "samples"
    files = write_sample_studies(samples)
    with (
        start_orthanc(tmp_path / "pacs") as pacs,
        start_node(
            tmp_path / "node",
            study={"stable_seconds": 1},
            destinations={
                "pacs": {
                    "type": "dimse",
                    "host": "127.0.0.1",
                    "port": pacs.dicom_port,
                    "ae_title": pacs.aet,
                },
                "archive": {"type": "folder", "path": str(tmp_path / "archive")},
            },
        ) as node,
    ):
        sent = storescu(node.dicom_port, files)
        assert len(sent.acknowledged) == len(files), sent.output[-2000:]
        store = JobStore(node.data_dir / "index.sqlite")
        # chest CT: seg, detect, classify, report and their combined result set;
        # radiograph: cxr-classify
        wait_until(lambda: jobs_final(store, 6), timeout=600, what="all jobs finished")
        jobs = {j.job.model: j for j in store.list_jobs()}
        assert set(jobs) == {
            "lung-nodule-seg",
            "lung-nodule-detect",
            "lung-nodule-classify",
            "report-text",
            COMBINE_MODEL,
            "cxr-classify",
        }
        failed = {m: j.reason for m, j in jobs.items() if j.state is not JobState.SUCCEEDED}
        assert failed == {}
        produced = [node.data_dir / o["path"] for j in jobs.values() for o in j.outputs["objects"]]
        modalities = sorted(
            {pydicom.dcmread(p, stop_before_pixels=True).Modality for p in produced}
        )
        assert {"SEG", "SR"} <= set(modalities)

        def delivered() -> bool:
            return len(pacs.instances()) >= len(produced)

        wait_until(delivered, timeout=120, what="results in Orthanc")
        archive = sorted((tmp_path / "archive").rglob("*.dcm"))
        assert len(archive) == len(produced)
        check = subprocess.run(
            [str(checker_tools / "check-dicom"), *map(str, archive)],
            capture_output=True,
            text=True,
            check=False,
        )
        assert check.returncode == 0, check.stdout + check.stderr
        assert_air_per_model(archive)

        # results sent back to ainode never trigger AI on themselves
        before = len(store.list_jobs())
        back = storescu(node.dicom_port, archive, extra=["-R"])  # propose the files' SOP classes
        assert len(back.acknowledged) == len(archive)
        node_study = {pydicom.dcmread(p, stop_before_pixels=True).StudyInstanceUID for p in archive}
        assert node_study  # same studies as the sources, re-completed by the late instances
        wait_until(
            lambda: all(store.routed_generation(uid) >= 2 for uid in node_study),
            timeout=60,
            what="re-completion routed",
        )
        assert len(store.list_jobs()) == before
