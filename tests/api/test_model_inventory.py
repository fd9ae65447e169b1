"""``GET /api/models`` and the console's models page: the inventory of a running node."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from node.app import Node
from node.config import AuthConfig, Config, NodeConfig, StudyConfig
from node.jobs.store import JobStore
from node.models.identity import identify
from node.types import Job
from tests.models.builders import write_body_model

RULES = """\
version: 1
rules:
  - {name: ct-lungs, when: {Modality: CT}, then: {model: lung-nodule-seg}}
  - {name: ct-body, when: {Modality: CT}, then: [{model: lung-nodule-seg}, {model: tiny-body}]}
"""


@pytest.fixture
def inventory_node(tmp_path: Path) -> Iterator[httpx.Client]:
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    # history before the node starts: three finished runs of lung-nodule-seg, one failed
    store = JobStore(data_dir / "index.sqlite")
    jobs = [Job(f"j{n}", f"1.2.{n}", ("1.2.3",), "lung-nodule-seg", "ct-lungs") for n in range(3)]
    store.submit(jobs, max_attempts=1)
    for n in range(3):
        claimed = store.claim("w")
        assert claimed is not None
        store.finish(claimed.job_id, ok=n != 1, reason=None if n != 1 else "boom")
    (tmp_path / "rules.yaml").write_text(RULES)
    write_body_model(tmp_path / "models")
    config = Config(
        auth=AuthConfig(),
        node=NodeConfig(data_dir=data_dir, dicom_port=0, http_port=0, min_free_bytes=0),
        study=StudyConfig(stable_seconds=3600),
        rules=tmp_path / "rules.yaml",
        models=[tmp_path / "models"],
    )
    node = Node(config)
    node.start()
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{node.http_port}", timeout=60) as http:
            yield http
    finally:
        node.stop()


def test_inventory_over_http_and_console(inventory_node: httpx.Client, tmp_path: Path) -> None:
    r = inventory_node.get("/api/models")
    assert r.status_code == 200, r.text
    models = {m["name"]: m for m in r.json()["models"]}
    seg = models["lung-nodule-seg"]
    assert seg["rules"] == ["ct-lungs", "ct-body"] and seg["format"] == "builtin"
    assert seg["usage"]["24h"]["runs"] == 3 and seg["usage"]["24h"]["failures"] == 1
    assert seg["usage"]["30d"]["runs"] == 3 and seg["usage"]["24h"]["p95_seconds"] is not None
    assert seg["status"] == "described" and "not loaded" in seg["checked"]
    assert seg["card"] and seg["version"] == "1.1.0" and seg["device"] == "cpu"
    body = models["tiny-body"]
    expected = identify(
        name="tiny-body",
        version="1.2",
        source="torchscript",
        location=str(tmp_path / "models" / "tiny-body.yaml"),
    )
    assert body["device_uid"] == expected.device_uid and body["files"] == expected.files
    assert body["rules"] == ["ct-body"] and body["usage"]["24h"]["runs"] == 0
    page = inventory_node.get("/console/models")
    assert page.status_code == 200
    assert expected.device_uid in page.text and "ct-lungs" in page.text
