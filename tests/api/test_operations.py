"""Jobs, deliveries, destinations, models and the extended study view, against a running node."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from node.types import Job
from tests.api.opsnode import OpsNode, start_ops_node
from tests.util import wait_until


@pytest.fixture(scope="module")
def ops(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OpsNode]:
    yield from start_ops_node(tmp_path_factory.mktemp("ops"))


def _job(ops: OpsNode, name: str) -> Job:
    """A job on a series that is not stored: its worker fails fast (no model is loaded)."""
    return Job(
        job_id=f"j-test-{name}",
        study_uid=ops.ct_study,
        series_uids=(f"2.25.{abs(hash(name)) % 10**12}",),
        model="no-such-model",
        rule="manual",
    )


def test_study_detail_has_routing_jobs_and_deliveries(ops: OpsNode) -> None:
    detail = ops.http.get(f"/api/studies/{ops.ct_study}").json()
    routing = detail["routing"]
    assert routing["generation"] == 1
    assert routing["routed_at"].endswith("+00:00")
    rules = [d["rule"] for d in routing["decisions"]["decisions"]]
    assert rules == ["chest-ct-archive"]
    explanation = routing["decisions"]["explanation"]
    verdicts = {v["rule"]: v["verdict"] for v in explanation["series"][0]["rules"]}
    assert set(verdicts) == {"chest-ct-archive", "dx-to-silent"}
    assert verdicts["chest-ct-archive"] != verdicts["dx-to-silent"]
    assert len(detail["deliveries"]) == 3
    assert {d["state"] for d in detail["deliveries"]} == {"delivered"}
    assert {d["destination"] for d in detail["deliveries"]} == {"archive"}
    assert len(list(ops.archive.rglob("*"))) >= 3
    assert detail["jobs"] == [] and detail["results"] == []


def test_jobs_list_show_retry_cancel(ops: OpsNode) -> None:
    ops.node.jobs.submit([_job(ops, "fails")])
    ops.node.jobs.submit([_job(ops, "cancel-me")])
    cancelled = ops.http.post("/api/jobs/j-test-cancel-me/cancel").json()
    assert cancelled["state"] == "cancelled"
    assert cancelled["events"][-1]["reason"] == "cancelled by operator"
    wait_until(
        lambda: ops.http.get("/api/jobs/j-test-fails").json()["state"] == "dead",
        timeout=60,
        what="job dead after its attempts",
    )
    dead = ops.http.get("/api/jobs/j-test-fails").json()
    assert dead["attempts"] == dead["max_attempts"] == 3
    assert "has no stored instances" in dead["reason"]
    assert [e["state"] for e in dead["events"]][:2] == ["queued", "running"]

    listed = ops.http.get("/api/jobs", params={"state": "dead"}).json()
    assert [j["job_id"] for j in listed["jobs"]] == ["j-test-fails"]
    both = ops.http.get("/api/jobs", params={"state": ["dead", "cancelled"], "limit": 1}).json()
    assert len(both["jobs"]) == 1 and both["next"] is not None
    rest = ops.http.get(both["next"]).json()
    assert {both["jobs"][0]["job_id"], rest["jobs"][0]["job_id"]} == {
        "j-test-fails",
        "j-test-cancel-me",
    }
    assert rest["next"] is None
    assert ops.http.get("/api/jobs", params={"model": "other"}).json()["jobs"] == []
    assert len(ops.http.get("/api/jobs", params={"study_uid": ops.ct_study}).json()["jobs"]) == 2

    retried = ops.http.post("/api/jobs/j-test-fails/retry").json()
    assert any(e["reason"] == "manual retry" for e in retried["events"])
    assert retried["attempts"] <= 1
    study_jobs = ops.http.get(f"/api/studies/{ops.ct_study}").json()["jobs"]
    assert {j["job_id"] for j in study_jobs} == {"j-test-fails", "j-test-cancel-me"}
    # the retried job really runs again (and is not left running when the node stops)
    wait_until(
        lambda: ops.http.get("/api/jobs/j-test-fails").json()["state"] == "dead",
        timeout=60,
        what="retried job dead again",
    )
    again = ops.http.get("/api/jobs/j-test-fails").json()
    assert again["attempts"] == 3
    reasons = [e["reason"] for e in again["events"]]
    assert reasons.index("manual retry") < len(reasons) - 1


def test_job_errors_are_problems(ops: OpsNode) -> None:
    for r in (
        ops.http.get("/api/jobs/j-nope"),
        ops.http.post("/api/jobs/j-nope/retry"),
        ops.http.post("/api/jobs/j-nope/cancel"),
    ):
        assert r.status_code == 404
        assert r.headers["content-type"] == "application/problem+json"
        assert r.json()["type"] == "urn:ainode:problem:not-found"
    bad = ops.http.get("/api/jobs", params={"state": "sleeping"})
    assert bad.status_code == 422 and "state" in bad.json()["errors"][0]["loc"]


def test_deliveries_list_and_retry_dead(ops: OpsNode) -> None:
    dead = ops.http.get("/api/deliveries", params={"state": "dead"}).json()["deliveries"]
    assert len(dead) == 1
    row = dead[0]
    assert row["destination"] == "silent" and row["study_uid"] == ops.dx_study
    assert row["attempts"] == 1 and row["last_error"]
    page = ops.http.get("/api/deliveries", params={"limit": 2}).json()
    assert len(page["deliveries"]) == 2 and page["next"] is not None
    retried = ops.http.post(f"/api/deliveries/{row['id']}/retry").json()
    # the silent peer holds the new attempt for timeout_seconds: the row is pending meanwhile
    assert retried["state"] == "pending" and retried["attempts"] == 0
    wait_until(
        lambda: ops.node.outbox.get(row["id"]).state.value == "dead",
        timeout=30,
        what="retried row dead again",
    )
    assert ops.node.outbox.get(row["id"]).attempts == 1
    missing = ops.http.post("/api/deliveries/999999/retry")
    assert missing.status_code == 404
    assert ops.http.get("/api/deliveries", params={"state": "lost"}).status_code == 422


def test_destinations_list_and_echo(ops: OpsNode) -> None:
    listed = ops.http.get("/api/destinations").json()["destinations"]
    by_name = {d["name"]: d for d in listed}
    assert set(by_name) == {"archive", "blocked", "silent", "self"}
    assert by_name["archive"]["type"] == "folder"
    assert by_name["archive"]["outbox"]["delivered"] == 3
    assert (
        by_name["silent"]["outbox"].get("dead", 0) + by_name["silent"]["outbox"].get("pending", 0)
        == 1
    )
    echo = ops.http.post("/api/destinations/self/echo").json()
    assert echo["ok"] is True and echo["detail"] == "C-ECHO success"
    folder = ops.http.post("/api/destinations/archive/echo").json()
    assert folder["ok"] is True
    assert not [p for p in ops.archive.iterdir() if p.name.startswith(".ainode-probe-")]
    unknown = ops.http.post("/api/destinations/nowhere/echo")
    assert unknown.status_code == 404 and "archive" in unknown.json()["detail"]


def test_unwritable_folder_echo_fails(ops: OpsNode) -> None:
    r = ops.http.post("/api/destinations/blocked/echo").json()
    assert r["ok"] is False and "not writable" in r["detail"]


def test_models_have_cards(ops: OpsNode) -> None:
    from node.models.registry import discover

    expected = {e.name for e in discover([], device="cpu").entries() if e.is_ok}
    models = ops.http.get("/api/models").json()["models"]
    assert {m["name"] for m in models if m["ok"]} == expected and expected
    cards = {e.name: e.info.card for e in discover([], device="cpu").entries() if e.info}
    for m in models:
        assert m["card"] == cards[m["name"]] and m["version"] and m["task"]
        assert isinstance(m["metrics"], dict) and isinstance(m["is_demo"], bool)
    assert any(m["card"] and m["metrics"] for m in models)
    assert ops.http.get("/api/models").json()["models"] == models  # cached, same answer
