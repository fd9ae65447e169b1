from __future__ import annotations

from typing import Any

import httpx

from tests.api.conftest import RunningNode


def _is_problem(resp: httpx.Response, status: int) -> dict[str, Any]:
    assert resp.status_code == status
    assert resp.headers["content-type"] == "application/problem+json"
    body: dict[str, Any] = resp.json()
    assert {"type", "title", "status", "detail", "instance"} <= set(body)
    assert body["status"] == status
    return body


def test_unknown_study_is_a_404_problem(running: RunningNode) -> None:
    body = _is_problem(running.http.get("/api/studies/1.2.3.4"), 404)
    assert body["type"] == "urn:ainode:problem:not-found"
    assert body["title"] == "Not found"
    assert "1.2.3.4" in body["detail"]
    assert body["instance"] == "/api/studies/1.2.3.4"


def test_completing_an_unknown_study_is_a_404_problem(running: RunningNode) -> None:
    body = _is_problem(running.http.post("/api/studies/9.9/complete"), 404)
    assert body["type"] == "urn:ainode:problem:not-found"


def test_unknown_route_and_method_are_problems(running: RunningNode) -> None:
    body = _is_problem(running.http.get("/api/nothing-here"), 404)
    assert body["type"] == "about:blank" and body["title"] == "Not Found"
    body = _is_problem(running.http.delete("/api/studies"), 405)
    assert body["title"] == "Method Not Allowed"


def test_invalid_query_is_a_422_problem(running: RunningNode) -> None:
    body = _is_problem(running.http.get("/api/studies", params={"limit": 0}), 422)
    assert body["type"] == "urn:ainode:problem:invalid-request"
    assert "limit" in body["detail"]


def test_health(running: RunningNode) -> None:
    resp = running.http.get("/api/health")
    assert resp.status_code == 200
    body = resp.json()
    assert body["status"] == "ok"
    assert body["ae_title"] == "AINODE"
    assert body["http_port"] == running.node.http_port != 0
    assert body["dicom_port"] == running.node.dicom_port != 0
    assert body["disk_free_bytes"] > 0


def test_unexpected_failure_is_a_500_problem_without_internals(running: RunningNode) -> None:
    running.node.index.close()  # the index disappears under the running API
    body = _is_problem(running.http.get("/api/studies"), 500)
    assert body["type"] == "urn:ainode:problem:internal"
    assert body["detail"] == "internal error; see the node's log"
    assert _is_problem(running.http.get("/api/health"), 503)["detail"].startswith(
        "the index cannot be read"
    )
