"""A study's lifecycle line and the stuck studies (issue 22 §2), on the operations test node:
real routing, real outbox rows (the CT forwarded to a folder, the DX dead at a silent peer) and
real job states from the jobs store and the node's own engine."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from node.api.lifecycle import lifecycle
from node.jobs.store import JobStore
from node.store.index import Index
from node.types import Job, JobState
from tests.api.opsnode import OpsNode, start_ops_node
from tests.util import wait_until


@pytest.fixture(scope="module")
def ops(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OpsNode]:
    yield from start_ops_node(tmp_path_factory.mktemp("lifecycle"))


def _steps(ops: OpsNode, uid: str) -> list[dict[str, object]]:
    steps: list[dict[str, object]] = ops.http.get(f"/api/studies/{uid}").json()["lifecycle"]
    return steps


def test_routed_and_delivered_per_destination(ops: OpsNode) -> None:
    ct = _steps(ops, ops.ct_study)
    assert [s["step"] for s in ct] == ["received", "complete", "routed", "delivered"]
    assert ct[0]["instances"] == 3 and ct[1]["state"] == "done"
    assert ct[2]["state"] == "done" and ct[2]["rules"] == ["chest-ct-archive"]
    assert ct[3] == {
        "step": "delivered",
        "destination": "archive",
        "state": "delivered",
        "objects": 3,
        "delivered": 3,
    }
    (dx_delivery,) = [s for s in _steps(ops, ops.dx_study) if s["step"] == "delivered"]
    dead = ops.node.outbox.list(study_uid=ops.dx_study)
    assert dx_delivery["destination"] == "silent" and dx_delivery["state"] == "dead"
    assert dx_delivery["reason"] == dead[0].last_error and dx_delivery["reason"]
    assert dx_delivery["retry"] == [f"/api/deliveries/{dead[0].id}/retry"]


def test_a_failed_model_links_its_reason_and_retry(ops: OpsNode) -> None:
    """A job for a model the node does not have: the engine ends it, with a reason."""
    job = Job(
        job_id="lifecycle-missing-model",
        study_uid=ops.ct_study,
        series_uids=(ops.node.index.get_study(ops.ct_study).series[0].series_uid,),  # type: ignore[union-attr]
        model="no-such-model",
        rule="chest-ct-archive",
    )
    ops.node.jobs.submit([job], max_attempts=1)
    wait_until(
        lambda: ops.node.jobs.get(job.job_id).state not in (JobState.QUEUED, JobState.RUNNING),
        timeout=120,  # a deadline, not a wait: the engine is slow to start jobs on a loaded box
        what="the engine to end the job",
    )
    record = ops.node.jobs.get(job.job_id)
    (model,) = [s for s in _steps(ops, ops.ct_study) if s["step"] == "model"]
    assert model["model"] == "no-such-model" and model["state"] == record.state.value
    assert model["state"] in ("failed", "dead") and model["reason"] == record.reason
    assert model["retry"] == f"/api/jobs/{job.job_id}/retry"
    page = ops.http.get(f"/console/studies/{ops.ct_study}").text
    assert 'data-model="no-such-model"' in page and f'href="#job-{job.job_id}"' in page
    assert f'id="job-{job.job_id}"' in page
    assert f'action="/console/jobs/{job.job_id}/retry"' in page


def test_lifecycle_follows_the_jobs_store(tmp_path: Path) -> None:
    """queued -> running -> succeeded (results built) / failed, straight from a JobStore."""
    index = Index(tmp_path / "index.sqlite")
    jobs = JobStore(tmp_path / "index.sqlite")
    row = {
        "first_received": 1.0,
        "instance_count": 2,
        "series_count": 1,
        "state": "complete",
        "completed_at": 2.0,
    }
    routing = {"routed_at": 3.0, "decisions": {"decisions": [{"rule": "r1", "model": "a"}]}}

    def states() -> dict[str, object]:
        rows = [r.to_json() for r in jobs.list_jobs(study_uid="1.2.3")]
        steps = lifecycle(row, routing, rows, [])
        return {str(s.get("model", s["step"])): s["state"] for s in steps}

    jobs.submit(
        [
            Job(job_id=f"j-{m}", study_uid="1.2.3", series_uids=("1.2.3.4",), model=m, rule="r1")
            for m in ("a", "b")
        ],
        max_attempts=1,
    )
    assert states() == {
        "received": "done",
        "complete": "done",
        "routed": "done",
        "a": "queued",
        "b": "queued",
        "results": "waiting",
    }
    assert jobs.claim("w") is not None and jobs.claim("w") is not None
    assert states()["a"] == "running"
    jobs.finish("j-a", ok=True, outputs={"objects": [{"sop_uid": "1.2.3.9"}]})
    jobs.finish("j-b", ok=False, reason="out of memory")
    rows = [r.to_json() for r in jobs.list_jobs(study_uid="1.2.3")]
    steps = {str(s.get("model", s["step"])): s for s in lifecycle(row, routing, rows, [])}
    assert steps["a"]["state"] == "succeeded" and "retry" not in steps["a"]
    assert steps["b"]["state"] in ("failed", "dead") and steps["b"]["reason"] == "out of memory"
    assert steps["results"] == {"step": "results", "state": "done", "objects": 1}
    index.close()


def test_stuck_studies_on_the_dashboard(ops: OpsNode, tmp_path: Path) -> None:
    """A job left running past the threshold (a hung worker) shows as stuck, on the API and
    the dashboard; below the threshold nothing is listed."""
    assert ops.http.get("/api/stuck-studies").json()["studies"] == []  # 60 min default
    # a running job written straight to the store two hours ago, as a hung worker leaves it
    import sqlite3

    old = time.time() - 7200
    conn = sqlite3.connect(ops.data_dir / "index.sqlite")
    with conn:
        conn.execute(
            "INSERT INTO jobs(job_id, study_uid, rule, model, series_uids, parameters,"
            " destinations, state, created_at, updated_at) VALUES (?,?,?,?,?,?,?,?,?,?)",
            (
                "stuck-job",
                ops.dx_study,
                "dx-to-silent",
                "hung-model",
                "[]",
                "{}",
                "[]",
                "running",
                old,
                old,
            ),
        )
    conn.close()
    try:
        body = ops.http.get("/api/stuck-studies").json()
        assert body["minutes"] == 60
        assert [(s["study_uid"], s["state"], s["detail"]) for s in body["studies"]] == [
            (ops.dx_study, "job running", "hung-model")
        ]
        page = ops.http.get("/console/dashboard").text
        row = '<tr class="stuck" data-state="job running"><td class="mono">'
        assert f'{row}<a href="/console/studies/{ops.dx_study}">' in page
        assert ops.http.get("/api/stuck-studies", params={"minutes": 0}).status_code == 422
    finally:
        conn = sqlite3.connect(ops.data_dir / "index.sqlite")
        with conn:
            conn.execute("DELETE FROM jobs WHERE job_id = 'stuck-job'")
        conn.close()


def test_complete_but_never_routed_is_stuck(ops: OpsNode) -> None:
    """A study complete for two hours without a routing record for its completion (the router
    failed on it, or the node stopped in between) is listed as stuck, on the API and the
    dashboard; once its completion is routed it is not."""
    import sqlite3

    db = ops.data_dir / "index.sqlite"
    conn = sqlite3.connect(db)
    with conn:
        (completed, generation) = conn.execute(
            "SELECT completed_at, generation FROM studies WHERE study_uid = ?", (ops.ct_study,)
        ).fetchone()
        routings = conn.execute(
            "SELECT * FROM routings WHERE study_uid = ?", (ops.ct_study,)
        ).fetchall()
        assert routings, "the CT study was routed by the test node"
        conn.execute("DELETE FROM routings WHERE study_uid = ?", (ops.ct_study,))
        conn.execute(
            "UPDATE studies SET completed_at = ? WHERE study_uid = ?",
            (time.time() - 7200, ops.ct_study),
        )
    try:
        body = ops.http.get("/api/stuck-studies").json()
        assert [(s["study_uid"], s["state"]) for s in body["studies"]] == [
            (ops.ct_study, "not routed")
        ]
        assert body["studies"][0]["detail"] == "complete, never routed"
        page = ops.http.get("/console/dashboard").text
        row = '<tr class="stuck" data-state="not routed"><td class="mono">'
        assert f'{row}<a href="/console/studies/{ops.ct_study}">' in page
        # a record of an earlier completion only: the current one is still not routed
        with conn:
            conn.execute(
                "INSERT INTO routings VALUES (?,?,?,?,?)",
                (ops.ct_study, generation - 1, time.time(), "old", "{}"),
            )
        body = ops.http.get("/api/stuck-studies").json()
        assert [s["study_uid"] for s in body["studies"]] == [ops.ct_study]
    finally:
        with conn:
            conn.execute("DELETE FROM routings WHERE study_uid = ?", (ops.ct_study,))
            conn.executemany(
                "INSERT INTO routings VALUES (?,?,?,?,?)", [tuple(r) for r in routings]
            )
            conn.execute(
                "UPDATE studies SET completed_at = ? WHERE study_uid = ?",
                (completed, ops.ct_study),
            )
        conn.close()
    assert ops.http.get("/api/stuck-studies").json()["studies"] == []
