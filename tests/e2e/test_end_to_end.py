"""The whole path with real peers: storescu -> ainode -> rules -> models -> results -> Orthanc."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pydicom
import pytest

from node.jobs.store import COMBINE_MODEL, JobStore
from node.samples import write_sample_studies
from node.types import JobState
from tests.peers.dcmtk import storescu
from tests.peers.node import start_node
from tests.peers.orthanc import start_orthanc
from tests.results.air import assert_air
from tests.util import wait_until

_FINAL = (JobState.SUCCEEDED, JobState.DEAD, JobState.CANCELLED)


def _jobs_final(store: JobStore, expected: int) -> bool:
    jobs = store.list_jobs()
    return len(jobs) >= expected and all(j.state in _FINAL for j in jobs)


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
        wait_until(lambda: _jobs_final(store, 6), timeout=600, what="all jobs finished")
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
        _assert_air_per_model(archive)

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


def _assert_air_per_model(files: list[Path]) -> None:
    """Every delivered object carries the IHE AIR points; one Device UID per model version."""
    by_model: dict[str, set[str]] = {}
    for path in files:
        ds = pydicom.dcmread(path)
        uid = assert_air(ds)
        by_model.setdefault(str(ds.ManufacturerModelName), set()).add(uid)
    assert all(len(uids) == 1 for uids in by_model.values()), by_model
    assert len({u for uids in by_model.values() for u in uids}) == len(by_model)


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
        wait_until(lambda: _jobs_final(store, 5), timeout=600, what="all jobs finished")
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
        _assert_air_per_model(delivered)
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
