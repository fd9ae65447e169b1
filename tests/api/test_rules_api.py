"""``/api/rules``: read, validate, dry-run, replace (file + hot swap), audit of changes."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest

from tests.api.opsnode import RULES, OpsNode, start_ops_node

DX_TO_ARCHIVE = RULES.replace("then: {send_to: silent}", "then: {send_to: archive}")

INVALID = """\
version: 1
rules:
  - name: a
    when: {Modality: CT}
    then: {send_to: nowhere}
  - name: b
    wehn: {Modality: MR}
    then: ignore
"""


@pytest.fixture(scope="module")
def ops(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OpsNode]:
    yield from start_ops_node(tmp_path_factory.mktemp("rules"))


def test_get_rules(ops: OpsNode) -> None:
    got = ops.http.get("/api/rules").json()
    assert got["text"] == RULES
    assert got["rules"] == ["chest-ct-archive", "dx-to-silent"]
    assert got["sha256"] == ops.node.rules.sha256 and len(got["sha256"]) == 64
    assert got["errors"] == [] and got["path"] == str(ops.rules_path)


def test_validate_lists_every_error_with_position(ops: OpsNode) -> None:
    ok = ops.http.post("/api/rules/validate", json={"text": DX_TO_ARCHIVE})
    assert ok.status_code == 200 and ok.json()["valid"] is True
    bad = ops.http.post("/api/rules/validate", json={"text": INVALID})
    assert bad.status_code == 422
    assert bad.headers["content-type"] == "application/problem+json"
    problem = bad.json()
    assert problem["type"] == "urn:ainode:problem:invalid-rules"
    lines = {(e["line"], e["column"]) for e in problem["errors"]}
    assert len(problem["errors"]) >= 2
    assert any(line == 5 for line, _ in lines), problem["errors"]  # unknown destination
    assert any(line == 7 for line, _ in lines), problem["errors"]  # 'wehn' typo
    for e in problem["errors"]:
        assert e["text"].startswith(f"{ops.rules_path}:{e['line']}:{e['column']}: ")
    # nothing changed
    assert ops.http.get("/api/rules").json()["text"] == RULES


def test_dry_run_active_and_submitted_rules(ops: OpsNode) -> None:
    active = ops.http.post("/api/rules/dry-run", json={"study_uid": ops.dx_study}).json()
    assert active["active"] is True
    assert [d["send_to"] for d in active["decisions"]] == ["silent"]
    trial = ops.http.post(
        "/api/rules/dry-run", json={"study_uid": ops.dx_study, "text": DX_TO_ARCHIVE}
    ).json()
    assert trial["active"] is False
    assert [d["send_to"] for d in trial["decisions"]] == ["archive"]
    assert trial["series"][0]["modality"] == "DX"
    assert ops.http.post("/api/rules/dry-run", json={"study_uid": "1.2.3"}).status_code == 404
    bad = ops.http.post("/api/rules/dry-run", json={"study_uid": ops.dx_study, "text": INVALID})
    assert bad.status_code == 422 and bad.json()["errors"]
    # a dry run queues nothing
    assert len(ops.node.outbox.list(study_uid=ops.dx_study)) == 1


def test_put_invalid_changes_nothing(ops: OpsNode) -> None:
    before = ops.rules_path.read_text(encoding="utf-8")
    r = ops.http.put("/api/rules", json={"text": INVALID})
    assert r.status_code == 422 and len(r.json()["errors"]) >= 2
    assert ops.rules_path.read_text(encoding="utf-8") == before
    assert ops.http.get("/api/rules").json()["text"] == before


def test_put_swaps_writes_and_audits(ops: OpsNode) -> None:
    old_sha = ops.node.rules.sha256
    r = ops.http.put("/api/rules", json={"text": DX_TO_ARCHIVE})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["text"] == DX_TO_ARCHIVE and body["previous_sha256"] == old_sha
    assert "-    then: {send_to: silent}" in body["diff"]
    assert "+    then: {send_to: archive}" in body["diff"]
    assert ops.rules_path.read_text(encoding="utf-8") == DX_TO_ARCHIVE  # a restart keeps it
    assert ops.node.rules.sha256 == body["sha256"] != old_sha
    # the new rules are live: a dry run with the active rules now sends DX to the archive
    live = ops.http.post("/api/rules/dry-run", json={"study_uid": ops.dx_study}).json()
    assert [d["send_to"] for d in live["decisions"]] == ["archive"]
    lines = [
        json.loads(x) for x in (ops.data_dir / "audit.log").read_text(encoding="utf-8").splitlines()
    ]
    changed = [x for x in lines if x["event"] == "rules.changed"]
    assert changed[-1]["sha256"] == body["sha256"]
    assert changed[-1]["old_sha256"] == old_sha and len(changed[-1]["diff_sha256"]) == 64
    assert any(x["event"] == "rules.rejected" for x in lines)
