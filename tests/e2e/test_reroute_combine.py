"""Switching a rule's ``results.combine`` and re-routing, through a running node and two real
Orthancs (issue 18 §4): the combined set is rejected when the models' own sets replace it, and
they are rejected when a combined set comes back (a new revision: new UIDs).  ``rest``
(REST, ``delete_rejected``) holds one live result set at every step; ``pacs`` (DIMSE) gets a
rejection note for each set replaced.
"""

from __future__ import annotations

from pathlib import Path

import httpx
import pydicom
import pytest

from node.jobs.store import COMBINE_MODEL, JobStore
from node.types import JobState
from tests.e2e.lifecycle import ct_series, lifecycle_node, live, notes, result_sops, runs
from tests.models.builders import write_body_model
from tests.peers.dcmtk import storescu
from tests.util import wait_until

MODELS, RULE = ("tiny-body", "tiny-body-b"), "ct-body"


def _rules(*, combine: bool) -> str:
    return (
        "version: 1\nrules:\n"
        f"  - name: {RULE}\n    when: {{Modality: CT}}\n"
        "    then:\n"
        + "".join(f"      - {{model: {m}, deliver: [pacs, rest]}}\n" for m in MODELS)
        + f"    results: {{combine: {str(combine).lower()}}}\n"
    )


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_combine_switched_off_and_on_replaces_the_result_sets(tmp_path: Path) -> None:
    models = tmp_path / "node" / "models"
    for name in MODELS:
        write_body_model(models, name=name, roi="[8, 48, 48]")
    rules = tmp_path / "node" / "rules.yaml"
    rules.write_text(_rules(combine=True))
    files = ct_series(tmp_path / "in", seed=5)
    study_uid = str(pydicom.dcmread(files[0], stop_before_pixels=True).StudyInstanceUID)
    with lifecycle_node(tmp_path, rules=rules, models=models) as (node, pacs, rest):
        store = JobStore(node.data_dir / "index.sqlite")
        http = httpx.Client(base_url=node.url, timeout=600)

        def job_of(model: str) -> str:
            (job_id,) = [j.job.job_id for j in store.list_jobs() if j.job.model == model]
            return job_id

        sent = storescu(node.dicom_port, files)
        assert len(sent.acknowledged) == len(files), sent.output[-2000:]
        wait_until(
            lambda: any(
                j.job.model == COMBINE_MODEL and j.state is JobState.SUCCEEDED
                for j in store.list_jobs()
            ),
            timeout=300,
            what="combined set made",
        )
        combine = job_of(COMBINE_MODEL)
        combined = result_sops(store, combine)
        wait_until(lambda: live(rest) == combined, timeout=120, what="combined set at rest")

        # 1) combine switched off: the models deliver their own sets, the combined one goes
        put = http.put("/api/rules", json={"text": _rules(combine=False)})
        assert put.status_code == 200, put.text
        off = http.post(f"/api/studies/{study_uid}/reroute").json()
        model_jobs = sorted(job_of(m) for m in MODELS)
        assert sorted(off["new_jobs"]) == model_jobs and off["rejection"] is not None
        assert store.get(combine).superseded_by is not None
        wait_until(
            lambda: (
                all(runs(store, j) == 2 for j in model_jobs)
                and all(store.get(j).state is JobState.SUCCEEDED for j in model_jobs)
            ),
            timeout=300,
            what="model jobs run again, on their own",
        )
        own = set().union(*(result_sops(store, j) for j in model_jobs))
        assert own and not own & combined
        wait_until(lambda: live(rest) == own, timeout=120, what="per-model sets at rest")
        wait_until(lambda: len(notes(pacs)) == 1, timeout=120, what="note at pacs")
        assert list(notes(pacs).values()) == [combined]

        # 2) combine switched back on: a new revision of the combined set replaces them
        put = http.put("/api/rules", json={"text": _rules(combine=True)})
        assert put.status_code == 200, put.text
        on = http.post(f"/api/studies/{study_uid}/reroute").json()
        assert sorted(on["new_jobs"]) == sorted([*model_jobs, combine])
        assert on["rejection"] is not None
        wait_until(
            lambda: runs(store, combine) == 2 and store.get(combine).state is JobState.SUCCEEDED,
            timeout=300,
            what="combined set made again",
        )
        assert store.get(combine).job.parameters["_revision"] == 1
        again = result_sops(store, combine)
        assert again and not again & (combined | own)
        wait_until(lambda: live(rest) == again, timeout=120, what="new combined set at rest")
        wait_until(lambda: len(notes(pacs)) == 2, timeout=120, what="second note at pacs")
        assert set(map(frozenset, notes(pacs).values())) == {frozenset(combined), frozenset(own)}
        assert combined | own | again <= live(pacs)  # flagged there, never deleted
        http.close()
