"""``ainode serve`` + ``send``/``echo``/``studies`` as a user runs them (real subprocesses)."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pydicom

from node.ingest.header import dataset_offset
from node.store.index import Index
from tests.peers.node import ROOT, start_node


def ainode(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    return subprocess.run(
        [sys.executable, "-m", "node", *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=cwd,
        timeout=120,
        check=False,
    )


def test_send_echo_studies_and_complete(tmp_path: Path, corpus: Path) -> None:
    ct = sorted((corpus / "ct/chest-ct-siemens-sensation10-b40f-30sl").glob("*.dcm"))
    bad = [corpus / "malformed/MR_truncated.dcm", corpus / "malformed/no_meta.dcm"]
    # completion only when forced: on a loaded machine the CLI calls below outlast a 30 s window
    with start_node(tmp_path / "n", study={"stable_seconds": 3600}) as node:
        cfg = str(node.config_path)
        r = ainode("echo", f"127.0.0.1:{node.dicom_port}:AINODE")
        assert r.returncode == 0 and "success" in r.stdout, r.stderr

        r = ainode(
            "send", "--to", f"127.0.0.1:{node.dicom_port}:AINODE", *map(str, ct), *map(str, bad)
        )
        assert r.returncode == 2, r.stdout + r.stderr
        assert f"sent {len(ct)} of {len(ct) + 2} file(s)" in r.stdout
        failed = [line for line in r.stderr.splitlines() if line.startswith("FAILED")]
        assert len(failed) == 2
        assert any("MR_truncated" in f and "0xC000" in f for f in failed)
        assert any("no_meta" in f and "not a DICOM file" in f for f in failed)

        # `send` streams files unchanged: stored data sets equal the source files' byte for byte
        index = Index(node.data_dir / "index.sqlite")
        try:
            for f in ct:
                src = f.read_bytes()
                inst = index.get_instance(
                    str(pydicom.dcmread(f, stop_before_pixels=True).SOPInstanceUID)
                )
                assert inst is not None
                got = inst.path.read_bytes()
                assert (
                    hashlib.sha256(got[dataset_offset(got) :]).digest()
                    == hashlib.sha256(src[dataset_offset(src) :]).digest()
                )
        finally:
            index.close()

        r = ainode("studies", "list", "--config", cfg, "--json")
        assert r.returncode == 0, r.stderr
        (study,) = json.loads(r.stdout)
        uid = study["study_uid"]
        assert study["instance_count"] == len(ct) and study["state"] == "open"
        r = ainode("studies", "list", "--config", cfg)
        assert uid in r.stdout

        r = ainode("studies", "show", uid, "--config", cfg, "--json")
        shown = json.loads(r.stdout)
        assert shown["series"][0]["modality"] == "CT" and shown["series"][0]["instance_count"] == 30
        r = ainode("studies", "show", "1.2.3.4", "--config", cfg)
        assert r.returncode == 2 and "not known" in r.stderr

        r = ainode("studies", "complete", uid, "--config", cfg, "--json")
        assert r.returncode == 0, r.stderr
        assert json.loads(r.stdout) == {
            "study_uid": uid,
            "changed": True,
            "generation": 1,
            "via": "node",
        }
        r = ainode("studies", "complete", uid, "--config", cfg, "--json")
        assert json.loads(r.stdout)["changed"] is False

    # node stopped: `complete` works directly on the index; a late instance re-opened it first
    index = Index(node.data_dir / "index.sqlite")
    try:
        from node.ingest.spool import Spool

        spool = Spool(node.data_dir, index)
        changed = pydicom.dcmread(ct[0])
        changed.SeriesDescription = "late"
        out = tmp_path / "late.dcm"
        changed.save_as(out, enforce_file_format=True)
        spool.store(out.read_bytes(), calling_aet=None, source="test")
        spool.stop()
    finally:
        index.close()
    r = ainode("studies", "complete", uid, "--config", cfg, "--json")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout) == {
        "study_uid": uid,
        "changed": True,
        "generation": 2,
        "via": "index",
    }


def test_echo_and_send_report_unreachable_peer(tmp_path: Path) -> None:
    from tests.util import free_port

    port = free_port()
    r = ainode("echo", f"127.0.0.1:{port}", "--timeout", "2")
    assert r.returncode == 2 and "no association" in r.stderr
    r = ainode("send", "--to", "127.0.0.1", str(tmp_path))
    assert r.returncode != 0 and "HOST:PORT" in r.stderr
