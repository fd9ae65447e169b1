from __future__ import annotations

from pathlib import Path

import httpx

from tests.peers.orthanc import OrthancPeer


def test_orthanc_fixture_serves_rest_and_dicomweb(orthanc: OrthancPeer, corpus: Path) -> None:
    src = corpus / "ct" / "single-slices"
    first = sorted(src.glob("*.dcm"))[0]
    r = httpx.post(f"{orthanc.url}/instances", content=first.read_bytes(), timeout=30)
    assert r.status_code == 200, r.text
    assert len(orthanc.instances()) == 1
    studies = httpx.get(f"{orthanc.dicomweb_url}/studies", timeout=30)
    assert studies.status_code == 200
    assert len(studies.json()) == 1
