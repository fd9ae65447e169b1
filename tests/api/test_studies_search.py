"""``GET /api/studies`` search (issue 22 §1) on a real node with machine tokens per role:
filters, validation, server-side paging with the filters kept, PHI masked for a role without
rights (and its PHI search refused), shown and audited -- without the values -- for one with."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np
import pydicom
import pytest

from node.app import Node
from node.config import AuthConfig, Config, NodeConfig, StudyConfig, TokenConfig
from node.samples import write_ct_series, write_projection
from tests.api.conftest import multipart

TOKENS = {"viewer": "vtok-0123456789abcdef", "reviewer": "rtok-0123456789abcdef"}
STUDIES = [  # patient id, name, accession, date, kind
    ("PID-A", "Alpha^Ann", "ACC-1", "20240105", "ct"),
    ("PID-B", "Bravo^Bob", "ACC-2", "20240210", "dx"),
    ("PID-A", "Alpha^Ann", "ACC-3", "20240301", "ct"),
]


@dataclass
class SearchNode:
    node: Node
    http: httpx.Client
    uids: list[str]
    data_dir: Path

    def get(self, role: str, path: str, **params: object) -> httpx.Response:
        return self.http.get(
            path, params=params, headers={"Authorization": f"Bearer {TOKENS[role]}"}
        )

    def audit(self) -> list[dict[str, object]]:
        text = (self.data_dir / "audit.log").read_text(encoding="utf-8")
        return [json.loads(line) for line in text.splitlines()]


@pytest.fixture(scope="module")
def search_node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SearchNode]:
    tmp = tmp_path_factory.mktemp("search")
    mp = pytest.MonkeyPatch()
    for role, token in TOKENS.items():
        mp.setenv(f"AINODE_TEST_{role.upper()}_TOKEN", token)
    config = Config(
        auth=AuthConfig(
            tokens={
                role: TokenConfig(token_env=f"AINODE_TEST_{role.upper()}_TOKEN", role=role)  # type: ignore[arg-type]
                for role in TOKENS
            }
        ),
        node=NodeConfig(data_dir=tmp / "data", dicom_port=0, http_port=0, min_free_bytes=0),
        study=StudyConfig(stable_seconds=3600),
    )
    node = Node(config)
    node.start()
    uids = []
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{node.http_port}", timeout=30) as http:
            for n, (pid, name, acc, date, kind) in enumerate(STUDIES):
                out = tmp / f"s{n}"
                if kind == "ct":
                    files = write_ct_series(np.zeros((2, 8, 8)), spacing=(1, 1, 1), out_dir=out)
                else:
                    files = [write_projection(np.zeros((16, 16)), out_dir=out)]
                for f in files:
                    ds = pydicom.dcmread(f)
                    ds.PatientID, ds.PatientName, ds.AccessionNumber = pid, name, acc
                    ds.StudyDate = date
                    ds.save_as(f)
                body, headers = multipart([f.read_bytes() for f in files])
                headers["Authorization"] = "Bearer unused"
                resp = http.post("/dicom-web/studies", content=body, headers=headers)
                assert resp.status_code == 401  # nobody here may store: use the spool
                for f in files:
                    node.spool.store(f.read_bytes(), calling_aet="TEST", source="test")
                uids.append(str(pydicom.dcmread(files[0]).StudyInstanceUID))
            yield SearchNode(node=node, http=http, uids=uids, data_dir=tmp / "data")
    finally:
        node.stop()
        mp.undo()


def test_filters_and_paging(search_node: SearchNode) -> None:
    s, uids = search_node, search_node.uids

    def found(**params: object) -> list[str]:
        resp = s.get("reviewer", "/api/studies", **params)
        assert resp.status_code == 200, resp.text
        return [r["study_uid"] for r in resp.json()["studies"]]

    assert found() == uids[::-1]
    assert found(patient_id="PID-A") == [uids[2], uids[0]]
    assert found(accession="ACC-2") == [uids[1]]
    assert found(patient_name="alpha") == [uids[2], uids[0]]
    assert found(modality="dx") == [uids[1]]
    assert found(**{"from": "2024-02-01", "to": "2024-03-01"}) == [uids[2], uids[1]]
    assert found(status="open") == uids[::-1] and found(status="failed") == []
    assert found(sort="study_date", order="asc") == uids
    first = s.get("reviewer", "/api/studies", patient_id="PID-A", limit=1).json()
    assert first["total"] == 2 and [r["study_uid"] for r in first["studies"]] == [uids[2]]
    assert "patient_id=PID-A" in first["next"]
    second = s.http.get(first["next"], headers={"Authorization": f"Bearer {TOKENS['reviewer']}"})
    assert [r["study_uid"] for r in second.json()["studies"]] == [uids[0]]
    assert second.json()["next"] is None
    row = second.json()["studies"][0]
    assert row["modalities"] == ["CT"] and row["series_count"] == 1 and row["instance_count"] == 2
    assert row["study_date"] == "20240105" and row["ai_status"] == "none"
    assert row["url"] == f"/api/studies/{uids[0]}"


@pytest.mark.parametrize(
    "params",
    [
        {"from": "2024-13-01"},
        {"to": "yesterday"},
        {"from": "2024-03-01", "to": "2024-01-01"},
        {"status": "lost"},
        {"sort": "size; DROP TABLE studies"},
        {"limit": 0},
    ],
)
def test_bad_queries_are_422_problems(search_node: SearchNode, params: dict[str, object]) -> None:
    resp = search_node.get("reviewer", "/api/studies", **params)
    assert resp.status_code == 422
    assert resp.headers["content-type"] == "application/problem+json"


def test_phi_masked_for_a_viewer_and_search_refused(search_node: SearchNode) -> None:
    s = search_node
    before = len(s.audit())
    body = s.get("viewer", "/api/studies").json()
    assert body["phi"] == "masked" and len(body["studies"]) == 3
    for row in body["studies"]:
        assert row["patient_id"] is None and row["patient_name"] is None
        assert row["accession"] is None and row["study_date"] is not None
    assert "Alpha" not in s.get("viewer", "/api/studies").text
    detail = s.get("viewer", f"/api/studies/{s.uids[1]}")
    assert detail.json()["phi"] == "masked" and "Bravo" not in detail.text
    for params in ({"patient_id": "PID-A"}, {"accession": "ACC-1"}, {"sort": "patient_name"}):
        refused = s.get("viewer", "/api/studies", **params)
        assert refused.status_code == 403, params
        assert refused.headers["content-type"] == "application/problem+json"
    assert s.get("viewer", "/api/studies", modality="CT").status_code == 200
    assert not [r for r in s.audit()[before:] if r["event"] == "phi.viewed"]


def test_phi_shown_and_audited_for_a_reviewer(search_node: SearchNode) -> None:
    s = search_node
    before = len(s.audit())
    body = s.get("reviewer", "/api/studies", patient_id="PID-A").json()
    assert body["phi"] == "shown"
    assert {r["patient_name"] for r in body["studies"]} == {"Alpha^Ann"}
    detail = s.get("reviewer", f"/api/studies/{s.uids[1]}").json()
    assert (detail["patient_id"], detail["accession"]) == ("PID-B", "ACC-2")
    records = [r for r in s.audit()[before:] if r["event"] == "phi.viewed"]
    assert len(records) == 2
    listed, shown = records
    assert listed["actor"] == "token:reviewer"
    assert listed["study_uids"] == [s.uids[2], s.uids[0]]
    assert listed["filters"] == ["patient_id"]
    assert listed["purpose"] == "GET /api/studies"
    assert shown["study_uid"] == s.uids[1]
    text = (s.data_dir / "audit.log").read_text(encoding="utf-8")
    for value in ("PID-A", "PID-B", "Alpha", "Bravo", "ACC-1", "ACC-2"):
        assert value not in text


def test_authentication_before_the_query_is_parsed(search_node: SearchNode) -> None:
    """A bad query from nobody is a 401, never a 422 that would reveal the parameters."""
    resp = search_node.http.get("/api/studies", params={"from": "not-a-date"})
    assert resp.status_code == 401
    bad = search_node.http.get(
        "/api/studies", params={"from": "x"}, headers={"Authorization": "Bearer wrong"}
    )
    assert bad.status_code == 401
