"""Radiologist feedback (issue 18 section 5) on a real node with a real SQLite index.

Two succeeded jobs are recorded in the job store before the node starts (as a worker records
them: objects and the ``prediction.json`` summary with two detections).  Verdicts are posted over
HTTP with tokens of each role, then read back through ``GET /api/feedback``, ``/metrics``,
``GET /api/models``, the console's models page and the audit trail; a second node on the same
data directory still has them.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from node.app import Node
from node.config import AuthConfig, TokenConfig
from node.jobs.store import JobStore
from node.results.uids import result_uid
from node.types import Job
from tests.api.conftest import start_node

TOKENS = {
    "viewer": "feedback-viewer-token",
    "reviewer": "feedback-reviewer-token",
    "operator": "feedback-operator-token",
    "admin": "feedback-admin-token",
}
MODEL, VERSION = "lung-nodule-seg", "1.1.0"  # a built-in model: the inventory lists it
STUDY, OTHER_STUDY = "1.2.826.0.1.3680043.10.543.7001", "1.2.826.0.1.3680043.10.543.7002"
SEG_UID, SR_UID = "2.25.1001", "2.25.1002"
OTHER_SR_UID = "2.25.2002"
COMMENT = "PHI-ish remark: patient Doe, nodule is a vessel"


def _outputs(sops: list[tuple[str, str]], tracking_ids: list[str]) -> dict[str, Any]:
    return {
        "objects": [
            {"path": f"results/x/{n:03d}.dcm", "sop_uid": uid, "modality": modality}
            for n, (uid, modality) in enumerate(sops)
        ],
        "summary": {
            "model": {"name": MODEL, "version": VERSION, "task": "detection", "is_demo": True},
            "device_uid": "2.25.424242",
            "detections": [
                {"tracking_id": t, "type": "Nodule", "score": 0.9} for t in tracking_ids
            ],
        },
    }


def _record_jobs(data_dir: Path) -> None:
    store = JobStore(data_dir / "index.sqlite")
    jobs = {
        "j-feedback": (STUDY, _outputs([(SEG_UID, "SEG"), (SR_UID, "SR")], ["nodule 1", "n2"])),
        "j-other": (OTHER_STUDY, _outputs([(OTHER_SR_UID, "SR")], ["nodule 1"])),
    }
    for job_id, (study, _) in jobs.items():
        store.submit([Job(job_id, study, ("1.2.3",), MODEL, "ct-lungs")], max_attempts=1)
    for _ in jobs:
        claimed = store.claim("w")
        assert claimed is not None
        store.finish(claimed.job_id, ok=True, outputs=jobs[claimed.job_id][1])


def _auth(tmp: Path) -> AuthConfig:
    tokens = {}
    for role, secret in TOKENS.items():
        (tmp / role).write_text(secret + "\n")
        tokens[role] = TokenConfig(token_file=tmp / role, role=role)  # type: ignore[arg-type]
    return AuthConfig(tokens=tokens)


def _client(node: Node, role: str | None) -> httpx.Client:
    headers = {"Authorization": f"Bearer {TOKENS[role]}"} if role else {}
    return httpx.Client(base_url=f"http://127.0.0.1:{node.http_port}", headers=headers, timeout=60)


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Node]:
    tmp = tmp_path_factory.mktemp("feedback")
    (tmp / "data").mkdir()
    _record_jobs(tmp / "data")
    running = start_node(tmp / "data", auth=_auth(tmp))
    try:
        yield running
    finally:
        running.stop()


def _metric(text: str, verdict: str) -> float:
    pattern = rf'^ainode_feedback_total{{model="{MODEL}",verdict="{verdict}"}} (\S+)$'
    m = re.search(pattern, text, re.MULTILINE)
    return float(m.group(1)) if m else 0.0


def _post(http: httpx.Client, **body: Any) -> httpx.Response:
    return http.post("/api/feedback", json=body)


def test_each_verdict_round_trips_and_is_counted(node: Node) -> None:
    with _client(node, "reviewer") as http, _client(node, "admin") as admin:
        before = {v: _metric(http.get("/metrics").text, v) for v in ("accept", "reject", "modify")}
        accepted = _post(http, job_id="j-feedback", sop_uid=SEG_UID, verdict="accept")
        assert accepted.status_code == 201, accepted.text
        rejected = _post(
            http,
            job_id="j-feedback",
            sop_uid=SR_UID,
            finding="n2",
            verdict="reject",
            comment=COMMENT,
        )
        assert rejected.status_code == 201, rejected.text
        tracking_uid = result_uid(
            job_id="j-feedback", model_version=VERSION, index=-1, role="tracking/nodule 1"
        )
        modified = _post(
            http,
            job_id="j-feedback",
            sop_uid=SR_UID,
            finding=tracking_uid,
            verdict="modify",
            modified="diameter 7 mm, not 9 mm",
        )
        assert modified.status_code == 201, modified.text

        a, r, m = accepted.json(), rejected.json(), modified.json()
        assert a["actor"] == "token:reviewer" and a["verdict"] == "accept"
        assert a["study_uid"] == STUDY and a["model"] == MODEL and a["model_version"] == VERSION
        assert a["device_uid"] == "2.25.424242" and a["finding_id"] is None
        assert r["finding_id"] == "n2" and r["comment"] == COMMENT
        assert r["finding_uid"] == result_uid(
            job_id="j-feedback", model_version=VERSION, index=-1, role="tracking/n2"
        )
        assert m["finding_id"] == "nodule 1" and m["finding_uid"] == tracking_uid
        assert m["modified"] == "diameter 7 mm, not 9 mm" and m["comment"] is None

        listed = http.get("/api/feedback", params={"study_uid": STUDY}).json()["feedback"]
        assert [f["id"] for f in listed] == [m["id"], r["id"], a["id"]]  # newest first
        assert listed[1] == r
        only = http.get("/api/feedback", params={"verdict": "reject"}).json()["feedback"]
        assert [f["id"] for f in only] == [r["id"]]
        assert http.get("/api/feedback", params={"model": "other"}).json() == {"feedback": []}
        assert http.get("/api/feedback", params={"study_uid": OTHER_STUDY}).json() == {
            "feedback": []
        }

        after = http.get("/metrics").text
        assert "# TYPE ainode_feedback_total counter" in after
        for verdict in ("accept", "reject", "modify"):
            assert _metric(after, verdict) == before[verdict] + 1, verdict

        records = admin.get("/api/audit", params={"event": "feedback.recorded"}).json()["records"]
        by_id = {rec["feedback_id"]: rec for rec in records}
        assert by_id[r["id"]]["actor"] == "token:reviewer"
        assert by_id[r["id"]]["study_uid"] == STUDY and by_id[r["id"]]["verdict"] == "reject"
        assert by_id[r["id"]]["has_comment"] is True and by_id[a["id"]]["has_comment"] is False
        assert by_id[m["id"]]["finding_uid"] == tracking_uid
        audit_file = (node.config.node.data_dir / "audit.log").read_text()
        assert "feedback.recorded" in audit_file and "Doe" not in audit_file  # no comment text


def test_the_inventory_shows_acceptance_per_model_version(node: Node) -> None:
    with _client(node, "reviewer") as http:
        posted = _post(http, job_id="j-other", sop_uid=OTHER_SR_UID, verdict="accept")
        assert posted.status_code == 201, posted.text
        stored = http.get("/api/feedback", params={"model": MODEL}).json()["feedback"]
        counts = {v: sum(f["verdict"] == v for f in stored) for v in ("accept", "reject", "modify")}
        models = {row["name"]: row for row in http.get("/api/models").json()["models"]}
        seg = models[MODEL]
        assert seg["version"] == VERSION
        total = sum(counts.values())
        assert seg["feedback"] == {
            **counts,
            "total": total,
            "acceptance_rate": round(counts["accept"] / total, 4),
        }
        assert seg["feedback_by_version"] == {VERSION: seg["feedback"]}
        assert counts["accept"] >= 1 and total >= 1
        page = http.get("/console/models")
        assert page.status_code == 200
        assert f"version {VERSION} (this)" in page.text
        rate = f"{seg['feedback']['acceptance_rate'] * 100:.0f} %"
        assert rate in page.text


@pytest.mark.parametrize(
    "body,field",
    [
        ({"job_id": "j-feedback", "sop_uid": SEG_UID}, "verdict"),
        ({"job_id": "j-feedback", "sop_uid": SEG_UID, "verdict": "maybe"}, "verdict"),
        ({"job_id": "j-feedback", "verdict": "accept"}, "sop_uid"),
        ({"job_id": "j-feedback", "sop_uid": "not a uid", "verdict": "accept"}, "sop_uid"),
        ({"job_id": "", "sop_uid": SEG_UID, "verdict": "accept"}, "job_id"),
        (
            {
                "job_id": "j-feedback",
                "sop_uid": SEG_UID,
                "verdict": "accept",
                "comment": "x" * 2001,
            },
            "comment",
        ),
        (
            {"job_id": "j-feedback", "sop_uid": SEG_UID, "verdict": "accept", "modified": "y"},
            "modified",
        ),
        ({"job_id": "j-feedback", "sop_uid": SEG_UID, "verdict": "accept", "user": "x"}, "user"),
        (
            {"job_id": "j-feedback", "sop_uid": SEG_UID, "verdict": "reject", "comment": "\ud800"},
            "comment",
        ),
        ({"job_id": "j-\udfff", "sop_uid": SEG_UID, "verdict": "reject"}, "job_id"),
    ],
)
def test_invalid_bodies_are_422_naming_the_field(
    node: Node, body: dict[str, Any], field: str
) -> None:
    with _client(node, "reviewer") as http:
        before = len(http.get("/api/feedback").json()["feedback"])
        # json.dumps escapes lone surrogates as \ud800 (httpx's json= cannot encode them)
        raw = json.dumps(body)
        resp = http.post("/api/feedback", content=raw, headers={"Content-Type": "application/json"})
        assert resp.status_code == 422, resp.text
        assert resp.headers["content-type"] == "application/problem+json"
        problem = resp.json()
        assert problem["type"] == "urn:ainode:problem:invalid-request"
        assert [e["loc"] for e in problem["errors"]] == [["body", field]]
        assert len(http.get("/api/feedback").json()["feedback"]) == before


def test_a_bad_verdict_filter_is_422(node: Node) -> None:
    with _client(node, "viewer") as http:
        resp = http.get("/api/feedback", params={"verdict": "maybe"})
        assert resp.status_code == 422 and resp.json()["errors"][0]["loc"] == ["query", "verdict"]


@pytest.mark.parametrize(
    "body,detail",
    [
        ({"job_id": "j-missing", "sop_uid": SEG_UID}, "no job 'j-missing'"),
        ({"job_id": "j-feedback", "sop_uid": OTHER_SR_UID}, f"has no result object {OTHER_SR_UID}"),
        ({"job_id": "j-other", "sop_uid": SEG_UID}, f"has no result object {SEG_UID}"),
        ({"job_id": "j-feedback", "sop_uid": SR_UID, "finding": "nodule 9"}, "no finding"),
        ({"job_id": "j-other", "sop_uid": OTHER_SR_UID, "finding": "n2"}, "no finding 'n2'"),
    ],
)
def test_unknown_targets_are_404(node: Node, body: dict[str, Any], detail: str) -> None:
    with _client(node, "reviewer") as http:
        before = len(http.get("/api/feedback").json()["feedback"])
        resp = http.post("/api/feedback", json={**body, "verdict": "reject"})
        assert resp.status_code == 404, resp.text
        assert resp.json()["type"] == "urn:ainode:problem:not-found"
        assert detail in resp.json()["detail"]
        assert len(http.get("/api/feedback").json()["feedback"]) == before


def test_roles_are_checked_before_the_body_is_read(node: Node) -> None:
    broken = {"content": b"{not json", "headers": {"Content-Type": "application/json"}}
    with _client(node, None) as anonymous:
        resp = anonymous.post("/api/feedback", **broken)  # type: ignore[arg-type]
        assert resp.status_code == 401 and resp.headers["www-authenticate"].startswith("Bearer")
        assert anonymous.get("/api/feedback").status_code == 401
    with _client(node, "viewer") as viewer:
        resp = viewer.post("/api/feedback", **broken)  # type: ignore[arg-type]
        assert resp.status_code == 403, resp.text
        assert resp.json()["detail"] == "token:viewer has role viewer; this needs reviewer"
        good = {"job_id": "j-feedback", "sop_uid": SEG_UID, "verdict": "accept"}
        assert viewer.post("/api/feedback", json=good).status_code == 403
        assert viewer.get("/api/feedback").status_code == 200  # reading is a viewer's
    for role in ("reviewer", "operator", "admin"):
        with _client(node, role) as http:
            assert http.post("/api/feedback", **broken).status_code == 422, role  # type: ignore[arg-type]


def test_feedback_survives_a_restart(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    _record_jobs(data)
    first = start_node(data, auth=_auth(tmp_path))
    try:
        with _client(first, "reviewer") as http:
            posted = _post(http, job_id="j-feedback", sop_uid=SR_UID, verdict="modify", comment="c")
            assert posted.status_code == 201, posted.text
    finally:
        first.stop()
    second = start_node(data, auth=_auth(tmp_path))
    try:
        with _client(second, "reviewer") as http:
            assert http.get("/api/feedback").json()["feedback"] == [posted.json()]
            assert _metric(http.get("/metrics").text, "modify") == 1.0
    finally:
        second.stop()
