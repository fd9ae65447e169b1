"""STOW-RS over real HTTP (uvicorn) into the real spool and index: httpx and dicomweb-client."""

from __future__ import annotations

import hashlib
import io
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pydicom
import pytest
import requests
from dicomweb_client import DICOMwebClient
from pydicom.uid import generate_uid

from node.samples import write_ct_series
from tests.api.conftest import BOUNDARY, STOW_LIMIT, RunningNode, multipart
from tests.util import wait_until

FAILED_SEQ, REFERENCED_SEQ, FAILURE_REASON = "00081198", "00081199", "00081197"
RETRIEVE_URL, SOP_UID = "00081190", "00081155"


@pytest.fixture(scope="module")
def ct_files(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """Six small synthetic CT slices of one study."""
    hu = np.random.default_rng(1).normal(0, 100, size=(6, 32, 32))
    return write_ct_series(hu, spacing=(2, 1, 1), out_dir=tmp_path_factory.mktemp("ct"))


def _sop(path: Path) -> str:
    return str(pydicom.dcmread(path, stop_before_pixels=True).SOPInstanceUID)


def _study(path: Path) -> str:
    return str(pydicom.dcmread(path, stop_before_pixels=True).StudyInstanceUID)


def _values(body: dict[str, Any], tag: str) -> list[Any]:
    return list(body.get(tag, {}).get("Value", []))


def _missing_sop_uid(path: Path) -> bytes:
    ds = pydicom.dcmread(path)
    del ds.SOPInstanceUID
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=False)
    return buf.getvalue()


def test_good_batch_is_stored_byte_identical(running: RunningNode, corpus: Path) -> None:
    files = sorted((corpus / "ct" / "chest-ct-siemens-sensation10-b40f-30sl").glob("*.dcm"))[:5]
    body, headers = multipart([p.read_bytes() for p in files])
    resp = running.http.post("/dicom-web/studies", content=body, headers=headers)
    assert resp.status_code == 200, resp.text
    assert resp.headers["content-type"] == "application/dicom+json"
    out = resp.json()
    assert FAILED_SEQ not in out
    refs = _values(out, REFERENCED_SEQ)
    assert [r[SOP_UID]["Value"][0] for r in refs] == [_sop(p) for p in files]
    study = _study(files[0])
    assert _values(out, RETRIEVE_URL) == [f"{running.url}/dicom-web/studies/{study}"]
    for ref, path in zip(refs, files, strict=True):
        assert ref[RETRIEVE_URL]["Value"][0].endswith(f"/instances/{_sop(path)}")
        stored = running.node.index.get_instance(_sop(path))
        assert stored is not None
        assert stored.path.read_bytes() == path.read_bytes()
        assert stored.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
    listed = running.http.get("/api/studies").json()["studies"]
    assert [(s["study_uid"], s["instance_count"]) for s in listed] == [(study, 5)]


def test_mixed_batch_is_202_with_failure_reasons(
    running: RunningNode, ct_files: list[Path]
) -> None:
    good = [ct_files[0].read_bytes(), ct_files[1].read_bytes()]
    garbage = b"\0" * 128 + b"DICM" + b"not really a dicom file" * 10
    no_sop = _missing_sop_uid(ct_files[2])
    body, headers = multipart([good[0], garbage, no_sop, good[1]])
    resp = running.http.post("/dicom-web/studies", content=body, headers=headers)
    assert resp.status_code == 202, resp.text
    out = resp.json()
    assert len(_values(out, REFERENCED_SEQ)) == 2
    reasons = sorted(f[FAILURE_REASON]["Value"][0] for f in _values(out, FAILED_SEQ))
    assert reasons == [0xA900, 0xC000]
    assert running.node.index.get_instance(_sop(ct_files[0])) is not None
    quarantined = list((running.node.config.node.data_dir / "quarantine").rglob("*.json"))
    assert len(quarantined) == 2  # both bad parts kept with their reason, as C-STORE does


def test_all_bad_is_409(running: RunningNode, ct_files: list[Path]) -> None:
    body, headers = multipart([b"junk", _missing_sop_uid(ct_files[3])])
    resp = running.http.post("/dicom-web/studies", content=body, headers=headers)
    assert resp.status_code == 409, resp.text
    assert resp.headers["content-type"] == "application/dicom+json"
    out = resp.json()
    assert REFERENCED_SEQ not in out
    assert len(_values(out, FAILED_SEQ)) == 2
    assert running.http.get("/api/studies").json()["studies"] == []


def test_instances_of_another_study_are_refused(running: RunningNode, ct_files: list[Path]) -> None:
    other = write_ct_series(
        np.zeros((1, 8, 8)), spacing=(1, 1, 1), out_dir=ct_files[0].parent.parent / "other"
    )[0]
    study = _study(ct_files[0])
    body, headers = multipart([ct_files[4].read_bytes(), other.read_bytes()])
    resp = running.http.post(f"/dicom-web/studies/{study}", content=body, headers=headers)
    assert resp.status_code == 202, resp.text
    out = resp.json()
    failed = _values(out, FAILED_SEQ)
    assert [(f[SOP_UID]["Value"][0], f[FAILURE_REASON]["Value"][0]) for f in failed] == [
        (_sop(other), 0xA901)
    ]
    assert running.node.index.get_instance(_sop(other)) is None
    assert _values(out, RETRIEVE_URL) == [f"{running.url}/dicom-web/studies/{study}"]


def test_part_of_another_media_type_fails(running: RunningNode, ct_files: list[Path]) -> None:
    body, headers = multipart([ct_files[0].read_bytes()], part_type="image/jpeg")
    resp = running.http.post("/dicom-web/studies", content=body, headers=headers)
    assert resp.status_code == 409
    assert _values(resp.json(), FAILED_SEQ)[0][FAILURE_REASON]["Value"] == [0xC000]


@pytest.mark.parametrize(
    "content_type",
    [
        "application/dicom",
        "application/json",
        'multipart/related; type="application/dicom+json"; boundary=x',
        "multipart/form-data; boundary=x",
    ],
)
def test_wrong_media_type_is_415(running: RunningNode, content_type: str) -> None:
    resp = running.http.post(
        "/dicom-web/studies", content=b"--x\r\n\r\n--x--", headers={"Content-Type": content_type}
    )
    assert resp.status_code == 415
    assert resp.headers["content-type"] == "application/problem+json"
    assert resp.json()["status"] == 415


def test_declared_oversize_is_413(running: RunningNode) -> None:
    _, headers = multipart([])
    resp = running.http.post(
        "/dicom-web/studies",
        content=b"x" * (STOW_LIMIT + 1),
        headers=headers,
    )
    assert resp.status_code == 413
    assert "stow_max_bytes" in resp.json()["detail"]


def test_streamed_oversize_is_413_without_buffering(running: RunningNode, tmp_path: Path) -> None:
    """Chunked upload (no Content-Length): the node stops reading at the limit."""
    big = write_ct_series(np.zeros((1, 512, 512)), spacing=(1, 1, 1), out_dir=tmp_path)[0]
    one = big.read_bytes()
    parts = [one] * (STOW_LIMIT // len(one) + 2)
    body, headers = multipart(parts)
    assert len(body) > STOW_LIMIT

    def chunks() -> Iterator[bytes]:
        for i in range(0, len(body), 65536):
            yield body[i : i + 65536]

    resp = running.http.post("/dicom-web/studies", content=chunks(), headers=headers)
    assert resp.status_code == 413
    assert resp.headers["content-type"] == "application/problem+json"


def test_truncated_body_is_400(running: RunningNode, ct_files: list[Path]) -> None:
    body, headers = multipart([ct_files[0].read_bytes()])
    resp = running.http.post("/dicom-web/studies", content=body[:-20], headers=headers)
    assert resp.status_code == 400
    assert "closing boundary" in resp.json()["detail"]


def test_dicomweb_client_store_instances(running: RunningNode, ct_files: list[Path]) -> None:
    client = DICOMwebClient(url=f"{running.url}/dicom-web")
    datasets = [pydicom.dcmread(p) for p in ct_files]
    study = _study(ct_files[0])
    result = client.store_instances(datasets[:3])
    assert [str(r.ReferencedSOPInstanceUID) for r in result.ReferencedSOPSequence] == [
        _sop(p) for p in ct_files[:3]
    ]
    assert "FailedSOPSequence" not in result
    result = client.store_instances(datasets[3:], study_instance_uid=study)
    assert len(result.ReferencedSOPSequence) == 3
    detail = running.http.get(f"/api/studies/{study}").json()
    assert detail["instance_count"] == 6
    # the same bytes again: idempotent, no second copy
    client.store_instances(datasets[:1])
    assert running.http.get(f"/api/studies/{study}").json()["instance_count"] == 6


def test_dicomweb_client_sees_409_and_413(running: RunningNode, ct_files: list[Path]) -> None:
    client = DICOMwebClient(url=f"{running.url}/dicom-web")
    other_study = pydicom.dcmread(ct_files[0])
    with pytest.raises(requests.HTTPError) as exc:
        client.store_instances([other_study], study_instance_uid=generate_uid())
    response = exc.value.response
    assert response is not None and response.status_code == 409
    failed = response.json()[FAILED_SEQ]["Value"]
    assert failed[0][FAILURE_REASON]["Value"] == [0xA901]
    big = pydicom.dcmread(ct_files[0])
    big.Rows = big.Columns = 1024
    big.NumberOfFrames = 2
    big.PixelData = b"\0" * (1024 * 1024 * 2 * 2 + 65536)  # just over the limit; sent chunked
    with pytest.raises(requests.HTTPError) as exc2:
        client.store_instances([big])
    assert exc2.value.response is not None and exc2.value.response.status_code == 413
    assert running.node.index.get_instance(str(big.SOPInstanceUID)) is None


def test_parallel_requests_all_stored(running: RunningNode, tmp_path: Path) -> None:
    """Four clients at once (the spool group-commits across them); nothing lost."""
    from concurrent.futures import ThreadPoolExecutor

    batches = [
        write_ct_series(np.zeros((5, 16, 16)), spacing=(1, 1, 1), out_dir=tmp_path / str(i))
        for i in range(4)
    ]

    def post(files: list[Path]) -> int:
        body, headers = multipart([p.read_bytes() for p in files])
        with httpx.Client(base_url=running.url, timeout=60) as client:
            return client.post("/dicom-web/studies", content=body, headers=headers).status_code

    with ThreadPoolExecutor(4) as pool:
        assert list(pool.map(post, batches)) == [200] * 4
    rows = running.http.get("/api/studies").json()["studies"]
    assert sorted(r["instance_count"] for r in rows) == [5, 5, 5, 5]


def test_part_media_type_parameters_are_accepted(
    running: RunningNode, ct_files: list[Path]
) -> None:
    body, headers = multipart(
        [ct_files[5].read_bytes()],
        part_type="application/dicom; transfer-syntax=1.2.840.10008.1.2.1",
    )
    resp = running.http.post("/dicom-web/studies", content=body, headers=headers)
    assert resp.status_code == 200, resp.text


@pytest.mark.parametrize(
    ("accept", "status"),
    [
        ("application/dicom+xml", 406),
        ("application/dicom+json;q=0, application/dicom+xml", 406),
        ("application/dicom+xml;q=0.9, application/dicom+json", 200),
        ("*/*", 200),
    ],
)
def test_accept_header_is_honoured(
    running: RunningNode, ct_files: list[Path], accept: str, status: int
) -> None:
    body, headers = multipart([ct_files[0].read_bytes()])
    resp = running.http.post(
        "/dicom-web/studies", content=body, headers={**headers, "Accept": accept}
    )
    assert resp.status_code == status, resp.text


def test_client_gone_mid_upload_keeps_complete_parts(
    running: RunningNode, ct_files: list[Path]
) -> None:
    """A client that disconnects mid-body: parts it finished are stored, the node stays up."""
    import socket

    body, headers = multipart([p.read_bytes() for p in ct_files[:3]])
    third = body.index(b"--" + BOUNDARY.encode(), len(ct_files[0].read_bytes()) * 2)
    cut = third + 300  # inside the third part
    port = int(running.url.rsplit(":", 1)[1])
    head = (
        "POST /dicom-web/studies HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        f"Content-Type: {headers['Content-Type']}\r\nContent-Length: {len(body)}\r\n\r\n"
    ).encode()
    with socket.create_connection(("127.0.0.1", port)) as sock:
        sock.sendall(head + body[:cut])

        def two_stored() -> bool:
            rows = running.http.get("/api/studies").json()["studies"]
            return bool(rows) and rows[0]["instance_count"] == 2

        wait_until(two_stored, timeout=10, what="the two complete parts stored")
    assert running.node.index.get_instance(_sop(ct_files[2])) is None
    assert running.http.get("/api/health").json()["status"] == "ok"


def test_quota_full_fails_parts_with_a700(tmp_path: Path, ct_files: list[Path]) -> None:
    """Over the configured quota the spool refuses (0xA700) and nothing is half-written."""
    from tests.api.conftest import start_node

    one = ct_files[0].stat().st_size
    node = start_node(tmp_path / "data", quota_bytes=int(one * 2.5))
    try:
        body, headers = multipart([p.read_bytes() for p in ct_files[:4]])
        resp = httpx.post(
            f"http://127.0.0.1:{node.http_port}/dicom-web/studies",
            content=body,
            headers=headers,
            timeout=60,  # httpx's default 5 s is not enough on a loaded CI box (it timed out once)
        )
        assert resp.status_code == 202, resp.text
        out = resp.json()
        stored = {r[SOP_UID]["Value"][0] for r in _values(out, REFERENCED_SEQ)}
        failed = _values(out, FAILED_SEQ)
        assert [f[FAILURE_REASON]["Value"][0] for f in failed] == [0xA700, 0xA700]
        # parts are stored concurrently: which two fit is not fixed, but they partition the set
        refused = {f[SOP_UID]["Value"][0] for f in failed}
        assert len(stored) == 2 and stored | refused == {_sop(p) for p in ct_files[:4]}
        for sop_uid in refused:
            assert node.index.get_instance(sop_uid) is None
        assert not list((tmp_path / "data" / "tmp").iterdir())
    finally:
        node.stop()


def test_hostile_multipart_framing_is_a_400(running: RunningNode, ct_files: list[Path]) -> None:
    long_boundary = "b" * 300
    body, headers = multipart([ct_files[0].read_bytes()], boundary=long_boundary)
    resp = running.http.post("/dicom-web/studies", content=body, headers=headers)
    assert resp.status_code == 400 and "boundary" in resp.json()["detail"]
    part_headers = "".join(f"X-Filler-{i}: {i}\r\n" for i in range(50))
    body = (
        f"--{BOUNDARY}\r\n{part_headers}Content-Type: application/dicom\r\n\r\n".encode()
        + ct_files[0].read_bytes()
        + f"\r\n--{BOUNDARY}--\r\n".encode()
    )
    _, headers = multipart([])
    resp = running.http.post("/dicom-web/studies", content=body, headers=headers)
    assert resp.status_code == 400
    assert resp.headers["content-type"] == "application/problem+json"
    assert running.http.get("/api/studies").json()["studies"] == []
