"""The console's pulls page: start a pull from a configured source and follow its progress,
against a real Orthanc archive and a real ``ainode serve``."""

from __future__ import annotations

import re
from pathlib import Path

import httpx
import pytest

from tests.peers.node import start_node
from tests.pull.conftest import Archive
from tests.util import wait_until


def _csrf(page: str) -> str:
    m = re.search(r'name="csrf" value="([0-9a-f]{64})"', page)
    assert m is not None, "the pull form has no csrf field"
    return m.group(1)


def _row(page: str) -> str:
    m = re.search(r'<tr class="pull" data-id="[0-9a-f]+" data-state="[a-z]+">.*?</tr>', page, re.S)
    assert m is not None, page
    return m.group(0)


@pytest.mark.slow
def test_pull_from_the_console_shows_its_progress(tmp_path: Path, archive: Archive) -> None:
    o = archive.orthanc
    sources = {
        "archive": {
            "type": "dimse",
            "host": "127.0.0.1",
            "port": o.dicom_port,
            "ae_title": "ORTHANC",
        }
    }
    with (
        start_node(
            tmp_path / "n",
            node={"ae_title": "AINODE", "dicom_port": archive.node_port},
            sources=sources,
        ) as node,
        httpx.Client(base_url=node.url, timeout=60, follow_redirects=False) as c,
    ):
        page = c.get("/console/pulls").text
        assert "<option>archive</option>" in page and "No pulls since the node started" in page
        csrf = _csrf(page)
        # a form without a study or a patient is refused with the reason, nothing starts
        r = c.post("/console/pulls", data={"csrf": csrf, "source": "archive"})
        assert r.status_code == 422 and "not started: give study_uid" in r.text
        r = c.post(
            "/console/pulls",
            data={"csrf": csrf, "source": "nowhere", "study_uid": archive.study_uid},
        )
        assert r.status_code == 404 and "nowhere" in r.text
        assert "No pulls since the node started" in r.text
        # a wrong csrf field starts nothing either
        r = c.post(
            "/console/pulls",
            data={"csrf": "0" * 64, "source": "archive", "study_uid": archive.study_uid},
        )
        assert r.status_code == 403
        r = c.post(
            "/console/pulls",
            data={"csrf": csrf, "source": "archive", "study_uid": archive.study_uid},
        )
        assert r.status_code == 303 and r.headers["location"] == "/console/pulls"
        page = c.get("/console/pulls").text
        row = _row(page)
        assert archive.study_uid in row
        if 'data-state="queued"' in row or 'data-state="running"' in row:
            assert '<meta http-equiv="refresh" content="2">' in page  # follows itself

        def finished() -> bool:
            return 'data-state="succeeded"' in _row(c.get("/console/pulls").text)

        wait_until(finished, timeout=180, what="the pull to succeed on the console page")
        page = c.get("/console/pulls").text
        row = _row(page)
        assert "1 of 1 completed" in row and "30 of 30" in row
        assert '<progress value="30" max="30">' in row
        assert 'http-equiv="refresh"' not in page  # nothing left to follow
        audit = c.get("/api/audit", params={"event": "pull.requested"}).json()
        assert any(e.get("source") == "archive" for e in audit["records"]), audit


def test_pulls_page_says_how_to_add_a_source(tmp_path: Path) -> None:
    with start_node(tmp_path / "n") as node:
        page = httpx.get(f"{node.url}/console/pulls", timeout=60).text
        assert "No sources yet" in page and 'id="pull-form"' not in page
