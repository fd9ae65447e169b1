"""The study page's retract form and ``POST /api/results/retract``: roles, CSRF, auth before
parsing, problem JSON, audit without the reason (issue 18 §4).

The ops node's CT study gets real result objects (``add_preview_results``), queued for the
``archive`` folder destination and delivered there before the tests retract them.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pydicom
import pytest
from pydicom.uid import generate_uid

from node.api.auth import hash_password
from node.config import AuthConfig, TokenConfig, UserConfig
from node.types import DeliveryState
from tests.api.opsnode import OpsNode, start_ops_node
from tests.conftest import INSTALL_CHECKERS, checker_node_modules, require_tool
from tests.console.results import add_preview_results
from tests.util import wait_until

TOKEN = "retract-console-admin-token"
VIEWER_TOKEN = "retract-console-viewer-token"
OPERATOR = {"user": "otto", "password": "otto-operator-password"}
VIEWER = {"user": "vera", "password": "vera-viewer-password"}
SECOND = "j-second-set"
HERE = Path(__file__).parent
MODULES = checker_node_modules()
REASON = "left and right swapped for patient Doe"  # free text: never in the audit trail


@pytest.fixture(scope="module")
def ops(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OpsNode]:
    tmp = tmp_path_factory.mktemp("retract-tokens")
    (tmp / "viewer").write_text(VIEWER_TOKEN + "\n")
    auth = AuthConfig(
        token=TOKEN,
        tokens={"reader": TokenConfig(token_file=tmp / "viewer", role="viewer")},
        users={
            OPERATOR["user"]: UserConfig(
                password_hash=hash_password(OPERATOR["password"]), role="operator"
            ),
            VIEWER["user"]: UserConfig(
                password_hash=hash_password(VIEWER["password"]), role="viewer"
            ),
        },
    )
    for running in start_ops_node(tmp_path_factory.mktemp("retract-console"), auth=auth):
        made = add_preview_results(running)
        paths = [running.data_dir / o["path"] for o in made["objects"]]
        outbox = running.node.outbox
        outbox.enqueue_many(paths, destinations=["archive"], job_id=made["job_id"])

        def delivered() -> bool:
            states = {r.state for r in outbox.list(job_id="j-preview")}  # noqa: B023
            return states == {DeliveryState.DELIVERED}

        wait_until(delivered, timeout=60, what="preview results delivered to the archive")
        # a second set of the same study, queued for a destination that never answers: the
        # browser test retracts it (its rows are withdrawn before they go out)
        second = _copies(paths, running.data_dir / "results" / SECOND)
        outbox.enqueue_many(second, destinations=["blocked"], job_id=SECOND)
        yield running


def _copies(sources: list[Path], out: Path) -> list[Path]:
    """The same objects as another result set: fresh series and SOP Instance UIDs."""
    out.mkdir(parents=True, exist_ok=True)
    series: dict[str, str] = {}
    paths = []
    for n, src in enumerate(sources):
        ds = pydicom.dcmread(src)
        ds.SeriesInstanceUID = series.setdefault(str(ds.SeriesInstanceUID), generate_uid())
        ds.SOPInstanceUID = generate_uid()
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        path = out / f"{n:03d}.dcm"
        ds.save_as(path, enforce_file_format=True)
        paths.append(path)
    return paths


@contextmanager
def _session(ops: OpsNode, who: dict[str, str]) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=str(ops.http.base_url), follow_redirects=False, timeout=30) as c:
        m = re.search(r'name="csrf" value="([0-9a-f]{64})"', c.get("/console/login").text)
        assert m is not None
        r = c.post("/console/login", data={**who, "csrf": m.group(1)})
        assert r.status_code == 303, r.text
        yield c


def _form(page: str) -> dict[str, str] | None:
    m = re.search(r'<form class="retract-form".*?</form>', page, re.S)
    if m is None:
        return None
    form = m.group(0)
    fields = dict(re.findall(r'<input type="hidden" name="(\w+)" value="([^"]*)"', form))
    fields["action"] = re.search(r'action="([^"]+)"', form).group(1)  # type: ignore[union-attr]
    fields["options"] = ",".join(re.findall(r'<option value="([^"]+)"', form))
    return fields


def _notes_in_archive(ops: OpsNode) -> list[pydicom.Dataset]:
    out: list[pydicom.Dataset] = []
    for p in sorted(ops.archive.rglob("*.dcm")):
        ds = pydicom.dcmread(p, stop_before_pixels=True)
        if "ConceptNameCodeSequence" in ds and ds.ConceptNameCodeSequence[0].CodeValue == "113001":
            out.append(ds)
    return out


def test_api_checks_the_role_before_reading_the_body(ops: OpsNode) -> None:
    base = str(ops.http.base_url)
    anonymous = httpx.post(f"{base}/api/results/retract", content=b"{not json", timeout=30)
    assert anonymous.status_code == 401
    assert anonymous.headers["content-type"].startswith("application/problem+json")
    refused = httpx.post(
        f"{base}/api/results/retract",
        content=b"{not json",
        headers={"Authorization": f"Bearer {VIEWER_TOKEN}"},
        timeout=30,
    )
    assert refused.status_code == 403, refused.text
    assert refused.headers["content-type"].startswith("application/problem+json")
    bad = ops.http.post("/api/results/retract", json={"uid": "j-preview"})  # no reason
    assert bad.status_code == 422 and bad.json()["status"] == 422
    unknown = ops.http.post("/api/results/retract", json={"uid": "2.25.9", "reason": "x"})
    assert (
        unknown.status_code == 404 and "no delivered or queued result" in unknown.json()["detail"]
    )
    assert ops.http.get("/api/results/rejections").json() == {"rejections": []}


def test_a_viewer_gets_no_form_and_cannot_post_it(ops: OpsNode) -> None:
    with _session(ops, OPERATOR) as operator:
        form = _form(operator.get(f"/console/studies/{ops.ct_study}").text)
    assert form is not None and form["options"] == f"j-preview,{SECOND}"
    with _session(ops, VIEWER) as c:
        page = c.get(f"/console/studies/{ops.ct_study}").text
        assert 'class="retract-form"' not in page and 'id="rejections"' in page
        r = c.post(form["action"], data={"csrf": form["csrf"], "uid": "j-preview", "reason": "x"})
        assert r.status_code == 403
    assert ops.http.get("/api/results/rejections").json() == {"rejections": []}


def test_the_form_retracts_with_the_session_csrf_and_is_audited(ops: OpsNode) -> None:
    study_page = f"/console/studies/{ops.ct_study}"
    with _session(ops, OPERATOR) as c:
        form = _form(c.get(study_page).text)
        assert form is not None
        data = {"csrf": form["csrf"], "uid": "j-preview", "reason": REASON}
        stale = c.post(form["action"], data={**data, "csrf": "0" * 64})
        assert stale.status_code == 403
        no_reason = c.post(form["action"], data={**data, "reason": "  "})
        assert no_reason.status_code == 422
        other = c.post(form["action"], data={**data, "uid": "j-elsewhere"})
        assert other.status_code == 404
        assert ops.http.get("/api/results/rejections").json() == {"rejections": []}

        r = c.post(form["action"], data=data)
        assert r.status_code == 303 and r.headers["location"] == f"{study_page}#rejections"
        (done,) = ops.http.get(
            "/api/results/rejections", params={"study_uid": ops.ct_study}
        ).json()["rejections"]
        objects = {o["sop_uid"] for o in ops.node.jobs.get("j-preview").outputs["objects"]}
        assert done["kind"] == "retracted" and done["actor"] == "user:otto"
        assert done["reason"] == REASON and done["job_ids"] == ["j-preview"]
        assert set(done["rejected_sop_uids"]) == objects
        assert done["destinations"] == ["archive"]
        wait_until(lambda: len(_notes_in_archive(ops)) == 1, timeout=60, what="note in archive")
        (note,) = _notes_in_archive(ops)
        assert str(note.SOPInstanceUID) == done["note_sop_uid"]

        page = c.get(study_page).text
        left = _form(page)
        assert left is None or "j-preview" not in left["options"]  # retracted: not offered
        assert re.search(r'<tr class="rejection"><td>[^<]+</td><td>retracted</td>', page)

    audit = ops.http.get("/api/audit", params={"event": "results.retracted"}).json()
    records = audit["records"] if isinstance(audit, dict) else audit
    ok = [r for r in records if r["outcome"] == "success"]
    assert len(ok) == 1 and ok[0]["actor"] == "user:otto"
    assert ok[0]["study_uid"] == ops.ct_study
    assert "Doe" not in str(audit) and REASON not in str(audit)


@pytest.mark.slow
def test_the_retract_form_in_headless_chromium(ops: OpsNode, tmp_path: Path) -> None:
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
    before = len(ops.http.get("/api/results/rejections").json()["rejections"])
    args = {
        "base": str(ops.http.base_url).rstrip("/"),
        "operator": OPERATOR,
        "study": ops.ct_study,
        "job": SECOND,
        "shots": str(shots),
        "profile": str(tmp_path / "profile"),
    }
    proc = subprocess.run(
        [node_js, str(HERE / "drive_retract.js"), json.dumps(args)],
        env={**os.environ, "NODE_PATH": str(MODULES)},
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["forms"] == 1 and SECOND in out["options"]
    assert out["empty_valid"] is False  # the reason is required before anything is sent
    assert out["after_url"] == f"/console/studies/{ops.ct_study}#rejections"
    assert out["rows_after"] == out["rows_before"] + 1
    assert "retracted" in out["row"] and "user:otto" in out["row"]
    assert "model ran on the scout series" in out["row"]
    rejections = ops.http.get("/api/results/rejections", params={"job_id": SECOND}).json()
    (done,) = rejections["rejections"]
    assert len(ops.http.get("/api/results/rejections").json()["rejections"]) == before + 1
    assert done["destinations"] == []  # nothing had reached 'blocked': no note is needed
    rows = ops.node.outbox.list(job_id=SECOND)
    assert rows and {r.state for r in rows} == {DeliveryState.WITHDRAWN}
    steps = ops.http.get(f"/api/studies/{ops.ct_study}").json()["lifecycle"]
    (blocked,) = [s for s in steps if s.get("destination") == "blocked"]
    assert blocked["state"] == "withdrawn" and blocked["delivered"] == 0
