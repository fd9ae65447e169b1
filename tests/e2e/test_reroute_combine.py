"""Switching a rule's ``results.combine`` and re-routing, through a running node and two real
Orthancs (issue 18 §4): the combined set is rejected when the models' own sets replace it, and
they are rejected when a combined set comes back (a new revision: new UIDs).  ``rest``
(REST, ``delete_rejected``) holds one live result set at every step; ``pacs`` (DIMSE) gets a
rejection note for each set replaced.
"""

from __future__ import annotations

from pathlib import Path

import httpx
import numpy as np
import pydicom
import pytest

from node.jobs.store import COMBINE_MODEL, JobStore
from node.samples.writers import write_ct_series
from node.types import JobState
from tests.e2e.test_reroute_lifecycle import _live, _runs
from tests.e2e.test_result_lifecycle import _notes, _objects
from tests.models.builders import write_body_model
from tests.peers.dcmtk import storescu
from tests.peers.node import start_node
from tests.peers.orthanc import start_orthanc
from tests.util import wait_until

MODELS, RULE, SLICES = ("tiny-body", "tiny-body-b"), "ct-body", 8


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
    hu = np.random.default_rng(5).integers(-1000, 400, size=(SLICES, 48, 48)).astype(np.float32)
    files = write_ct_series(hu, spacing=(2.5, 1.0, 1.0), out_dir=tmp_path / "in")
    study_uid = str(pydicom.dcmread(files[0], stop_before_pixels=True).StudyInstanceUID)
    with (
        start_orthanc(tmp_path / "pacs") as pacs,
        start_orthanc(tmp_path / "rest") as rest,
        start_node(
            tmp_path / "node",
            study={"stable_seconds": 1},
            rules=str(rules),
            models=[str(models)],
            inference={"workers": 1, "torch_threads": 1, "job_timeout_seconds": 120},
            destinations={
                "pacs": {"type": "dimse", "host": "127.0.0.1", "port": pacs.dicom_port},
                "rest": {"type": "orthanc", "url": rest.url, "delete_rejected": True},
            },
            delivery={"backoff_base_seconds": 0.2, "backoff_max_seconds": 1.0},
        ) as node,
    ):
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
        combined = _objects(store, combine)
        wait_until(lambda: _live(rest) == combined, timeout=120, what="combined set at rest")

        # 1) combine switched off: the models deliver their own sets, the combined one goes
        put = http.put("/api/rules", json={"text": _rules(combine=False)})
        assert put.status_code == 200, put.text
        off = http.post(f"/api/studies/{study_uid}/reroute").json()
        model_jobs = sorted(job_of(m) for m in MODELS)
        assert sorted(off["new_jobs"]) == model_jobs and off["rejection"] is not None
        assert store.get(combine).superseded_by is not None
        wait_until(
            lambda: (
                all(_runs(store, j) == 2 for j in model_jobs)
                and all(store.get(j).state is JobState.SUCCEEDED for j in model_jobs)
            ),
            timeout=300,
            what="model jobs run again, on their own",
        )
        own = set().union(*(_objects(store, j) for j in model_jobs))
        assert own and not own & combined
        wait_until(lambda: _live(rest) == own, timeout=120, what="per-model sets at rest")
        wait_until(lambda: len(_notes(pacs)) == 1, timeout=120, what="note at pacs")
        assert list(_notes(pacs).values()) == [combined]

        # 2) combine switched back on: a new revision of the combined set replaces them
        put = http.put("/api/rules", json={"text": _rules(combine=True)})
        assert put.status_code == 200, put.text
        on = http.post(f"/api/studies/{study_uid}/reroute").json()
        assert sorted(on["new_jobs"]) == sorted([*model_jobs, combine])
        assert on["rejection"] is not None
        wait_until(
            lambda: _runs(store, combine) == 2 and store.get(combine).state is JobState.SUCCEEDED,
            timeout=300,
            what="combined set made again",
        )
        assert store.get(combine).job.parameters["_revision"] == 1
        again = _objects(store, combine)
        assert again and not again & (combined | own)
        wait_until(lambda: _live(rest) == again, timeout=120, what="new combined set at rest")
        wait_until(lambda: len(_notes(pacs)) == 2, timeout=120, what="second note at pacs")
        assert set(map(frozenset, _notes(pacs).values())) == {frozenset(combined), frozenset(own)}
        assert combined | own | again <= _live(pacs)  # flagged there, never deleted
        http.close()
