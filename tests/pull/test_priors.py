"""A rule's ``priors`` end to end: a real Orthanc (the PACS) holding several studies of each
patient, a real node (its SCP is the C-MOVE destination, its spool stores C-GET and WADO-RS
instances, its SQLite job store holds the waiting jobs), queried and retrieved over DIMSE and
DICOMweb.

Patients in the archive (current studies are dated 2026-01-10):

* ``PRI-MOVE`` and ``PRI-WEB``: a chest CT of 2024-03-01 (the prior to take), an abdomen CT of
  2025-06-01 (newer, but another body part) and a chest CT of 2020-01-01 (outside
  ``within_days``);
* ``PRI-ABD``: only an abdomen CT (a prior of another body part: not taken);
* ``PRI-NONE``: nothing.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np
import pydicom
import pytest
from pydicom.uid import generate_uid

from node.app import Node
from node.jobs.store import JobRecord
from node.samples.writers import write_ct_series
from node.types import NO_PRIOR, PRIOR_FAILED, JobState, PriorState
from tests.peers.orthanc import OrthancPeer, start_orthanc
from tests.pull.conftest import load_into
from tests.pull.priors_site import priors_config
from tests.util import free_port, wait_until

TIMEOUT_SECONDS = 20.0  # priors.timeout_seconds of the node under test
TOKEN = "prior-reviewer-0123456789"

RULES = """version: 1
rules:
  - name: via-move
    when: {StudyDescription: {contains: move}}
    then: {model: prior-probe}
    priors: {from: move, max: 1, within_days: 1095, match: {Modality: CT}}
  - name: via-get
    when: {StudyDescription: {contains: get}}
    then: {model: prior-probe}
    priors: {from: get, within_days: 1095}
  - name: via-web
    when: {StudyDescription: {contains: web}}
    then: {model: prior-probe}
    priors: {from: web, max: 2, within_days: 1095, match: {Modality: CT, body_part: CHEST}}
  - name: via-down
    when: {StudyDescription: {contains: unreachable-dimse}}
    then: {model: prior-probe}
    priors: {from: down}
  - name: via-down-web
    when: {StudyDescription: {contains: unreachable-qido}}
    then: {model: prior-probe}
    priors: {from: down-web}
"""


def _write(
    out: Path,
    *,
    patient_id: str,
    date: str,
    body_part: str,
    description: str,
    slices: int = 3,
    issuer: str | None = None,
) -> list[Path]:
    """A small synthetic CT study of ``patient_id`` on ``date``."""
    files = write_ct_series(
        np.full((slices, 16, 16), -700.0),
        spacing=(2.5, 1.0, 1.0),
        out_dir=out,
        study_uid=generate_uid(),
        series_uid=generate_uid(),
        study_description=description,
        series_description=f"{body_part.title()} 2.5mm",
        body_part=body_part,
    )
    for f in files:
        ds = pydicom.dcmread(f)
        ds.PatientID, ds.PatientName = patient_id, f"Test^{patient_id}"
        if issuer is not None:
            ds.IssuerOfPatientID = issuer
        ds.StudyDate = ds.SeriesDate = ds.ContentDate = date
        ds.save_as(f)
    return files


def _uids(files: list[Path]) -> tuple[str, str]:
    ds = pydicom.dcmread(files[0], stop_before_pixels=True)
    return str(ds.StudyInstanceUID), str(ds.SeriesInstanceUID)


@dataclass
class Site:
    node: Node
    orthanc: OrthancPeer
    tmp: Path
    priors: dict[str, tuple[str, str]]  # name -> (study UID, series UID) in the archive

    def api(self, path: str) -> dict:
        r = httpx.get(
            f"http://127.0.0.1:{self.node.http_port}{path}",
            headers={"Authorization": f"Bearer {TOKEN}"},
            timeout=30,
        )
        r.raise_for_status()
        out: dict = r.json()
        return out


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    tmp = tmp_path_factory.mktemp("priors")
    node_port = free_port()
    archive: dict[str, list[Path]] = {}
    for pid in ("PRI-MOVE", "PRI-WEB", "PRI-GET"):
        archive[f"{pid}-chest"] = _write(
            tmp / pid / "chest", patient_id=pid, date="20240301", body_part="CHEST",
            description="CT chest",
        )  # fmt: skip
        archive[f"{pid}-abdomen"] = _write(
            tmp / pid / "abd", patient_id=pid, date="20250601", body_part="ABDOMEN",
            description="CT abdomen",
        )  # fmt: skip
        archive[f"{pid}-old"] = _write(
            tmp / pid / "old", patient_id=pid, date="20200101", body_part="CHEST",
            description="CT chest",
        )  # fmt: skip
    for issuer, day in (("HOSP-A", "20240301"), ("HOSP-B", "20250301")):
        # the same Patient ID in two issuers' domains: two patients; HOSP-B's study is newer
        archive[f"PRI-ISS-{issuer}"] = _write(
            tmp / "iss" / issuer, patient_id="PRI-ISS", date=day, body_part="CHEST",
            description="CT chest", issuer=issuer,
        )  # fmt: skip
    archive["PRI-ABD-abdomen"] = _write(
        tmp / "abd" / "abd", patient_id="PRI-ABD", date="20250601", body_part="ABDOMEN",
        description="CT abdomen",
    )  # fmt: skip
    rules = tmp / "rules.yaml"
    rules.write_text(RULES)
    env = pytest.MonkeyPatch()
    env.setenv("AINODE_TEST_PRIORS_TOKEN", TOKEN)
    with start_orthanc(
        tmp / "orthanc", modalities={"ainode": ("AINODE", "127.0.0.1", node_port)}
    ) as orthanc:
        load_into(orthanc, [f for files in archive.values() for f in files])
        config = priors_config(
            tmp,
            node_port=node_port,
            rules=rules,
            orthanc=orthanc,
            priors={"timeout_seconds": TIMEOUT_SECONDS, "retry_seconds": 1},
            sources={
                "down": {"type": "dimse", "host": "127.0.0.1", "port": free_port()},
                "down-web": {"type": "dicomweb", "url": f"http://127.0.0.1:{free_port()}/"},
            },
            auth={
                "tokens": {
                    "reviewer": {"token_env": "AINODE_TEST_PRIORS_TOKEN", "role": "reviewer"}
                }
            },
        )
        node = Node(config)
        node.start()
        try:
            yield Site(node, orthanc, tmp, {k: _uids(v) for k, v in archive.items()})
        finally:
            node.stop()
            env.undo()


def _send_current(site: Site, patient_id: str, description: str, issuer: str | None = None) -> str:
    """Store the current chest CT of ``patient_id`` in the node and complete (route) it."""
    files = _write(
        site.tmp / "current" / f"{patient_id}-{description}",
        patient_id=patient_id,
        date="20260110",
        body_part="CHEST",
        description=f"CT chest {description}",
        issuer=issuer,
    )
    for f in files:
        site.node.spool.store(f.read_bytes(), calling_aet="TEST", source="test")
    study_uid, _ = _uids(files)
    site.node.tracker.complete(study_uid)
    return study_uid


def _job(site: Site, study_uid: str) -> JobRecord:
    jobs = site.node.jobs.list_jobs(study_uid=study_uid)
    assert len(jobs) == 1, [j.to_json() for j in jobs]
    return jobs[0]


def _resolved(site: Site, study_uid: str, timeout: float = 60) -> JobRecord:
    """The job once its prior is known (or its wait ended) and it ran."""

    def done() -> bool:
        rec = _job(site, study_uid)
        return rec.state not in (JobState.QUEUED, JobState.RUNNING)

    wait_until(done, timeout=timeout, what=f"the job of study {study_uid} ran")
    return _job(site, study_uid)


def _check_fetched(site: Site, study_uid: str, patient_id: str, rule: str) -> None:
    prior_study, prior_series = site.priors[f"{patient_id}-chest"]
    rec = _resolved(site, study_uid)
    assert rec.job.rule == rule
    prior = rec.job.prior
    assert prior is not None and prior.state is PriorState.FETCHED, rec.to_json()
    assert [(s.study_uid, s.series_uid) for s in prior.series] == [(prior_study, prior_series)]
    assert prior.series[0].study_date == "20240301" and prior.series[0].body_part == "CHEST"
    assert rec.attempts == 1  # it ran (the probe model is unknown: it fails, saying so)
    index = site.node.index
    # stored like any instance, marked as a prior, and not routed as a new study
    assert len(index.series_instances(prior_series)) == 3
    assert index.prior_of(prior_study) == study_uid
    routing = site.node.jobs.routing(prior_study)
    assert routing is not None and routing["decisions"]["prior_of"] == study_uid
    assert site.node.jobs.list_jobs(study_uid=prior_study) == []
    # what the HTTP API says: the prior study's origin, the job's prior
    assert site.api(f"/api/studies/{prior_study}")["prior_of"] == study_uid
    assert site.api(f"/api/studies/{study_uid}")["prior_of"] is None
    job = site.api(f"/api/jobs/{rec.job.job_id}")
    assert job["prior"]["state"] == "fetched"
    assert job["prior"]["series"][0]["series_uid"] == prior_series
    # only the chosen series came: not the newer abdomen study, not the one outside the window
    for other in ("abdomen", "old"):
        assert index.study_row(site.priors[f"{patient_id}-{other}"][0]) is None


def test_prior_fetched_with_c_move(site: Site) -> None:
    study_uid = _send_current(site, "PRI-MOVE", "move")
    _check_fetched(site, study_uid, "PRI-MOVE", "via-move")


def test_prior_fetched_with_qido_and_wado(site: Site) -> None:
    study_uid = _send_current(site, "PRI-WEB", "web")
    _check_fetched(site, study_uid, "PRI-WEB", "via-web")


def test_prior_fetched_with_c_get(site: Site) -> None:
    study_uid = _send_current(site, "PRI-GET", "get")
    _check_fetched(site, study_uid, "PRI-GET", "via-get")


@pytest.mark.parametrize("via", ["move", "web"])
def test_issuer_of_patient_id_decides_whose_prior(site: Site, via: str) -> None:
    study_uid = _send_current(site, "PRI-ISS", via, issuer="HOSP-A")
    rec = _resolved(site, study_uid)
    prior = rec.job.prior
    assert prior is not None and prior.state is PriorState.FETCHED, rec.to_json()
    assert [s.series_uid for s in prior.series] == [site.priors["PRI-ISS-HOSP-A"][1]]
    assert site.node.index.study_row(site.priors["PRI-ISS-HOSP-B"][0]) is None


@pytest.mark.parametrize("via", ["move", "web"])
def test_prior_of_another_body_part_is_not_taken(site: Site, via: str) -> None:
    study_uid = _send_current(site, "PRI-ABD", via)
    rec = _resolved(site, study_uid)
    assert rec.job.prior is not None
    assert (rec.job.prior.state, rec.job.prior.reason) == (PriorState.NONE, NO_PRIOR)
    assert rec.job.prior.series == ()
    assert site.node.index.study_row(site.priors["PRI-ABD-abdomen"][0]) is None
    assert rec.to_json()["prior"]["reason"] == "no prior available"


@pytest.mark.parametrize("via", ["move", "web"])
def test_no_prior(site: Site, via: str) -> None:
    study_uid = _send_current(site, "PRI-NONE", via)
    rec = _resolved(site, study_uid)
    assert rec.job.prior is not None
    assert (rec.job.prior.state, rec.job.prior.reason) == (PriorState.NONE, NO_PRIOR)


@pytest.mark.slow
def test_source_down_jobs_wait_for_the_timeout_then_run_with_the_reason(site: Site) -> None:
    started = time.time()
    studies = {
        via: _send_current(site, "PRI-NONE", f"unreachable-{via}") for via in ("dimse", "qido")
    }
    for study_uid in studies.values():
        waiting = _job(site, study_uid)
        assert waiting.state is JobState.QUEUED
        assert waiting.job.prior is not None and waiting.job.prior.state is PriorState.WAITING
    expected = {
        "dimse": "refused or did not answer the association",
        "qido": "QIDO-RS search at http://127.0.0.1:",
    }
    for via, study_uid in studies.items():
        rec = _resolved(site, study_uid, timeout=TIMEOUT_SECONDS + 60)
        prior = rec.job.prior
        assert prior is not None and prior.state is PriorState.FAILED
        assert prior.reason is not None and prior.reason.startswith(f"{PRIOR_FAILED}: ")
        assert expected[via] in prior.reason, prior.reason
        assert "PRI-NONE" not in prior.reason  # no patient identifier in what the job says
        assert rec.started_at is not None and rec.started_at >= started + TIMEOUT_SECONDS - 1
        assert rec.attempts == 1
