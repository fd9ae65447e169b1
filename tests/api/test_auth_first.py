"""Authentication comes before request parsing, on every write route (issue 20 section 4).

The list of routes is generated from the running application, so a route added later is
checked without editing this file: an unauthenticated write must answer 401 (API) or a
redirect to the login form (console), a principal with too low a role 403 — never 422 from
body validation, 404/409 from state checks or 2xx.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from fastapi.routing import iter_route_contexts

from node.api.auth import Role, required_role
from node.app import Node
from node.config import AuthConfig, TokenConfig
from tests.api.conftest import start_node

VIEWER = "viewer-token-for-auth-first-tests"
OPERATOR = "operator-token-for-auth-first-tests"
READS = {"GET", "HEAD", "OPTIONS"}
#: Writes anyone may send: the login form itself (it checks its own CSRF nonce and password).
PUBLIC_WRITES = {("POST", "/console/login")}

#: Bodies that reach different parsers: broken JSON, JSON of the wrong shape, a broken
#: multipart body, a form without its CSRF field, and nothing.
BODIES: list[tuple[str, bytes]] = [
    ("application/json", b"{not json"),
    ("application/json", b'{"rules": 7, "study_uid": [1]}'),
    ('multipart/related; type="application/dicom"; boundary=x', b"--x\r\n\r\ngarbage"),
    ("application/x-www-form-urlencoded", b"yaml=%ff&nothing=1"),
    ("application/json", b""),
]


@pytest.fixture(scope="module")
def guarded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Node, str]]:
    tmp = tmp_path_factory.mktemp("auth-first")
    (tmp / "viewer").write_text(VIEWER + "\n")
    (tmp / "operator").write_text(OPERATOR + "\n")
    auth = AuthConfig(
        login_max_failures=100_000,  # the bad-token case is sent to every route
        tokens={
            "viewer": TokenConfig(token_file=tmp / "viewer", role="viewer"),
            "operator": TokenConfig(token_file=tmp / "operator", role="operator"),
        },
    )
    node = start_node(tmp / "data", auth=auth)
    try:
        yield node, f"http://127.0.0.1:{node.http_port}"
    finally:
        node.stop()


def _write_routes(node: Node) -> list[tuple[str, str]]:
    http = node._http  # the uvicorn server's app: the application actually served
    assert http is not None
    server = http.server
    assert server is not None
    routes = set()
    for route in iter_route_contexts(server.config.app.routes):
        for method in getattr(route, "methods", None) or ():
            if method not in READS:
                routes.add((method, str(route.path)))
    return sorted(routes)


def _concrete(path: str) -> str:
    return re.sub(r"\{[^}]+\}", "1.2.826.0.1.3680043.10.543.1", path)


def test_the_route_list_is_not_empty(guarded: tuple[Node, str]) -> None:
    routes = _write_routes(guarded[0])
    # the generator really sees the routers: the contract's write routes are all there
    for expected in [
        ("PUT", "/api/rules"),
        ("POST", "/dicom-web/studies"),
        ("POST", "/api/pull"),
        ("POST", "/console/rules"),
    ]:
        assert expected in routes


def test_every_write_route_authenticates_before_parsing(guarded: tuple[Node, str]) -> None:
    node, url = guarded
    checked = 0
    with httpx.Client(base_url=url, timeout=30, follow_redirects=False) as http:
        for method, path in _write_routes(node):
            if (method, path) in PUBLIC_WRITES:
                continue
            for content_type, body in BODIES:
                for headers in ({}, {"Authorization": "Bearer not-a-token"}):
                    resp = http.request(
                        method,
                        _concrete(path),
                        content=body,
                        headers={"Content-Type": content_type, **headers},
                    )
                    where = f"{method} {path} {content_type} {body[:12]!r} {headers}"
                    if path.startswith("/console"):
                        assert resp.status_code == 303, where
                        assert resp.headers["location"] == "/console/login", where
                    else:
                        assert resp.status_code == 401, (where, resp.text)
                        assert resp.headers["www-authenticate"].startswith("Bearer"), where
                        assert resp.headers["content-type"] == "application/problem+json"
                    checked += 1
    assert checked >= 40


@pytest.mark.parametrize("token,role", [(VIEWER, Role.VIEWER), (OPERATOR, Role.OPERATOR)])
def test_a_too_low_role_gets_403_before_parsing(
    guarded: tuple[Node, str], token: str, role: Role
) -> None:
    node, url = guarded
    refused = 0
    with httpx.Client(base_url=url, timeout=30, follow_redirects=False) as http:
        for method, path in _write_routes(node):
            if (method, path) in PUBLIC_WRITES or role.allows(required_role(method, path)):
                continue
            for content_type, body in BODIES:
                resp = http.request(
                    method,
                    _concrete(path),
                    content=body,
                    headers={"Content-Type": content_type, "Authorization": f"Bearer {token}"},
                )
                assert resp.status_code == 403, (method, path, body[:12], resp.text[:200])
                refused += 1
    assert refused >= len(BODIES)  # viewer: every operator route; operator: the admin ones


def test_put_rules_with_a_bad_body_and_no_credentials_is_401(guarded: tuple[Node, str]) -> None:
    # the case the issue names: this answered 422 from body validation
    _, url = guarded
    resp = httpx.put(
        f"{url}/api/rules", content=b"{", headers={"Content-Type": "application/json"}, timeout=60
    )
    assert resp.status_code == 401
    assert resp.json()["status"] == 401


def test_authenticated_requests_still_reach_validation(guarded: tuple[Node, str]) -> None:
    _, url = guarded
    resp = httpx.post(
        f"{url}/api/pull",
        content=b"{",
        headers={"Content-Type": "application/json", "Authorization": f"Bearer {OPERATOR}"},
        timeout=60,
    )
    assert resp.status_code == 422  # the gate let it through; the body is then validated


def test_public_routes_need_nothing(guarded: tuple[Node, str], tmp_path: Path) -> None:
    _, url = guarded
    assert httpx.get(f"{url}/api/health", timeout=60).status_code == 200
    assert httpx.get(f"{url}/console/login", timeout=60).status_code == 200
