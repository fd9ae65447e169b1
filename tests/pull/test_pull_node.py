"""``ainode pull`` end to end: a real Orthanc archive, a real ``ainode serve`` (C-MOVE destination,
study assembly), and the CLI storing C-GET / WADO-RS instances through the ingest spool."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pydicom

from node.store.index import Index
from tests.peers.node import start_node, write_config
from tests.pull.conftest import Archive, Received, check_equal

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
        out = _pull(node.config_path, "--from", "move", "--study", archive.study_uid)
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
