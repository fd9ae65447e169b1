from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from node.app import Node
from node.config import AuthConfig
from node.errors import ConfigError
from tests.api.conftest import multipart, start_node

TOKEN = "s3cret-token-for-tests"


@pytest.fixture
def guarded(tmp_path: Path) -> Iterator[tuple[Node, str]]:
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN + "\n")
    node = start_node(tmp_path / "data", auth=AuthConfig(token_file=token_file))
    try:
        yield node, f"http://127.0.0.1:{node.http_port}"
    finally:
        node.stop()


def test_token_is_required_except_for_health(guarded: tuple[Node, str]) -> None:
    _, url = guarded
    assert httpx.get(f"{url}/api/health", timeout=60).status_code == 200
    for request in (
        httpx.Request("GET", f"{url}/api/studies"),
        httpx.Request("GET", f"{url}/api/studies/1.2.3"),
        httpx.Request("POST", f"{url}/api/studies/1.2.3/complete"),
        httpx.Request("POST", f"{url}/dicom-web/studies", content=multipart([])[0]),
    ):
        with httpx.Client(timeout=60) as client:
            resp = client.send(request)
        assert resp.status_code == 401, request.url
        assert resp.headers["www-authenticate"].startswith("Bearer")
        assert resp.headers["content-type"] == "application/problem+json"
    wrong = httpx.get(f"{url}/api/studies", headers={"Authorization": "Bearer nope"}, timeout=60)
    assert wrong.status_code == 401
    good = httpx.get(f"{url}/api/studies", headers={"Authorization": f"Bearer {TOKEN}"}, timeout=60)
    assert good.status_code == 200 and good.json()["studies"] == []


def test_unreadable_token_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="auth.token_file"):
        start_node(tmp_path / "data", auth=AuthConfig(token_file=tmp_path / "missing"))
