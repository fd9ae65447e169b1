"""The node's read-only DICOMweb (QIDO-RS + WADO-RS), checked with dicomweb-client and the
worker's own WADO-RS fetch, behind bearer-token authentication."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pydicom
import pytest
from dicomweb_client.api import DICOMwebClient

from node.app import Node
from node.config import AuthConfig, Config, NodeConfig, StudyConfig
from node.errors import NotFoundError
from node.jobs.remote import fetch_series
from node.samples.writers import write_ct_series

TOKEN = "dw-token"


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[Node, list[Path]]]:
    hu = np.random.default_rng(3).integers(-1000, 400, size=(6, 32, 32)).astype(np.float32)
    files = write_ct_series(hu, spacing=(2.0, 1.0, 1.0), out_dir=tmp_path / "in")
    node = Node(
        Config(
            auth=AuthConfig(token=TOKEN),
            node=NodeConfig(
                data_dir=tmp_path / "data", dicom_port=0, http_port=0, min_free_bytes=0
            ),
            study=StudyConfig(stable_seconds=3600),
        )
    )
    node.start()
    try:
        for f in files:
            node.spool.store(f.read_bytes(), calling_aet=None, source="stow")
        yield node, files
    finally:
        node.stop()


def _client(node: Node, token: str | None = TOKEN) -> DICOMwebClient:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return DICOMwebClient(f"http://127.0.0.1:{node.http_port}/dicom-web", headers=headers)


def _uids(files: list[Path]) -> tuple[str, str, set[str]]:
    first = pydicom.dcmread(files[0], stop_before_pixels=True)
    sops = {str(pydicom.dcmread(f, stop_before_pixels=True).SOPInstanceUID) for f in files}
    return str(first.StudyInstanceUID), str(first.SeriesInstanceUID), sops


def test_qido_rs_finds_studies_series_and_instances(served: tuple[Node, list[Path]]) -> None:
    node, files = served
    study, series, sops = _uids(files)
    client = _client(node)
    studies = client.search_for_studies()
    assert [s["0020000D"]["Value"][0] for s in studies] == [study]
    assert studies[0]["00201208"]["Value"] == [len(files)]
    assert studies[0]["00080061"]["Value"] == ["CT"]
    found = client.search_for_series(study_instance_uid=study)
    assert [s["0020000E"]["Value"][0] for s in found] == [series]
    assert found[0]["00201209"]["Value"] == [len(files)]
    instances = client.search_for_instances(study_instance_uid=study, series_instance_uid=series)
    assert {i["00080018"]["Value"][0] for i in instances} == sops
    filtered = client.search_for_studies(search_filters={"StudyInstanceUID": "1.2.3.4"})
    assert filtered == []


def test_wado_rs_returns_the_stored_bytes(served: tuple[Node, list[Path]]) -> None:
    node, files = served
    study, series, sops = _uids(files)
    client = _client(node)
    datasets = client.retrieve_series(study, series)
    assert {str(ds.SOPInstanceUID) for ds in datasets} == sops
    assert all(ds.PixelData for ds in datasets)
    one = sorted(sops)[0]
    (ds,) = [client.retrieve_instance(study, series, one)]
    assert str(ds.SOPInstanceUID) == one
    # byte for byte what the node stored (what a worker fetches is what the node holds)
    stored = {i.sop_uid: pydicom.dcmread(i.path) for i in node.index.series_instances(series)}
    for got in datasets:
        assert got.PixelData == stored[str(got.SOPInstanceUID)].PixelData
    whole = client.retrieve_study(study)
    assert len(whole) == len(files)


def test_worker_fetch_writes_identical_files(
    served: tuple[Node, list[Path]], tmp_path: Path
) -> None:
    node, files = served
    study, series, _ = _uids(files)
    got = fetch_series(
        node_url=f"http://127.0.0.1:{node.http_port}",
        token=TOKEN,
        study_uid=study,
        series_uid=series,
        out_dir=tmp_path / "fetched",
    )
    digest = {hashlib.sha256(p.read_bytes()).hexdigest() for p in got}
    stored = {
        hashlib.sha256(i.path.read_bytes()).hexdigest() for i in node.index.series_instances(series)
    }
    assert digest == stored and len(got) == len(files)
    with pytest.raises(NotFoundError):
        fetch_series(
            node_url=f"http://127.0.0.1:{node.http_port}",
            token=TOKEN,
            study_uid=study,
            series_uid="1.2.3.999",
            out_dir=tmp_path / "none",
        )


def test_dicomweb_needs_the_token(served: tuple[Node, list[Path]]) -> None:
    node, files = served
    study, series, _ = _uids(files)
    base = f"http://127.0.0.1:{node.http_port}/dicom-web"
    for path in ("/studies", f"/studies/{study}/series", f"/studies/{study}/series/{series}"):
        resp = httpx.get(base + path, timeout=60)
        assert resp.status_code == 401, path
        wrong = httpx.get(base + path, headers={"Authorization": "Bearer nope"}, timeout=60)
        assert wrong.status_code == 401, path
    missing = httpx.get(
        f"{base}/studies/{study}/series/1.2.3.999",
        headers={"Authorization": f"Bearer {TOKEN}"},
        timeout=60,
    )
    assert missing.status_code == 404
    assert missing.headers["content-type"].startswith("application/problem+json")
