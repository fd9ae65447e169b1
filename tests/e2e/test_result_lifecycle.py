"""Result lifecycle through a running node and two real Orthancs (issue 18 §4).

One CT rule with one model delivers to an Orthanc by DIMSE (``pacs``: IOCM notes flag) and to
another by REST with ``delete_rejected`` (``rest``).  A late instance re-opens the study: the
new job's results arrive and the old set is rejected (note at ``pacs``, deleted at ``rest``).
The operator then retracts the new set over the API and retries its job: nothing comes back.
The CLI lists both rejections and refuses a second retraction.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import httpx
import numpy as np
import pydicom
import pytest

from node.jobs.store import JobStore
from node.samples.writers import write_ct_series
from node.types import JobState
from tests.e2e.lifecycle import ct_series, lifecycle_node, notes, result_sops, sops
from tests.models.builders import write_body_model
from tests.peers.dcmtk import storescu
from tests.peers.node import NodeProcess
from tests.results.conftest import run_tool
from tests.util import wait_until

ROOT = Path(__file__).resolve().parents[2]
MODEL, RULE = "tiny-body", "ct-body"


def _succeeded(store: JobStore) -> list[str]:
    return [j.job.job_id for j in store.list_jobs() if j.state is JobState.SUCCEEDED]


def _cli(node: NodeProcess, *args: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    return subprocess.run(
        [sys.executable, "-m", "node", "results", *args, "--config", str(node.config_path)],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
        check=False,
    )


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_late_instance_supersedes_retract_and_retry_leave_one_live_copy(
    tmp_path: Path, checker_tools: Path
) -> None:
    models = tmp_path / "node" / "models"
    write_body_model(models, name=MODEL, roi="[8, 48, 48]")
    rules = tmp_path / "node" / "rules.yaml"
    rules.write_text(
        "version: 1\nrules:\n"
        f"  - name: {RULE}\n    when: {{Modality: CT}}\n"
        f"    then: {{model: {MODEL}, deliver: [pacs, rest]}}\n"
    )
    files = ct_series(tmp_path / "in", seed=7)
    first = pydicom.dcmread(files[0], stop_before_pixels=True)
    late = write_ct_series(
        np.full((1, 48, 48), -100.0, dtype=np.float32),
        spacing=(2.5, 1.0, 1.0),
        out_dir=tmp_path / "late",
        study_uid=str(first.StudyInstanceUID),
        series_uid=str(first.SeriesInstanceUID),
        frame_of_reference_uid=str(first.FrameOfReferenceUID),
        origin=(-23.5, -23.5, 2.5),  # one slice above the first (z goes down)
    )
    with lifecycle_node(tmp_path, rules=rules, models=models) as (node, pacs, rest):
        store = JobStore(node.data_dir / "index.sqlite")
        http = httpx.Client(base_url=node.url, timeout=60)
        sent = storescu(node.dicom_port, files)
        assert len(sent.acknowledged) == len(files), sent.output[-2000:]
        wait_until(lambda: len(_succeeded(store)) == 1, timeout=300, what="first job done")
        (old_job,) = _succeeded(store)
        old = result_sops(store, old_job)
        assert old
        wait_until(
            lambda: old <= set(sops(pacs)) and old <= set(sops(rest)),
            timeout=120,
            what="first results in both Orthancs",
        )

        # 1) a late instance re-opens the study: the new set replaces the old one
        sent = storescu(node.dicom_port, late)
        assert len(sent.acknowledged) == 1, sent.output[-2000:]
        wait_until(lambda: len(_succeeded(store)) == 2, timeout=300, what="second job done")
        (new_job,) = [j for j in _succeeded(store) if j != old_job]
        assert store.get(old_job).superseded_by == new_job
        new = result_sops(store, new_job)
        assert new and not new & old
        wait_until(lambda: len(notes(pacs)) == 1, timeout=120, what="note at pacs")
        wait_until(lambda: not old & set(sops(rest)), timeout=120, what="old deleted at rest")
        (refs,) = notes(pacs).values()
        assert refs == old  # flagged: the old set stays at pacs, referenced by the note
        assert old | new <= set(sops(pacs))
        assert new <= set(sops(rest))
        detail = http.get(f"/api/studies/{first.StudyInstanceUID}").json()
        (superseded,) = detail["rejections"]
        assert superseded["kind"] == "superseded" and superseded["superseded_by"] == new_job
        assert set(superseded["rejected_sop_uids"]) == old
        assert superseded["destinations"] == ["pacs", "rest"]
        audited = http.get("/api/audit", params={"event": "results.superseded"}).json()
        (record,) = audited["records"]
        assert record["actor"] == "node" and record["study_uid"] == first.StudyInstanceUID
        assert record["superseded_by"] == new_job and record["job_ids"] == [old_job]

        # 2) the operator retracts the new set by its SEG's SOP Instance UID
        refused = http.post("/api/results/retract", json={"uid": sorted(new)[0]})
        assert refused.status_code == 422, refused.text  # no reason
        assert refused.headers["content-type"].startswith("application/problem+json")
        missing = http.post("/api/results/retract", json={"uid": "1.2.3", "reason": "x"})
        assert missing.status_code == 404 and missing.json()["status"] == 404
        retracted = http.post(
            "/api/results/retract", json={"uid": sorted(new)[0], "reason": "wrong series"}
        )
        assert retracted.status_code == 201, retracted.text
        assert retracted.json()["job_ids"] == [new_job]
        wait_until(lambda: len(notes(pacs)) == 2, timeout=120, what="second note at pacs")
        wait_until(lambda: not new & set(sops(rest)), timeout=120, what="new deleted at rest")
        again = http.post("/api/results/retract", json={"uid": new_job, "reason": "again"})
        assert again.status_code == 409, again.text

        # 3) retrying the retracted job makes no second live copy anywhere
        delivered_before = http.get("/api/deliveries", params={"limit": 1000}).json()
        assert http.post(f"/api/jobs/{new_job}/retry").status_code in (200, 202)
        wait_until(
            lambda: (
                [e["state"] for e in store.events(new_job)].count("succeeded") == 2
                and store.get(new_job).state is JobState.SUCCEEDED
            ),
            timeout=300,
            what="retried job done",
        )
        assert not (old | new) & set(sops(rest))
        at_pacs = sops(pacs)
        assert len(notes(pacs)) == 2 and old | new <= set(at_pacs)
        after = http.get("/api/deliveries", params={"limit": 1000}).json()
        assert after == delivered_before  # nothing queued or sent again

        # 4) the CLI lists both, and refuses to retract the old set twice
        listed = _cli(node, "rejections", "--json")
        assert listed.returncode == 0, listed.stderr
        kinds = sorted(r["kind"] for r in json.loads(listed.stdout))
        assert kinds == ["retracted", "superseded"]
        twice = _cli(node, "retract", old_job, "--reason", "again")
        assert twice.returncode == 2 and "rejected already" in twice.stderr, twice.stderr

        note_files = sorted((node.data_dir / "results" / "rejections").glob("*.dcm"))
        assert len(note_files) == 2
        out = run_tool(checker_tools, "check-dicom", *note_files)
        assert "0 error(s)" in out.splitlines()[-1], out
        http.close()
