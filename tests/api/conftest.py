"""A real node (index, spool, tracker, DICOM listener, uvicorn HTTP) on free loopback ports."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from node.app import Node
from node.config import AuthConfig, Config, NodeConfig, StudyConfig

STOW_LIMIT = 4 * 1024 * 1024


@dataclass
class RunningNode:
    node: Node
    url: str
    http: httpx.Client


def start_node(
    data_dir: Path,
    *,
    stow_max_bytes: int = STOW_LIMIT,
    auth: AuthConfig | None = None,
    quota_bytes: int | None = None,
) -> Node:
    config = Config(
        auth=auth or AuthConfig(),
        node=NodeConfig(
            data_dir=data_dir,
            dicom_port=0,
            http_port=0,
            min_free_bytes=0,
            stow_max_bytes=stow_max_bytes,
            quota_bytes=quota_bytes,
        ),
        study=StudyConfig(stable_seconds=3600),  # completion only when forced
    )
    node = Node(config)
    node.start()
    return node


@pytest.fixture
def running(tmp_path: Path) -> Iterator[RunningNode]:
    node = start_node(tmp_path / "data")
    url = f"http://127.0.0.1:{node.http_port}"
    try:
        # a deadline, not a wait: completing a study routes it inside the request, and the first
        # routing describes the models in a child process that imports torch (35 s and more on
        # a loaded machine, issue 19)
        with httpx.Client(base_url=url, timeout=120) as http:
            yield RunningNode(node=node, url=url, http=http)
    finally:
        node.stop()


BOUNDARY = "ainode-test-7d1f0c2b"


def multipart(
    parts: list[bytes], *, part_type: str = "application/dicom", boundary: str = BOUNDARY
) -> tuple[bytes, dict[str, str]]:
    """A multipart/related body (RFC 2387) and its headers, as a STOW-RS client sends it."""
    out = bytearray()
    for data in parts:
        out += f"--{boundary}\r\nContent-Type: {part_type}\r\n\r\n".encode()
        out += data + b"\r\n"
    out += f"--{boundary}--\r\n".encode()
    content_type = f'multipart/related; type="application/dicom"; boundary="{boundary}"'
    return bytes(out), {"Content-Type": content_type, "Accept": "application/dicom+json"}
