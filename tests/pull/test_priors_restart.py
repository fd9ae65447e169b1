"""A node killed (SIGKILL) while its jobs wait for a prior keeps them, and fetches the prior
when it starts again: a real ``ainode serve``, dcmtk ``storescu`` and a real Orthanc that is
down at first and comes up while the node is dead."""

from __future__ import annotations

from pathlib import Path

import pytest

from node.jobs.store import JobRecord, JobStore
from node.store.index import Index
from node.types import JobState, PriorState
from tests.peers.dcmtk import storescu
from tests.peers.node import start_node
from tests.peers.orthanc import start_orthanc
from tests.pull.conftest import load_into
from tests.pull.test_priors import _uids, _write
from tests.util import free_port, wait_until

RULES = """version: 1
rules:
  - name: chest
    when: {Modality: CT}
    then: {model: prior-probe}
    priors: {from: pacs, within_days: 1095, match: {body_part: CHEST}}
"""


@pytest.mark.slow
def test_kill_while_waiting_for_a_prior_keeps_the_jobs(tmp_path: Path) -> None:
    prior = _write(
        tmp_path / "prior", patient_id="PRI-KILL", date="20240301", body_part="CHEST",
        description="CT chest",
    )  # fmt: skip
    current = _write(
        tmp_path / "current", patient_id="PRI-KILL", date="20260110", body_part="CHEST",
        description="CT chest",
    )  # fmt: skip
    prior_study, prior_series = _uids(prior)
    study_uid, _ = _uids(current)
    (tmp_path / "rules.yaml").write_text(RULES)
    node_port, pacs_port = free_port(), free_port()
    with start_node(
        tmp_path / "n",
        node={"ae_title": "AINODE", "dicom_port": node_port},
        study={"stable_seconds": 1},
        rules=str(tmp_path / "rules.yaml"),
        sources={
            "pacs": {"type": "dimse", "host": "127.0.0.1", "port": pacs_port, "ae_title": "ORTHANC"}
        },
        priors={"timeout_seconds": 300, "retry_seconds": 1},
        inference={"max_attempts": 1},
    ) as node:
        jobs = JobStore(node.data_dir / "index.sqlite")

        def job() -> JobRecord | None:
            found = jobs.list_jobs(study_uid=study_uid)
            return found[0] if found else None

        assert storescu(node.dicom_port, current).returncode == 0
        wait_until(lambda: job() is not None, timeout=180, what="the study routed")
        waiting = job()
        assert waiting is not None and waiting.state is JobState.QUEUED
        assert waiting.job.prior is not None and waiting.job.prior.state is PriorState.WAITING
        node.kill()
        after_kill = job()
        assert after_kill is not None and after_kill.state is JobState.QUEUED
        assert after_kill.job.prior == waiting.job.prior
        # the PACS comes up while the node is dead
        with start_orthanc(
            tmp_path / "orthanc",
            dicom_port=pacs_port,
            modalities={"ainode": ("AINODE", "127.0.0.1", node_port)},
        ) as orthanc:
            load_into(orthanc, prior)
            node.start()
            assert node.dicom_port == node_port, "the node's port was taken meanwhile"

            def ran() -> bool:
                rec = job()
                return rec is not None and rec.state not in (JobState.QUEUED, JobState.RUNNING)

            wait_until(ran, timeout=180, what="the job ran after the restart")
        rec = job()
        assert rec is not None and rec.job.prior is not None, node.log_text()[-3000:]
        assert rec.job.prior.state is PriorState.FETCHED, rec.to_json()
        assert [(s.study_uid, s.series_uid) for s in rec.job.prior.series] == [
            (prior_study, prior_series)
        ]
        assert rec.attempts == 1
        index = Index(node.data_dir / "index.sqlite")
        try:
            assert index.prior_of(prior_study) == study_uid
            assert len(index.series_instances(prior_series)) == len(prior)
        finally:
            index.close()
