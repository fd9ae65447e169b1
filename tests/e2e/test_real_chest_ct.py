"""A real Siemens chest CT (no synthetic headers) through a node into Orthanc and a folder;
its results pass every independent checker (split from ``test_end_to_end.py``)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pydicom
import pytest

from node.jobs.store import COMBINE_MODEL, JobStore
from node.types import JobState
from tests.e2e.flow import assert_air_per_model, jobs_final
from tests.peers.dcmtk import storescu
from tests.peers.node import start_node
from tests.peers.orthanc import start_orthanc
from tests.util import wait_until


def _run_checker(tool: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(tool), *args], capture_output=True, text=True, check=False, timeout=600
    )


@pytest.mark.slow
def test_real_chest_ct_results_pass_every_checker(
    tmp_path: Path, corpus: Path, checker_tools: Path
) -> None:
    """A real Siemens chest CT (no synthetic headers) through the node; tools we did not write."""
    series = corpus / "ct" / "chest-ct-siemens-sensation10-b40f-30sl"
    files = sorted(series.glob("*.dcm"))
    archive = tmp_path / "archive"
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
                "archive": {"type": "folder", "path": str(archive)},
            },
        ) as node,
    ):
        sent = storescu(node.dicom_port, files)
        assert len(sent.acknowledged) == len(files), sent.output[-2000:]
        store = JobStore(node.data_dir / "index.sqlite")
        wait_until(lambda: jobs_final(store, 5), timeout=600, what="all jobs finished")
        jobs = {j.job.model: j for j in store.list_jobs()}
        assert set(jobs) == {
            "lung-nodule-seg",
            "lung-nodule-detect",
            "lung-nodule-classify",
            "report-text",
            COMBINE_MODEL,  # the rule's one result set (docs/results.md)
        }
        assert {m: j.reason for m, j in jobs.items() if j.state is not JobState.SUCCEEDED} == {}
        produced = [node.data_dir / o["path"] for j in jobs.values() for o in j.outputs["objects"]]
        wait_until(
            lambda: len(pacs.instances()) >= len(produced),
            timeout=120,
            what="results in Orthanc",
        )
        delivered = sorted(archive.rglob("*.dcm"))
        assert len(delivered) == len(produced)
        kinds = {p: pydicom.dcmread(p, stop_before_pixels=True).Modality for p in delivered}
        assert {"SEG", "SR"} <= set(kinds.values())
        assert_air_per_model(delivered)
        srs = [str(p) for p, m in kinds.items() if m == "SR"]
        segs_and_srs = [str(p) for p, m in kinds.items() if m in ("SEG", "SR")]
        all_files = [str(p) for p in delivered]
        src = str(series)
        for tool, args in (
            ("check-dicom", all_files),
            ("check-sr", srs),
            ("check-dcmjs", ["--sources", src, *segs_and_srs]),
            ("check-refs", ["--sources", src, *all_files]),
        ):
            out = _run_checker(checker_tools / tool, *args)
            assert out.returncode == 0, f"{tool}:\n{out.stdout[-3000:]}\n{out.stderr[-2000:]}"
