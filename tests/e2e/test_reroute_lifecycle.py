"""Re-routing a study through a running node and two real Orthancs (issue 18 §4).

One CT rule with one model delivers to an Orthanc by DIMSE (``pacs``: IOCM notes flag) and to
another by REST with ``delete_rejected`` (``rest``).  The model is re-registered as a new
version and the study re-routed: the job runs again with it and its new set replaces the old
one.  The rule is then renamed and the study re-routed: the old rule's set is rejected, the
renamed rule's set arrives.  At every step ``rest`` holds exactly one live result set and
``pacs`` holds a rejection note for every set it no longer should show.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import httpx
import pydicom
import pytest

from node.jobs.store import JobStore
from node.types import JobState
from tests.e2e.lifecycle import ct_series, lifecycle_node, live, notes, result_sops, runs
from tests.models.builders import write_body_model
from tests.peers.dcmtk import storescu
from tests.peers.node import NodeProcess
from tests.util import wait_until

ROOT = Path(__file__).resolve().parents[2]
MODEL = "tiny-body"


def _rules(name: str) -> str:
    return (
        "version: 1\nrules:\n"
        f"  - name: {name}\n    when: {{Modality: CT}}\n"
        f"    then: {{model: {MODEL}, deliver: [pacs, rest]}}\n"
    )


def _cli(node: NodeProcess, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "node", "studies", *args, "--config", str(node.config_path)],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        timeout=600,
        check=False,
    )


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_new_model_version_and_renamed_rule_replace_the_old_results(tmp_path: Path) -> None:
    models = tmp_path / "node" / "models"
    write_body_model(models, name=MODEL, roi="[8, 48, 48]", version="1.2")
    rules = tmp_path / "node" / "rules.yaml"
    rules.write_text(_rules("ct-body"))
    files = ct_series(tmp_path / "in", seed=11)
    study_uid = str(pydicom.dcmread(files[0], stop_before_pixels=True).StudyInstanceUID)
    with lifecycle_node(tmp_path, rules=rules, models=models) as (node, pacs, rest):
        store = JobStore(node.data_dir / "index.sqlite")
        http = httpx.Client(base_url=node.url, timeout=600)
        sent = storescu(node.dicom_port, files)
        assert len(sent.acknowledged) == len(files), sent.output[-2000:]
        wait_until(
            lambda: any(j.state is JobState.SUCCEEDED for j in store.list_jobs()),
            timeout=300,
            what="first job done",
        )
        (job,) = [j.job.job_id for j in store.list_jobs()]
        assert store.get(job).job.model_version == "1.2"
        first = result_sops(store, job)
        wait_until(
            lambda: first <= live(pacs) and live(rest) == first,
            timeout=120,
            what="first results in both Orthancs",
        )

        # unknown study: a precise 404; nothing changed: a re-route queues and rejects nothing
        assert http.post("/api/studies/1.2.3.4/reroute").status_code == 404
        same = http.post(f"/api/studies/{study_uid}/reroute")
        assert same.status_code == 200, same.text
        assert same.json()["new_jobs"] == [] and same.json()["rejection"] is None

        # 1) the model is re-registered as version 1.3; re-routing runs the job again with it
        write_body_model(models, name=MODEL, roi="[8, 48, 48]", version="1.3")
        again = http.post(f"/api/studies/{study_uid}/reroute")
        assert again.status_code == 200, again.text
        assert again.json()["jobs"] == [job] and again.json()["new_jobs"] == [job]
        wait_until(
            lambda: runs(store, job) == 2 and store.get(job).state is JobState.SUCCEEDED,
            timeout=300,
            what="job run again with the new version",
        )
        assert store.get(job).job.model_version == "1.3"
        second = result_sops(store, job)
        assert second and not second & first  # new version, new UIDs
        wait_until(lambda: len(notes(pacs)) == 1, timeout=120, what="note at pacs")
        wait_until(lambda: live(rest) == second, timeout=120, what="only 1.3's set at rest")
        (refs,) = notes(pacs).values()
        assert refs == first  # flagged: the 1.2 set stays at pacs, referenced by the note
        assert first | second <= live(pacs)
        headers = [
            pydicom.dcmread(node.data_dir / o["path"], stop_before_pixels=True)
            for o in store.get(job).outputs["objects"]
        ]
        assert headers and all(
            any("1.3" in str(e.SoftwareVersions) for e in h.ContributingEquipmentSequence)
            for h in headers
        )

        # 2) the rule is renamed and the study re-routed (CLI): the old rule's set is rejected
        put = http.put("/api/rules", json={"text": _rules("ct-body-renamed")})
        assert put.status_code == 200, put.text
        out = _cli(node, "reroute", study_uid, "--json")
        assert out.returncode == 0, out.stderr
        answer = json.loads(out.stdout)
        (renamed,) = answer["jobs"]
        assert renamed != job and answer["new_jobs"] == [renamed]
        assert answer["rejection"] is not None
        assert store.get(job).superseded_by is not None  # retired: never delivers again
        wait_until(
            lambda: store.get(renamed).state is JobState.SUCCEEDED, timeout=300, what="renamed"
        )
        third = result_sops(store, renamed)
        assert third and not third & (first | second)
        wait_until(lambda: len(notes(pacs)) == 2, timeout=120, what="second note at pacs")
        wait_until(lambda: live(rest) == third, timeout=120, what="only the renamed set at rest")
        assert set(map(frozenset, notes(pacs).values())) == {frozenset(first), frozenset(second)}
        assert first | second | third <= live(pacs)

        # recorded once each, with their reasons; audited once each
        detail = http.get(f"/api/studies/{study_uid}").json()
        kinds = sorted((r["kind"], len(r["rejected_sop_uids"])) for r in detail["rejections"])
        assert kinds == [("superseded", len(first)), ("superseded", len(second))]
        reasons = " | ".join(r["reason"] for r in detail["rejections"])
        assert "new run of job" in reasons and "no longer produced" in reasons
        audited = http.get("/api/audit", params={"event": "results.superseded"}).json()
        assert len(audited["records"]) == 2
        rerouted = http.get("/api/audit", params={"event": "study.rerouted"}).json()
        assert len(rerouted["records"]) == 3

        # re-routing once more changes nothing: no third note, nothing queued again
        deliveries = http.get("/api/deliveries", params={"limit": 1000}).json()
        still = http.post(f"/api/studies/{study_uid}/reroute").json()
        assert still["new_jobs"] == [] and still["rejection"] is None
        assert http.get("/api/deliveries", params={"limit": 1000}).json() == deliveries
        assert len(notes(pacs)) == 2
        http.close()
