"""``ainode pull`` end to end: a real Orthanc archive, a real ``ainode serve`` (C-MOVE destination,
study assembly, ``POST /api/pull``), and the CLI pulling locally through the ingest spool or
handing the pull to the running node."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pydicom
import pytest

from node.store.index import Index
from tests.peers.node import start_node, write_config
from tests.pull.conftest import Archive, Received, check_equal
from tests.util import wait_until

ROOT = Path(__file__).resolve().parents[2]


def _pull(cfg: Path, *args: str) -> dict[str, Any]:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    out = subprocess.run(
        [sys.executable, "-m", "node", "pull", "--config", str(cfg), "--json", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr
    result: dict[str, Any] = json.loads(out.stdout)
    return result


def _stored(data_dir: Path, study_uid: str) -> tuple[list[Received], dict[str, Any] | None]:
    index = Index(data_dir / "index.sqlite")
    try:
        got = [Received(i.sop_uid, i.path.read_bytes()) for i in index.study_instances(study_uid)]
        return got, index.study_row(study_uid)
    finally:
        index.close()


def _sources(archive: Archive) -> dict[str, Any]:
    o = archive.orthanc
    return {
        "move": {"type": "dimse", "host": "127.0.0.1", "port": o.dicom_port, "ae_title": "ORTHANC"},
        "get": {
            "type": "dimse",
            "host": "127.0.0.1",
            "port": o.dicom_port,
            "ae_title": "ORTHANC",
            "method": "c-get",
        },
        "web": {"type": "dicomweb", "url": o.dicomweb_url},
    }


def test_c_move_into_running_node_is_assembled(tmp_path: Path, archive: Archive) -> None:
    with start_node(
        tmp_path / "n",
        node={"ae_title": "AINODE", "dicom_port": archive.node_port},
        sources=_sources(archive),
    ) as node:
        out = _pull(node.config_path, "--local", "--from", "move", "--study", archive.study_uid)
        assert out["received"] == 30 and out["failed"] == 0
        assert out["announced"] == [archive.study_uid]
        got, row = _stored(node.data_dir, archive.study_uid)
        assert row is not None and row["state"] == "complete"
        check_equal(got, archive.stored, exact=False)


def test_c_get_and_wado_through_the_spool_without_duplicates(
    tmp_path: Path, archive: Archive
) -> None:
    cfg = write_config(tmp_path / "n", node={"ae_title": "AINODE"}, sources=_sources(archive))
    data_dir = Path(json.loads(cfg.read_text())["node"]["data_dir"])
    out = _pull(cfg, "--from", "get", "--study", archive.study_uid)
    assert out["received"] == 30 and out["announced"] == []  # no node running
    got, row = _stored(data_dir, archive.study_uid)
    assert row is not None and row["state"] == "open"
    check_equal(got, archive.stored, exact=False)
    # the same study again over WADO-RS: Orthanc's files byte for byte, still one copy each
    ds = pydicom.dcmread(archive.files[0], stop_before_pixels=True)
    d = f"{ds.StudyDate[:4]}-{ds.StudyDate[4:6]}-{ds.StudyDate[6:]}"
    out = _pull(cfg, "--from", "web", "--patient-id", str(ds.PatientID), "--from-date", d,
                "--to-date", d, "--modality", "CT")  # fmt: skip
    assert out["studies"] == [archive.study_uid] and out["received"] == 30
    got, _ = _stored(data_dir, archive.study_uid)
    assert len(got) == 30
    # the spool kept the newest copy of each (WADO-RS: Orthanc's file bytes), one per SOP UID
    check_equal(got, archive.stored, exact=True)


def _problem(r: httpx.Response, status: int, needle: str) -> None:
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith("application/problem+json")
    body = r.json()
    assert body["status"] == status and needle in body["detail"], body


@pytest.mark.slow
def test_pull_through_the_node_api_and_cli(tmp_path: Path, archive: Archive) -> None:
    with start_node(
        tmp_path / "n",
        node={"ae_title": "AINODE", "dicom_port": archive.node_port},
        sources=_sources(archive),
    ) as node:
        api = httpx.Client(base_url=node.url, timeout=30)
        uid = archive.study_uid
        _problem(api.post("/api/pull", json={"source": "nope", "study_uid": uid}), 404, "nope")
        _problem(api.post("/api/pull", json={"source": "move"}), 422, "study_uid")
        both = {"source": "move", "study_uid": uid, "patient_id": "x"}
        _problem(api.post("/api/pull", json=both), 422, "not both")
        _problem(api.post("/api/pull", json={"source": "move", "study": uid}), 422, "study")
        _problem(api.get("/api/pulls/0123456789abcdef"), 404, "0123456789abcdef")
        # C-MOVE by study UID, run by the node into its own SCP
        r = api.post("/api/pull", json={"source": "move", "study_uid": uid})
        assert r.status_code == 202 and r.json()["state"] in ("queued", "running")
        location = r.headers["location"]
        assert location == f"/api/pulls/{r.json()['id']}"

        def finished() -> bool:
            return api.get(location).json()["state"] not in ("queued", "running")

        wait_until(finished, timeout=120, what="pull finished")
        rec = api.get(location).json()
        assert rec["state"] == "succeeded", rec
        assert rec["received"] == rec["expected"] == 30 and rec["failed"] == 0
        assert rec["studies"] == [uid] and rec["completed"] == [uid]
        assert rec["started_at"] <= rec["finished_at"] and rec["finished_at"].endswith("+00:00")
        got, row = _stored(node.data_dir, uid)
        assert row is not None and row["state"] == "complete"
        check_equal(got, archive.stored, exact=False)
        # the CLI hands a query pull (WADO-RS) to the node and follows it
        ds = pydicom.dcmread(archive.files[0], stop_before_pixels=True)
        d = f"{ds.StudyDate[:4]}-{ds.StudyDate[4:6]}-{ds.StudyDate[6:]}"
        out = _pull(node.config_path, "--via-node", "--from", "web", "--patient-id",
                    str(ds.PatientID), "--from-date", d, "--to-date", d)  # fmt: skip
        assert out["state"] == "succeeded" and out["studies"] == [uid]
        assert out["received"] == 30 and out["pull_id"] != rec["id"]
        got, _ = _stored(node.data_dir, uid)
        check_equal(got, archive.stored, exact=True)  # one copy each, Orthanc's bytes
        listed = api.get("/api/pulls").json()["pulls"]
        assert [p["id"] for p in listed] == [out["pull_id"], rec["id"]]
        api.close()


def test_via_node_without_a_node_says_so(tmp_path: Path, archive: Archive) -> None:
    cfg = write_config(tmp_path / "n", sources=_sources(archive))
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    out = subprocess.run(
        [sys.executable, "-m", "node", "pull", "--config", str(cfg), "--via-node",
         "--from", "web", "--study", archive.study_uid],
        env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert out.returncode != 0
    assert "no node answers" in out.stderr and "--local" in out.stderr
