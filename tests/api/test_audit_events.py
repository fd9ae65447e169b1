"""The node's own events in the audit trail: associations, job transitions, delivery outcomes."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from node.app import Node
from node.audit import AuditLog, JobEventFollower
from node.config import Config, NodeConfig, StudyConfig
from node.jobs.queries import JobEventReader
from node.jobs.store import JobStore
from node.types import Job
from tests.api.opsnode import OpsNode, start_ops_node
from tests.conftest import require_tool
from tests.util import wait_until

TOKEN = "audit-events-token"


@pytest.fixture(scope="module")
def ops(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OpsNode]:
    yield from start_ops_node(tmp_path_factory.mktemp("audit-events"), token=TOKEN)


def test_associations_accepted_and_refused(tmp_path: Path) -> None:
    echoscu = require_tool("echoscu")
    config = Config(
        node=NodeConfig(
            data_dir=tmp_path / "data",
            dicom_port=0,
            http_port=0,
            min_free_bytes=0,
            allowed_calling_aets=["MODALITY1"],
        ),
        study=StudyConfig(stable_seconds=3600),
    )
    node = Node(config)
    node.start()
    try:
        env = {**os.environ, "TCP_NODELAY": "1"}
        for aet in ("MODALITY1", "INTRUDER"):
            subprocess.run(
                [echoscu, "-aet", aet, "-aec", "AINODE", "127.0.0.1", str(node.dicom_port)],
                env=env,
                capture_output=True,
                timeout=30,
                check=False,
            )
        base = f"http://127.0.0.1:{node.http_port}"

        def audited() -> list[dict[str, Any]]:
            records = httpx.get(f"{base}/api/audit", timeout=60).json()["records"]
            return [r for r in records if r["event"].startswith("association.")]

        wait_until(lambda: len(audited()) == 2, timeout=10, what="two association records")
        by_event = {r["event"]: r for r in audited()}
        ok, refused = by_event["association.accepted"], by_event["association.refused"]
        assert ok["calling_aet"] == "MODALITY1" and ok["outcome"] == "success"
        assert ok["called_aet"] == "AINODE" and ok["peer"] == "127.0.0.1"
        assert ok["port"] == node.dicom_port and ok["actor"] == "node"
        assert refused["calling_aet"] == "INTRUDER" and refused["outcome"] == "failure"
        metrics = httpx.get(f"{base}/metrics", timeout=60).text
        assert (
            'ainode_associations_total{calling_aet="MODALITY1",outcome="accepted"} 1.0' in metrics
        )
        assert 'ainode_associations_total{calling_aet="INTRUDER",outcome="refused"} 1.0' in metrics
    finally:
        node.stop()


def test_job_transitions_are_followed_once(tmp_path: Path) -> None:
    db = tmp_path / "index.sqlite"
    store = JobStore(db)
    audit = AuditLog(tmp_path)
    job = Job(job_id="j-audit", study_uid="1.2.3", series_uids=("1.2.3.4",), model="m", rule="r")
    store.submit([job], max_attempts=2)
    for reason in ("model crashed: patient DOE^JOHN", "again"):
        assert store.claim("w1") is not None
        store.finish(job.job_id, ok=False, reason=reason)
    follower = JobEventFollower(audit, JobEventReader(db))
    assert follower.poll_once() == len(store.events(job.job_id))
    follower.stop()
    events = [r.event for r in reversed(audit.list(study_uid="1.2.3"))]
    assert events == [
        "job.queued",
        "job.running",
        "job.queued",
        "job.failed",
        "job.running",
        "job.dead",
    ]
    rec = audit.list(event="job.dead")[0]
    assert rec.actor == "node" and rec.detail == {"job_id": "j-audit", "rule": "r", "model": "m"}
    # a new follower (node restart) resumes after the cursor: nothing twice
    store.retry(job.job_id)
    again = JobEventFollower(audit, JobEventReader(db))
    assert again.poll_once() == 1
    again.stop()
    assert [r.event for r in audit.list(study_uid="1.2.3", limit=1)] == ["job.queued"]
    text = audit.path.read_text(encoding="utf-8")
    assert "DOE" not in text and "crashed" not in text  # failure text stays out
    audit.close()


def test_running_node_audits_job_transitions(ops: OpsNode) -> None:
    job = Job(job_id="j-live", study_uid=ops.ct_study, series_uids=("2.25.9",), model="x", rule="r")
    ops.node.jobs.submit([job])
    ops.node.jobs.cancel(job.job_id)

    def states() -> set[str]:
        records = ops.http.get("/api/audit", params={"study_uid": ops.ct_study}).json()["records"]
        return {r["event"] for r in records if r.get("job_id") == "j-live"}

    wait_until(lambda: {"job.queued", "job.cancelled"} <= states(), timeout=15, what="job audit")


def test_delivery_outcomes_are_audited_per_study(ops: OpsNode) -> None:
    records = ops.http.get("/api/audit", params={"limit": 1000}).json()["records"]
    delivered = [r for r in records if r["event"] == "delivery.delivered"]
    dead = [r for r in records if r["event"] == "delivery.dead"]
    ct_rows = ops.node.outbox.list(study_uid=ops.ct_study)
    assert len(delivered) == 1
    assert delivered[0]["study_uid"] == ops.ct_study
    assert delivered[0]["destination"] == "archive" and delivered[0]["outcome"] == "success"
    assert sorted(delivered[0]["sop_uids"]) == sorted(r.sop_uid for r in ct_rows)
    assert delivered[0]["job_ids"] == ["forward"]
    assert len(dead) == 1 and dead[0]["study_uid"] == ops.dx_study
    assert dead[0]["destination"] == "silent" and dead[0]["outcome"] == "failure"
