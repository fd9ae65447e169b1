"""``POST /api/rules/replay`` on a real node whose two studies were routed (issue 22 section 4)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.api.opsnode import RULES, OpsNode, start_ops_node

NEW = """\
version: 1
rules:
  - name: chest-ct-archive
    when: {Modality: CT, body_part: CHEST}
    then: {send_to: blocked}
  - name: dx-ignored
    when: {Modality: DX}
    then: ignore
"""

BAD = """\
version: 1
rules:
  - name: a
    when: {Modality: {equal: CT}}
    then: {send_to: nowhere}
"""


@pytest.fixture(scope="module")
def ops(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OpsNode]:
    yield from start_ops_node(tmp_path_factory.mktemp("replay"))


def test_replay_shows_the_stored_routing_beside_the_new_one(ops: OpsNode) -> None:
    jobs_before = ops.node.jobs.list_jobs()
    outbox_before = len(ops.node.outbox.list())
    r = ops.http.post("/api/rules/replay", json={"text": NEW, "since": "1d"})
    assert r.status_code == 200, r.text
    out = r.json()
    by_uid = {s["study_uid"]: s for s in out["studies"]}
    assert set(by_uid) == {ops.ct_study, ops.dx_study}
    ct, dx = by_uid[ops.ct_study], by_uid[ops.dx_study]
    # the current side is what the live router recorded when it routed the studies
    assert ct["current_source"] == dx["current_source"] == "stored"
    (ct_forward,) = ct["current"]["forwards"]
    assert ct_forward["destination"] == "archive"
    assert ct["diff"]["forwards_removed"] == [ct_forward]
    assert ct["diff"]["forwards_added"] == [
        {"series_uid": ct_forward["series_uid"], "destination": "blocked"}
    ]
    (dx_forward,) = dx["diff"]["forwards_removed"]
    assert dx_forward["destination"] == "silent"
    assert dx["diff"]["newly_ignored"] == [dx_forward["series_uid"]]
    assert out["totals"]["studies"] == 2 and out["totals"]["changed"] == 2
    assert out["totals"]["extra_runs"] == 0
    assert out["rules_sha256"] != out["active_sha256"] == ops.node.rules.sha256
    # no patient data: the replay carries UIDs, dates and names only
    assert "Patient" not in r.text and "SYNTHETIC" not in r.text.upper()
    # nothing queued, nothing forwarded, the active rules unchanged
    assert ops.node.jobs.list_jobs() == jobs_before
    assert len(ops.node.outbox.list()) == outbox_before
    assert ops.http.get("/api/rules").json()["text"] == RULES


def test_replay_of_the_active_rules_changes_nothing(ops: OpsNode) -> None:
    out = ops.http.post(
        "/api/rules/replay", json={"text": RULES, "since": "1d", "changed_only": False}
    ).json()
    assert out["totals"] == {
        "studies": 2,
        "changed": 0,
        "current_runs": 0,
        "new_runs": 0,
        "extra_runs": 0,
        "days": 2,
        "extra_runs_per_day": 0.0,
    }
    assert len(out["studies"]) == 2 and not any(s["changed"] for s in out["studies"])
    paged = ops.http.post(
        "/api/rules/replay",
        json={"text": RULES, "since": "1d", "changed_only": False, "limit": 1, "offset": 1},
    ).json()
    assert paged["listed"] == 2 and len(paged["studies"]) == 1
    assert paged["studies"][0]["study_uid"] == out["studies"][1]["study_uid"]


def test_a_bad_rule_file_gives_every_position(ops: OpsNode) -> None:
    r = ops.http.post("/api/rules/replay", json={"text": BAD, "since": "7d"})
    assert r.status_code == 422
    assert r.headers["content-type"] == "application/problem+json"
    problem = r.json()
    assert problem["type"] == "urn:ainode:problem:invalid-rules"
    texts = [e["text"] for e in problem["errors"]]
    assert f"{ops.rules_path}:4:23: unknown operator 'equal'; did you mean 'equals'?" in texts
    assert any(t.startswith(f"{ops.rules_path}:5:21: unknown destination 'nowhere'") for t in texts)


def test_a_bad_window_is_a_precise_422(ops: OpsNode) -> None:
    r = ops.http.post("/api/rules/replay", json={"text": RULES, "since": "last week"})
    assert r.status_code == 422
    assert r.json()["type"] == "urn:ainode:problem:invalid-window"
    assert r.json()["errors"][0]["field"] == "since"
    r = ops.http.post("/api/rules/replay", json={"text": RULES, "until": "soon"})
    assert r.status_code == 422 and r.json()["errors"][0]["field"] == "until"
    assert ops.http.post("/api/rules/replay", json={"text": RULES, "limit": -1}).status_code == 422


def test_a_replay_is_audited_without_patient_data(ops: OpsNode) -> None:
    """Who, when, the rule files' sha256 and the counts: no UID of a study, no header value."""
    r = ops.http.post("/api/rules/replay", json={"text": NEW, "since": "1d"})
    assert r.status_code == 200
    out = r.json()
    (rec, *_) = ops.http.get("/api/audit", params={"event": "rules.replayed"}).json()["records"]
    assert rec["via"] == "api" and rec["outcome"] == "success" and rec["ts"]
    assert rec["actor"] == "anonymous"  # the test node is open on loopback (no credentials)
    assert rec["rules_sha256"] == out["rules_sha256"]
    assert rec["active_sha256"] == ops.node.rules.sha256
    assert rec["since"] == out["since"] and rec["until"] == out["until"]
    t = out["totals"]
    assert (rec["studies"], rec["changed"], rec["extra_runs"]) == (2, 2, t["extra_runs"])
    assert (rec["current_runs"], rec["new_runs"]) == (t["current_runs"], t["new_runs"])
    assert rec["study_uid"] is None
    text = str(rec)
    assert ops.ct_study not in text and ops.dx_study not in text and "Patient" not in text
    # a refused rule file replays nothing and so is not a replay
    before = len(ops.http.get("/api/audit", params={"event": "rules.replayed"}).json()["records"])
    assert ops.http.post("/api/rules/replay", json={"text": BAD, "since": "1d"}).status_code == 422
    after = len(ops.http.get("/api/audit", params={"event": "rules.replayed"}).json()["records"])
    assert after == before
