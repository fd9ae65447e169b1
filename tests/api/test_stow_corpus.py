"""STOW-RS of the real-DICOM corpus: every kind stored byte-identical, hostile files refused."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pydicom

from tests.api.conftest import STOW_LIMIT, RunningNode, multipart
from tests.peers.node import start_node

FAILED_SEQ, REFERENCED_SEQ, SOP_UID = "00081198", "00081199", "00081155"


def _values(body: dict[str, Any], tag: str) -> list[Any]:
    return list(body.get(tag, {}).get("Value", []))


def _batches(files: list[Path], max_bytes: int) -> list[list[Path]]:
    out: list[list[Path]] = [[]]
    size = 0
    for path in files:
        n = path.stat().st_size + 200
        if out[-1] and size + n > max_bytes:
            out.append([])
            size = 0
        out[-1].append(path)
        size += n
    return out


def test_every_modality_and_enhanced_multiframe(running: RunningNode, corpus: Path) -> None:
    folders = (
        "ct/single-slices",
        "ct/abdomen-liver-ct-ge-lightspeed-3sl",
        "enhanced",
        "mr",
        "other-modalities",
    )
    every = sorted(p for folder in folders for p in (corpus / folder).rglob("*.dcm"))
    # an application/dicom part is a PS3.10 file; data sets without file meta are refused
    files = [p for p in every if p.read_bytes()[128:132] == b"DICM"]
    no_meta = [p for p in every if p not in files]
    assert len(files) >= 25 and len(no_meta) <= 2
    refs: list[Any] = []
    for batch in _batches(files, STOW_LIMIT):
        body, headers = multipart([p.read_bytes() for p in batch])
        resp = running.http.post("/dicom-web/studies", content=body, headers=headers)
        assert resp.status_code == 200, resp.text
        refs += _values(resp.json(), REFERENCED_SEQ)
    assert len(refs) == len(files)
    for path in no_meta:
        body, headers = multipart([path.read_bytes()])
        resp = running.http.post("/dicom-web/studies", content=body, headers=headers)
        assert resp.status_code == 409
        assert _values(resp.json(), FAILED_SEQ)[0]["00081197"]["Value"] == [0xC000]
    for path in files:
        sop_uid = str(pydicom.dcmread(path, stop_before_pixels=True).SOPInstanceUID)
        stored = running.node.index.get_instance(sop_uid)
        assert stored is not None, path
        assert stored.path.read_bytes() == path.read_bytes(), path


def test_every_transfer_syntax_of_one_instance(running: RunningNode, corpus: Path) -> None:
    """Fifteen encodings of the same SOP instance: each stored as sent (the newest is kept)."""
    files = sorted((corpus / "transfer-syntax").rglob("*.dcm"))
    assert len(files) >= 15
    for path in files:
        body, headers = multipart([path.read_bytes()])
        resp = running.http.post("/dicom-web/studies", content=body, headers=headers)
        assert resp.status_code == 200, (path.name, resp.text)
        sop_uid = _values(resp.json(), REFERENCED_SEQ)[0][SOP_UID]["Value"][0]
        stored = running.node.index.get_instance(sop_uid)
        assert stored is not None and stored.path.read_bytes() == path.read_bytes(), path.name


def test_malformed_corpus_is_refused_part_by_part(tmp_path: Path, corpus: Path) -> None:
    """Against the real ``serve`` (production pydicom settings): each part stored or refused."""
    files = sorted((corpus / "malformed").glob("*.dcm"))
    with start_node(tmp_path / "node") as node:
        body, headers = multipart([p.read_bytes() for p in files])
        resp = httpx.post(
            f"{node.url}/dicom-web/studies", content=body, headers=headers, timeout=60
        )
        assert resp.status_code in (202, 409), resp.text
        out = resp.json()
        stored, failed = _values(out, REFERENCED_SEQ), _values(out, FAILED_SEQ)
        assert len(stored) + len(failed) == len(files)  # every part accounted for
        assert len(failed) >= 5
        reasons = {f["00081197"]["Value"][0] for f in failed}
        assert reasons <= {0xC000, 0xA900}
        assert len(list((node.data_dir / "quarantine").rglob("*.json"))) == len(failed)
        listed = httpx.get(f"{node.url}/api/studies", timeout=60).json()["studies"]
        assert sum(r["instance_count"] for r in listed) == len(stored)
        assert httpx.get(f"{node.url}/api/health", timeout=60).json()["status"] == "ok"
