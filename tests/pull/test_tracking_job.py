"""Nodule tracking through the node, end to end with real peers (issue 21 §3 on §1 and §2).

A real Orthanc holds the prior chest CT of a synthetic follow-up pair
(``node.samples.followup``: the first nodule has grown since, the second is new); a real
``ainode serve`` receives the current study by C-STORE; its rule runs ``lung-nodule-detect`` with
``priors``, so the node C-MOVEs the prior, the worker loads it (``node.jobs.priors``), the
detector finds the prior's nodules itself (ainode made no SR of the prior), registers the prior
with ``chest-ct-register`` and compares.  The job's summary says which nodule is new and which
grew, and the TID 1500 SR Orthanc receives carries the comparison and passes the SR checkers.
"""

from __future__ import annotations

from pathlib import Path

import pydicom
import pytest
from pydicom.uid import generate_uid

from node.jobs.store import JobStore
from node.samples.followup import make_followup_pair
from node.types import JobState, PriorState
from tests.peers.dcmtk import storescu
from tests.pull.test_registration_job import SPACING, _orthanc_file, _write, follow_up_node
from tests.results.conftest import run_tool
from tests.util import wait_until

SEED = 7_300_011

RULES = """version: 1
rules:
  - name: chest-ct-nodules
    when: {Modality: CT, body_part: CHEST}
    then: {model: lung-nodule-detect, deliver: [pacs]}
    priors: {from: pacs, max: 1, within_days: 1095, match: {Modality: CT, body_part: CHEST}}
"""


@pytest.mark.slow
@pytest.mark.timeout(1500)
def test_the_detector_tracks_the_nodules_of_a_fetched_prior(
    tmp_path: Path, checker_tools: Path
) -> None:
    pair = make_followup_pair(SEED, spacing=SPACING)
    prior_files = _write(
        pair.prior.hu, tmp_path / "prior", patient_id="TRK-FU", date="20250301",
        frame_of_reference_uid=generate_uid(),
    )  # fmt: skip
    current_files = _write(
        pair.current.hu, tmp_path / "current", patient_id="TRK-FU", date="20260110",
        frame_of_reference_uid=generate_uid(),
    )  # fmt: skip
    with follow_up_node(tmp_path, RULES, prior_files) as (node, pacs):
        sent = storescu(node.dicom_port, current_files)
        assert len(sent.acknowledged) == len(current_files), sent.output[-2000:]
        study_uid = str(pydicom.dcmread(current_files[0]).StudyInstanceUID)
        jobs = JobStore(node.data_dir / "index.sqlite")

        def done() -> bool:
            found = jobs.list_jobs(study_uid=study_uid)
            return len(found) == 1 and found[0].state not in (
                JobState.QUEUED,
                JobState.RUNNING,
            )

        wait_until(done, timeout=1200, what="the detection job finished")
        (record,) = jobs.list_jobs(study_uid=study_uid)
        assert record.state is JobState.SUCCEEDED, record.to_json()
        assert record.job.prior is not None
        assert record.job.prior.state is PriorState.FETCHED, record.to_json()
        prior_uid = str(pydicom.dcmread(prior_files[0]).StudyInstanceUID)
        assert record.outputs["prior"]["used"] is True

        # the summary: the grown nodule grew, the new one is new (the generator's truth)
        detections = record.outputs["summary"]["detections"]
        tracked = [d for d in detections if "tracking" in d]
        assert tracked and all(d["tracking"]["prior_study_uid"] == prior_uid for d in tracked), (
            detections
        )
        # the generator grew one nodule and added one: the model-level tests
        # (tests/models/test_demo_followup.py) match them one by one; here the node path
        statuses = sorted(d["tracking"]["status"] for d in tracked)
        assert "growing" in statuses and "new" in statuses, detections
        (growing,) = [d for d in tracked if d["tracking"]["status"] == "growing"]
        assert growing["tracking"]["volume_change_percent"] > 25, growing
        assert growing["tracking"]["volume_doubling_days"] > 0, growing
        assert growing["tracking"]["interval_days"] == 315, growing  # 2025-03-01 -> 2026-01-10

        # the SR in Orthanc carries the comparison and passes the SR checkers
        (sr,) = [o for o in record.outputs["objects"] if o["modality"] == "SR"]
        data: list[bytes] = []

        def arrived() -> bool:
            got = _orthanc_file(pacs, sr["sop_uid"])
            if got is not None:
                data.append(got)
            return got is not None

        wait_until(arrived, timeout=120, what="the SR in Orthanc")
    path = tmp_path / "sr-from-orthanc.dcm"
    path.write_bytes(data[0])
    run_tool(checker_tools, "check-sr", path)  # PixelMed and dsrdump: exit 0 = no error
    out = run_tool(checker_tools, "check-dicom", path)
    assert "0 error(s)" in out.splitlines()[-1], out
    text = str(pydicom.dcmread(path))
    assert "Qualitative Difference" in text and "Difference in size" in text
