"""The rules page's replay form (``POST /console/rules/replay``) over HTTP, on a real node."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterator

import httpx
import pytest

from tests.api.opsnode import RULES, OpsNode, start_ops_node
from tests.api.test_rules_replay_api import BAD, NEW

TOKEN = "replay-forms-token"


@pytest.fixture(scope="module")
def ops(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OpsNode]:
    yield from start_ops_node(tmp_path_factory.mktemp("console-replay"), token=TOKEN)


@pytest.fixture
def console(ops: OpsNode) -> Iterator[tuple[httpx.Client, str]]:
    with httpx.Client(base_url=str(ops.http.base_url), follow_redirects=False, timeout=60) as c:
        m = re.search(r'name="csrf" value="([0-9a-f]{64})"', c.get("/console/login").text)
        assert m is not None
        r = c.post("/console/login", data={"token": TOKEN, "csrf": m.group(1)})
        assert r.status_code == 303
        page = c.get("/console/rules").text
        assert 'formaction="/console/rules/replay"' in page and 'name="since"' in page
        m = re.search(r'name="csrf" value="([0-9a-f]{64})"', page)
        assert m is not None
        yield c, m.group(1)


def test_replay_form_shows_the_diff_and_the_runs_per_day(
    ops: OpsNode, console: tuple[httpx.Client, str]
) -> None:
    c, csrf = console
    jobs_before = ops.node.jobs.list_jobs()
    outbox_before = len(ops.node.outbox.list())
    r = c.post(
        "/console/rules/replay",
        data={"csrf": csrf, "text": NEW, "since": "1d", "action": "validate", "study_uid": ""},
    )
    assert r.status_code == 200, r.text[:500]
    page = r.text
    assert 'id="replay-days"' in page and 'id="replay-studies"' in page
    assert "replayed on 2 stored studies" in page and "2 would change" in page
    study = ops.node.index.get_study(ops.dx_study)
    assert study is not None
    dx_series = study.series[0].series_uid
    assert f'newly ignored <span class="mono">{dx_series}</span>' in page
    assert f'− forward <span class="mono">{dx_series}</span> to silent' in page
    assert ops.ct_study in page
    # the edited text stays in the editor; nothing was saved, queued or forwarded
    assert "then: ignore" in page and ops.http.get("/api/rules").json()["text"] == RULES
    assert ops.node.jobs.list_jobs() == jobs_before
    assert len(ops.node.outbox.list()) == outbox_before


def test_replay_form_errors(ops: OpsNode, console: tuple[httpx.Client, str]) -> None:
    c, csrf = console
    r = c.post("/console/rules/replay", data={"csrf": csrf, "text": BAD, "since": "7d"})
    assert r.status_code == 200
    assert "nothing was replayed" in r.text and "column 23: unknown operator" in r.text
    assert 'id="replay-result"' not in r.text
    r = c.post("/console/rules/replay", data={"csrf": csrf, "text": RULES, "since": "soon"})
    assert "give a duration" in r.text and 'id="replay-result"' not in r.text
    r = c.post("/console/rules/replay", data={"csrf": "0" * 64, "text": RULES, "since": "7d"})
    assert r.status_code == 403


def test_replay_form_is_audited(ops: OpsNode, console: tuple[httpx.Client, str]) -> None:
    c, csrf = console
    r = c.post(
        "/console/rules/replay",
        data={"csrf": csrf, "text": NEW, "since": "1d", "action": "validate", "study_uid": ""},
    )
    assert r.status_code == 200
    records = ops.http.get("/api/audit", params={"event": "rules.replayed"}).json()["records"]
    rec = records[0]
    assert rec["via"] == "console" and rec["actor"].startswith("token:")
    assert rec["rules_sha256"] == hashlib.sha256(NEW.encode("utf-8")).hexdigest()
    assert rec["active_sha256"] == ops.node.rules.sha256
    assert (rec["studies"], rec["changed"]) == (2, 2)
    assert ops.ct_study not in str(rec) and ops.dx_study not in str(rec)
