"""The console in a real headless browser (Debian chromium driven by playwright-core).

Logs in as a local user (a wrong password first), reads a study's routing explanation and its
SEG / heat-map previews, a failed model's status line (reason, retry) and retries it, opens the
dashboard, edits a rule with an error and sees the inline message, dry-runs, saves, replays the
saved rules on the stored studies (with its progress indicator), retries a dead delivery, then
logs in as a viewer whose save is refused with a 403 page.  Screenshots go to
``docs/images/`` when ``AINODE_SCREENSHOTS=1``, else to a temporary folder.
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from node.api.auth import hash_password
from node.config import AuthConfig, UserConfig
from node.types import Job, JobState
from tests.api.opsnode import OpsNode, start_ops_node
from tests.conftest import INSTALL_CHECKERS, checker_node_modules, require_tool
from tests.console.results import add_preview_results
from tests.util import wait_until

TOKEN = "console-test-token"
ADMIN = {"user": "ada", "password": "ada-admin-password"}
VIEWER = {"user": "vera", "password": "vera-viewer-password"}
HERE = Path(__file__).parent
MODULES = checker_node_modules()


@pytest.fixture(scope="module")
def ops(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OpsNode]:
    auth = AuthConfig(
        token=TOKEN,
        users={
            ADMIN["user"]: UserConfig(password_hash=hash_password(ADMIN["password"]), role="admin"),
            VIEWER["user"]: UserConfig(
                password_hash=hash_password(VIEWER["password"]), role="viewer"
            ),
        },
    )
    yield from start_ops_node(tmp_path_factory.mktemp("console"), auth=auth)


@pytest.mark.slow
def test_console_in_headless_chromium(ops: OpsNode, tmp_path: Path) -> None:
    node_js = require_tool("node")
    require_tool("chromium")
    if not (MODULES / "playwright-core").is_dir():
        pytest.fail(f"playwright-core is missing under {MODULES}; run {INSTALL_CHECKERS}")
    add_preview_results(ops)
    # a job for a model the node does not have: the engine fails it, with a reason
    ct = ops.node.index.get_study(ops.ct_study)
    assert ct is not None
    failed = Job(
        job_id="console-missing-model",
        study_uid=ops.ct_study,
        series_uids=(ct.series[0].series_uid,),
        model="no-such-model",
        rule="chest-ct-archive",
    )
    ops.node.jobs.submit([failed], max_attempts=1)
    wait_until(
        lambda: ops.node.jobs.get(failed.job_id).state in (JobState.FAILED, JobState.DEAD),
        timeout=60,
        what="the engine to fail the job",
    )
    reason = ops.node.jobs.get(failed.job_id).reason
    assert reason
    shots = (
        HERE.parents[1] / "docs" / "images"
        if os.environ.get("AINODE_SCREENSHOTS") == "1"
        else tmp_path / "shots"
    )
    shots.mkdir(parents=True, exist_ok=True)
    args = {
        "base": str(ops.http.base_url).rstrip("/"),
        "admin": ADMIN,
        "viewer": VIEWER,
        "ctStudy": ops.ct_study,
        "dxStudy": ops.dx_study,
        "shots": str(shots),
        "profile": str(tmp_path / "profile"),
    }
    proc = subprocess.run(
        [node_js, str(HERE / "drive.js"), json.dumps(args)],
        env={**os.environ, "NODE_PATH": str(MODULES)},
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])

    assert out["redirected_to"] == "/console/login"
    assert out["wrong_password"] == "wrong user name or password"
    assert out["whoami"] == "ada · admin"
    assert set(out["studies"]) == {ops.ct_study, ops.dx_study}
    charts = dict(out["charts"])
    assert charts["chart-studies_received"] == "2" and charts["chart-jobs_succeeded"] == "1"

    assert out["failed_line"].startswith("no-such-model: ")
    assert f"({reason})" in out["failed_line"] and out["failed_line"].endswith("Retry")
    assert out["failed_reason_link"] == f"#job-{failed.job_id}"
    assert out["failed_after_url"] == f"/console/studies/{ops.ct_study}"
    retried = ops.http.get("/api/audit", params={"event": "job.retry"}).json()["records"]
    assert [(r["job_id"], r["actor"]) for r in retried] == [(failed.job_id, "user:ada")]

    verdicts = {row[0]: (row[1], row[2]) for row in out["verdicts"]}
    assert verdicts["chest-ct-archive"][0] == "matched"
    assert verdicts["dx-to-silent"] == ("not matched", "Modality equals 'DX': seen 'CT'")
    assert "forward originals to archive" in out["routing_text"]
    kinds = sorted(cls.split()[-1] for cls, _ in out["previews"])
    assert kinds == ["preview-ot", "preview-seg"] or kinds == ["preview-ct", "preview-seg"]
    assert all(width > 0 for _, width in out["previews"])

    assert len(out["inline_errors"]) == 1
    assert out["inline_errors"][0].startswith("line 7, column 5: unknown key 'wehn'")
    assert out["bad_line"] == ["    wehn: {Modality: DX}"]

    assert "dx-to-archive" not in out["dry_run"]  # rule names are unchanged
    assert "dx-to-silent: forward to archive" in out["dry_run"]
    assert out["saved_message"].startswith("saved and active")
    assert "+    then: {send_to: archive}" in out["diff"]
    assert out["changes"] == 1
    assert "send_to: archive" in ops.rules_path.read_text(encoding="utf-8").split("dx-to-silent")[1]

    # replay of the saved rules: the DX study was routed (recorded) with the old ones
    assert out["replay_message"].startswith("replayed on 2 stored studies since ")
    assert out["replay_progress"] == "Replay on stored studies…", out["replay_progress"]
    assert out["busy_after"] is True  # the answer page starts without it
    assert "1 would change, +0 model runs; nothing was queued" in out["replay_message"]
    assert out["replay_days"] == 2  # yesterday and today (UTC)
    assert ops.dx_study in out["replay_studies"] and ops.ct_study not in out["replay_studies"]
    assert "to silent" in out["replay_studies"] and "to archive" in out["replay_studies"]

    assert out["delivery_before"] == "dead"
    assert out["delivery_after"] == "pending"  # the silent peer holds the new attempt
    assert out["after_url"] == f"/console/studies/{ops.dx_study}"
    assert out["deliveries"] == len(ops.node.outbox.list())

    assert any("lung-nodule-seg" in m and "demo" in m for m in out["models"])

    assert out["viewer_whoami"] == "vera · viewer"
    assert out["viewer_retry_buttons"] == 0
    assert out["viewer_save_note"] == "saving needs the admin role"
    assert out["viewer_save_status"] == 403
    assert out["viewer_save_message"] == ("user:vera has role viewer; this action needs admin.")
    assert "send_to: archive" in ops.rules_path.read_text(encoding="utf-8").split("dx-to-silent")[1]

    for name in (
        "login",
        "studies",
        "dashboard",
        "study",
        "rules-error",
        "rules-saved",
        "delivery-retry",
        "deliveries",
        "models",
        "forbidden",
    ):
        assert (shots / f"console-{name}.png").stat().st_size > 5000, name

    records = ops.http.get("/api/audit").json()["records"]
    events = {(r["event"], r["actor"]) for r in records}
    assert {
        ("login", "user:ada"),
        ("login.failed", "anonymous"),
        ("rules.changed", "user:ada"),
        ("delivery.retry", "user:ada"),
        ("login", "user:vera"),
        ("access.denied", "user:vera"),
    } <= events
