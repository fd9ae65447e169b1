"""Console login, sessions and CSRF over plain HTTP (the browser test covers the pages)."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pydicom
import pytest

from node.samples import write_projection
from tests.api.conftest import multipart
from tests.api.opsnode import RULES, OpsNode, start_ops_node

TOKEN = "forms-token"


@pytest.fixture(scope="module")
def ops(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OpsNode]:
    yield from start_ops_node(tmp_path_factory.mktemp("forms"), token=TOKEN)


def _client(ops: OpsNode) -> httpx.Client:
    return httpx.Client(base_url=str(ops.http.base_url), follow_redirects=False, timeout=30)


def _login(c: httpx.Client) -> None:
    m = re.search(r'name="csrf" value="([0-9a-f]{64})"', c.get("/console/login").text)
    assert m is not None
    r = c.post("/console/login", data={"token": TOKEN, "csrf": m.group(1)})
    assert r.status_code == 303 and r.headers["location"] == "/console/studies"
    cookie = r.headers["set-cookie"].lower()
    assert "httponly" in cookie and "samesite=strict" in cookie


def _csrf(c: httpx.Client) -> str:
    m = re.search(r'name="csrf" value="([0-9a-f]{64})"', c.get("/console/rules").text)
    assert m is not None
    return m.group(1)


def test_pages_need_a_login(ops: OpsNode) -> None:
    with _client(ops) as c:
        for path in (
            "/console",
            "/console/studies",
            f"/console/studies/{ops.ct_study}",
            "/console/rules",
            "/console/models",
            "/console/destinations",
        ):
            r = c.get(path)
            assert r.status_code == 303 and r.headers["location"] == "/console/login", path
        c.cookies.set("ainode_session", "1.forged", path="/console")
        assert c.get("/console/studies").status_code == 303
        assert c.get("/console/login").status_code == 200


def test_forms_need_the_csrf_field_of_the_session(ops: OpsNode) -> None:
    with _client(ops) as c, _client(ops) as anonymous:
        _login(c)
        token = _csrf(c)
        # a form post without the session is sent to the login page, csrf or not
        r = anonymous.post("/console/rules", data={"text": RULES, "action": "save", "csrf": token})
        assert r.status_code == 303 and r.headers["location"] == "/console/login"
        form = {"text": RULES, "action": "validate"}
        assert c.post("/console/rules", data={**form, "csrf": "0" * 64}).status_code == 403
        r = c.post("/console/rules", data={**form, "csrf": token})
        assert r.status_code == 200 and "valid: 2 rule(s)" in r.text
        dead = ops.node.outbox.list(state="dead")
        assert dead
        r = c.post(f"/console/deliveries/{dead[0].id}/retry", data={"csrf": "f" * 64})
        assert r.status_code == 403
        assert ops.node.outbox.get(dead[0].id).state.value == "dead"


def test_docs_redirect(ops: OpsNode) -> None:
    with _client(ops) as c:
        r = c.get("/docs")
        assert r.status_code == 307 and r.headers["location"] == "/api/docs"


def test_open_study_shows_what_the_active_rules_would_do(ops: OpsNode, tmp_path: Path) -> None:
    f = write_projection(np.zeros((16, 16)), out_dir=tmp_path / "dx2")
    body, headers = multipart([f.read_bytes()])
    assert ops.http.post("/dicom-web/studies", content=body, headers=headers).status_code == 200
    uid = str(pydicom.dcmread(f).StudyInstanceUID)
    with _client(ops) as c:
        _login(c)
        page = c.get(f"/console/studies/{uid}").text
    assert "Not routed yet" in page and 'id="live-note"' in page
    assert re.search(r"<td>dx-to-\w+</td><td><span class=\"state state-matched\">matched", page)


def test_series_thumbnail_is_a_small_png(ops: OpsNode) -> None:
    import io

    from PIL import Image

    series = ops.node.index.get_study(ops.ct_study)
    assert series is not None
    with _client(ops) as c:
        uid = series.series[0].series_uid
        assert c.get(f"/console/series/{uid}/thumbnail.png").status_code == 303  # login first
        _login(c)
        r = c.get(f"/console/series/{uid}/thumbnail.png")
        assert r.status_code == 200 and r.headers["content-type"] == "image/png"
        image = Image.open(io.BytesIO(r.content))
        assert image.format == "PNG" and max(image.size) <= 160
        assert 'src="/console/series/' in c.get(f"/console/studies/{ops.ct_study}").text
        assert c.get("/console/series/1.2.3/thumbnail.png").status_code == 404
