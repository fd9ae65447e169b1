"""The study page's feedback form: over plain HTTP (CSRF, roles, escaping) and in Chromium.

The ops node's CT study gets real result objects (SEG, SR, heat-map SC: ``add_preview_results``)
and a second succeeded job whose summary lists two detections, as a worker records them.
"""

from __future__ import annotations

import html
import json
import os
import re
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

from node.api.auth import hash_password
from node.config import AuthConfig, UserConfig
from node.types import Job
from tests.api.opsnode import OpsNode, start_ops_node
from tests.conftest import INSTALL_CHECKERS, checker_node_modules, require_tool
from tests.console.results import add_preview_results
from tests.util import wait_until

TOKEN = "feedback-console-token"
REVIEWER = {"user": "rita", "password": "rita-reviewer-password"}
VIEWER = {"user": "vera", "password": "vera-viewer-password"}
FINDINGS_SR = "2.25.77001"
HERE = Path(__file__).parent
MODULES = checker_node_modules()


def _record_findings_job(ops: OpsNode) -> None:
    """A succeeded job of the CT study whose summary lists two detections."""
    store = ops.node.jobs
    study = ops.node.index.get_study(ops.ct_study)
    assert study is not None
    job_id = "j-findings"
    store.submit(
        [Job(job_id, ops.ct_study, (study.series[0].series_uid,), "finder-demo", "manual")],
        max_attempts=20,
    )

    def grab() -> bool:  # the engine may claim it first: its run fails and it is queued again
        claimed = store.claim("test")
        if claimed is None or claimed.job_id == job_id:
            return claimed is not None
        store.finish(claimed.job_id, ok=False, reason="not this test's job")
        return False

    wait_until(grab, timeout=60, what="test job claimed")
    outputs = {
        "objects": [
            {"path": "results/j-findings/000-sr.dcm", "sop_uid": FINDINGS_SR, "modality": "SR"}
        ],
        "summary": {
            "model": {"name": "finder-demo", "version": "0.3"},
            "device_uid": None,
            "detections": [
                {"tracking_id": "nodule 1", "type": "Nodule", "score": 0.91, "diameter_mm": 8.5},
                {"tracking_id": "nodule 2", "type": "Nodule", "score": 0.42, "diameter_mm": 4.0},
            ],
        },
    }
    store.finish(job_id, ok=True, outputs=outputs)


@pytest.fixture(scope="module")
def ops(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OpsNode]:
    auth = AuthConfig(
        token=TOKEN,
        users={
            REVIEWER["user"]: UserConfig(
                password_hash=hash_password(REVIEWER["password"]), role="reviewer"
            ),
            VIEWER["user"]: UserConfig(
                password_hash=hash_password(VIEWER["password"]), role="viewer"
            ),
        },
    )
    for ops in start_ops_node(tmp_path_factory.mktemp("feedback-console"), auth=auth):
        add_preview_results(ops)
        _record_findings_job(ops)
        yield ops


@contextmanager
def _session(ops: OpsNode, who: dict[str, str]) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=str(ops.http.base_url), follow_redirects=False, timeout=30) as c:
        m = re.search(r'name="csrf" value="([0-9a-f]{64})"', c.get("/console/login").text)
        assert m is not None
        r = c.post("/console/login", data={**who, "csrf": m.group(1)})
        assert r.status_code == 303 and r.headers["location"] == "/console/studies", r.text
        yield c


def _forms(page: str) -> list[dict[str, str]]:
    out = []
    for form in re.findall(r'<form class="feedback-form".*?</form>', page, re.S):
        fields = dict(re.findall(r'<input type="hidden" name="(\w+)" value="([^"]*)"', form))
        fields["action"] = re.search(r'action="([^"]+)"', form).group(1)  # type: ignore[union-attr]
        out.append(fields)
    return out


def test_the_form_posts_feedback_with_the_session_csrf(ops: OpsNode) -> None:
    study_page = f"/console/studies/{ops.ct_study}"
    with _session(ops, REVIEWER) as c:
        forms = _forms(c.get(study_page).text)
        results = [f for f in forms if "finding" not in f]
        findings = [f for f in forms if "finding" in f]
        objects = ops.node.jobs.get("j-preview").outputs["objects"]
        assert {f["sop_uid"] for f in results} == {o["sop_uid"] for o in objects} | {FINDINGS_SR}
        assert [(f["finding"], f["sop_uid"]) for f in findings] == [
            ("nodule 1", FINDINGS_SR),
            ("nodule 2", FINDINGS_SR),
        ]
        target = findings[1]
        data = {k: v for k, v in target.items() if k != "action"}
        comment = "<script>alert(1)</script> looks like a vessel"

        stale = c.post(target["action"], data={**data, "csrf": "0" * 64, "verdict": "reject"})
        assert stale.status_code == 403
        assert ops.http.get("/api/feedback", params={"job_id": "j-findings"}).json() == {
            "feedback": []
        }

        r = c.post(target["action"], data={**data, "verdict": "reject", "comment": comment})
        assert r.status_code == 303 and r.headers["location"] == f"{study_page}#findings"
        stored = ops.http.get("/api/feedback", params={"job_id": "j-findings"}).json()["feedback"]
        assert len(stored) == 1
        assert stored[0]["actor"] == "user:rita" and stored[0]["verdict"] == "reject"
        assert stored[0]["finding_id"] == "nodule 2" and stored[0]["comment"] == comment
        assert stored[0]["model"] == "finder-demo" and stored[0]["model_version"] == "0.3"

        bad = c.post(target["action"], data={**data, "verdict": "maybe"})
        assert bad.status_code == 422 and "verdict" in bad.json()["detail"]
        shown = c.get(study_page).text
        assert comment not in shown and html.escape(comment, quote=False) in shown
        assert "reject</span> by user:rita" in shown


def test_a_viewer_sees_feedback_but_gets_no_form(ops: OpsNode) -> None:
    with _session(ops, REVIEWER) as reviewer:
        form = _forms(reviewer.get(f"/console/studies/{ops.ct_study}").text)[0]
    with _session(ops, VIEWER) as c:
        page = c.get(f"/console/studies/{ops.ct_study}").text
        assert 'class="feedback-form"' not in page and 'id="results"' in page
        data = {k: v for k, v in form.items() if k != "action"}
        before = ops.http.get("/api/feedback").json()["feedback"]
        r = c.post(form["action"], data={**data, "verdict": "accept"})
        assert r.status_code == 403 and 'id="forbidden"' in r.text
        assert ops.http.get("/api/feedback").json()["feedback"] == before


@pytest.mark.slow
def test_the_feedback_form_in_headless_chromium(ops: OpsNode, tmp_path: Path) -> None:
    node_js = require_tool("node")
    require_tool("chromium")
    if not (MODULES / "playwright-core").is_dir():
        pytest.fail(f"playwright-core is missing under {MODULES}; run {INSTALL_CHECKERS}")
    shots = (
        HERE.parents[1] / "docs" / "images"
        if os.environ.get("AINODE_SCREENSHOTS") == "1"
        else tmp_path / "shots"
    )
    shots.mkdir(parents=True, exist_ok=True)
    args = {
        "base": str(ops.http.base_url).rstrip("/"),
        "reviewer": REVIEWER,
        "study": ops.ct_study,
        "shots": str(shots),
        "profile": str(tmp_path / "profile"),
    }
    proc = subprocess.run(
        [node_js, str(HERE / "drive_feedback.js"), json.dumps(args)],
        env={**os.environ, "NODE_PATH": str(MODULES)},
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])

    assert out["whoami"] == "rita · reviewer"
    assert out["result_forms"] == len(ops.node.jobs.get("j-preview").outputs["objects"]) + 1
    assert out["finding_forms"] == 2 and out["finding"] == "nodule 1"
    assert out["after_finding_url"] == f"/console/studies/{ops.ct_study}#findings"
    assert out["finding_given"].startswith("modify by user:rita")
    assert "boundary drawn too wide" in out["finding_given"]
    assert "(changed: diameter 6 mm)" in out["finding_given"]
    assert out["unchosen_valid"] is False and out["unchosen_given"] == 0
    assert out["result_given"].startswith("accept by user:rita")
    stored = ops.http.get("/api/feedback", params={"study_uid": ops.ct_study}).json()["feedback"]
    newest = {(f["sop_uid"], f["finding_id"]): f for f in reversed(stored)}  # newest wins
    modified = newest[(FINDINGS_SR, "nodule 1")]
    assert modified["verdict"] == "modify" and modified["modified"] == "diameter 6 mm"
    assert newest[(out["result_sop"], None)]["verdict"] == "accept"
    assert (shots / "console-feedback.png").stat().st_size > 5000
