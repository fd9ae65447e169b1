"""``chest-ct-register`` as a job on a fetched prior, end to end with real peers.

A real Orthanc is the PACS: it holds the prior chest CT of a synthetic follow-up pair
(``node.samples.followup``: known prior -> current affine and landmarks) and is the results'
destination.  A real ``ainode serve`` receives the current study by C-STORE (dcmtk
``storescu``); its rule runs ``chest-ct-register`` with ``priors``, so the node queries and
C-MOVEs the prior, the job registers it onto the current series, and the Spatial Registration
goes through the gate and the outbox to Orthanc.  The object Orthanc holds passes
``check-dicom`` (dciodvfy) and ``check-refs``, and its matrix maps the pair's prior landmarks
onto the current ones within the model card's thresholds.  A patient without a prior gets no
Spatial Registration, and the job says why.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np
import pydicom
import pytest
from pydicom.uid import generate_uid

from node.jobs.store import JobRecord, JobStore
from node.models.builtin._common import load_metrics
from node.results.registration import read_registration_matrix
from node.samples.followup import FollowupPair, make_followup_pair
from node.samples.writers import SamplePatient, write_ct_series
from node.types import NO_PRIOR, JobState, PriorState
from tests.peers.dcmtk import storescu
from tests.peers.node import NodeProcess, start_node
from tests.peers.orthanc import OrthancPeer, start_orthanc
from tests.pull.conftest import load_into
from tests.results.conftest import run_tool
from tests.util import free_port, wait_until

SEED = 7_300_011
SPACING = (3.0, 2.5, 2.5)

RULES = """version: 1
rules:
  - name: chest-ct-follow-up
    when: {Modality: CT, body_part: CHEST}
    then: {model: chest-ct-register, deliver: [pacs]}
    priors: {from: pacs, max: 1, within_days: 1095, match: {Modality: CT, body_part: CHEST}}
"""


def _write(
    hu: np.ndarray, out: Path, *, patient_id: str, date: str, frame_of_reference_uid: str
) -> list[Path]:
    """A CT series of ``hu`` (the phantom's slice k at z = k * 3 mm) dated ``date``."""
    n = hu.shape[0]
    files = write_ct_series(
        hu[::-1],  # the writer's slice 0 is the most cranial
        spacing=SPACING,
        out_dir=out,
        origin=(-170.0, -170.0, (n - 1) * SPACING[0]),
        patient=SamplePatient(name=f"TEST^{patient_id}", patient_id=patient_id),
        study_uid=generate_uid(),
        series_uid=generate_uid(),
        frame_of_reference_uid=frame_of_reference_uid,
        study_description="CT chest follow-up",
    )
    for f in files:
        ds = pydicom.dcmread(f)
        ds.StudyDate = ds.SeriesDate = ds.ContentDate = date
        ds.save_as(f)
    return files


@dataclass
class Site:
    node: NodeProcess
    pacs: OrthancPeer
    jobs: JobStore
    pair: FollowupPair
    prior_files: list[Path]
    tmp: Path


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    tmp = tmp_path_factory.mktemp("registration-job")
    pair = make_followup_pair(SEED, spacing=SPACING)
    prior_files = _write(
        pair.prior.hu, tmp / "prior", patient_id="REG-FU", date="20240301",
        frame_of_reference_uid=generate_uid(),
    )  # fmt: skip
    with follow_up_node(tmp, RULES, prior_files) as (node, pacs):
        yield Site(node, pacs, JobStore(node.data_dir / "index.sqlite"), pair, prior_files, tmp)


@contextmanager
def follow_up_node(
    tmp: Path, rules: str, prior_files: list[Path]
) -> Iterator[tuple[NodeProcess, OrthancPeer]]:
    """A real Orthanc holding ``prior_files`` (the PACS: prior source and destination ``pacs``)
    and a real node running ``rules`` with a short priors timeout."""
    node_port = free_port()
    with start_orthanc(
        tmp / "pacs", modalities={"ainode": ("AINODE", "127.0.0.1", node_port)}
    ) as pacs:
        load_into(pacs, prior_files)
        dimse = {"host": "127.0.0.1", "port": pacs.dicom_port, "ae_title": "ORTHANC"}
        (tmp / "rules.yaml").write_text(rules)
        with start_node(
            tmp / "node",
            node={"ae_title": "AINODE", "dicom_port": node_port},
            study={"stable_seconds": 2},
            rules=str(tmp / "rules.yaml"),
            sources={"pacs": {"type": "dimse", **dimse}},
            destinations={"pacs": {"type": "dimse", **dimse}},
            priors={"timeout_seconds": 120, "retry_seconds": 2},
            inference={"workers": 1, "torch_threads": 2, "job_timeout_seconds": 900},
            delivery={"backoff_base_seconds": 0.2, "backoff_max_seconds": 1.0},
        ) as node:
            yield node, pacs


def _send_current(site: Site, patient_id: str) -> tuple[str, list[Path]]:
    files = _write(
        site.pair.current.hu, site.tmp / f"current-{patient_id}", patient_id=patient_id,
        date="20260110", frame_of_reference_uid=generate_uid(),
    )  # fmt: skip
    sent = storescu(site.node.dicom_port, files)
    assert len(sent.acknowledged) == len(files), sent.output[-2000:]
    return str(pydicom.dcmread(files[0], stop_before_pixels=True).StudyInstanceUID), files


def _finished(site: Site, study_uid: str) -> JobRecord:
    def done() -> bool:
        jobs = site.jobs.list_jobs(study_uid=study_uid)
        return len(jobs) == 1 and jobs[0].state not in (JobState.QUEUED, JobState.RUNNING)

    wait_until(done, timeout=600, what=f"the registration job of study {study_uid} finished")
    (record,) = site.jobs.list_jobs(study_uid=study_uid)
    return record


def _orthanc_file(pacs: OrthancPeer, sop_uid: str) -> bytes | None:
    found = httpx.post(f"{pacs.url}/tools/lookup", content=sop_uid, timeout=60).json()
    ids = [f["ID"] for f in found if f.get("Type") == "Instance"]
    if not ids:
        return None
    return httpx.get(f"{pacs.url}/instances/{ids[0]}/file", timeout=60).content


@pytest.mark.slow
@pytest.mark.timeout(1200)
def test_prior_fetched_registered_and_delivered_as_spatial_registration(
    site: Site, checker_tools: Path
) -> None:
    study_uid, current_files = _send_current(site, "REG-FU")
    record = _finished(site, study_uid)
    assert record.state is JobState.SUCCEEDED, record.to_json()
    prior = record.job.prior
    assert prior is not None and prior.state is PriorState.FETCHED, record.to_json()
    prior_ds = pydicom.dcmread(site.prior_files[0], stop_before_pixels=True)
    assert prior.series[0].series_uid == prior_ds.SeriesInstanceUID
    assert record.outputs["prior"] == {
        "used": True,
        "study_uid": str(prior_ds.StudyInstanceUID),
        "series_uid": str(prior_ds.SeriesInstanceUID),
        "result_files": 0,
    }
    (obj,) = record.outputs["objects"]
    assert obj["modality"] == "REG"

    data: list[bytes] = []

    def arrived() -> bool:
        got = _orthanc_file(site.pacs, obj["sop_uid"])
        if got is not None:
            data.append(got)
        return got is not None

    wait_until(arrived, timeout=120, what="the Spatial Registration in Orthanc")
    path = site.tmp / "reg-from-orthanc.dcm"
    path.write_bytes(data[0])
    out = run_tool(checker_tools, "check-dicom", path)
    assert "0 error(s)" in out.splitlines()[-1], out
    run_tool(
        checker_tools, "check-refs", "--sources", current_files[0].parent,
        "--sources", site.prior_files[0].parent, path,
    )  # fmt: skip

    reg = pydicom.dcmread(path)
    assert reg.SOPClassUID == pydicom.uid.SpatialRegistrationStorage
    assert reg.StudyInstanceUID == study_uid and reg.PatientID == "REG-FU"
    current_ds = pydicom.dcmread(current_files[0], stop_before_pixels=True)
    assert reg.FrameOfReferenceUID == current_ds.FrameOfReferenceUID
    matrix = read_registration_matrix(reg, str(prior_ds.FrameOfReferenceUID))
    pair = site.pair
    mapped = pair.landmarks_prior @ matrix[:3, :3].T + matrix[:3, 3]
    tre = np.linalg.norm(mapped - pair.landmarks_current, axis=1)
    before = np.linalg.norm(pair.landmarks_prior - pair.landmarks_current, axis=1)
    thresholds = load_metrics("chest-ct-register")["thresholds"]
    assert np.median(tre) <= thresholds["tre_median_mm"], (tre, before)
    assert np.max(tre) <= 1.5 * thresholds["tre_p95_mm"], (pair.landmark_names, tre)
    assert np.median(tre) < np.median(before) / 2


@pytest.mark.slow
def test_no_prior_no_registration_and_the_job_says_why(site: Site) -> None:
    study_uid, _ = _send_current(site, "REG-NONE")
    record = _finished(site, study_uid)
    assert record.state is JobState.SUCCEEDED, record.to_json()
    assert record.job.prior is not None and record.job.prior.state is PriorState.NONE
    assert record.outputs["objects"] == []
    assert record.outputs["prior"] == {"used": False, "reason": NO_PRIOR}
    found = httpx.post(
        f"{site.pacs.url}/tools/find",
        json={"Level": "Series", "Query": {"StudyInstanceUID": study_uid}},
        timeout=60,
    ).json()
    assert found == []  # nothing of that study was sent to the PACS
