"""Hostile input through a real ``ainode serve``: C-STORE (storescu, pynetdicom) and STOW-RS.

Every file of the corpus' ``malformed/`` folder and every generated case of ``hostile.py`` is
sent.  Each one is either refused with a precise DICOM status and comment (problem JSON or
FailedSOPSequence for STOW) and quarantined with a JSON reason, or stored cleanly and refused
later with a clear error (imaging names the limit instead of allocating).  The node stays up and
what it held before is untouched.
"""

from __future__ import annotations

import hashlib
import io
import json
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pydicom
import pytest
from pydicom.dataset import FileMetaDataset
from pydicom.filereader import read_file_meta_info
from pynetdicom import AE, _config

from node.errors import ImagingError
from node.imaging import load_volume
from node.store.index import Index
from tests.ingest.synthetic import write_ct_series
from tests.peers.dcmtk import echoscu, storescu
from tests.peers.node import NodeProcess, start_node
from tests.security import hostile

STOW_LIMIT = 150 * 1024 * 1024
FAILED_SEQ, REFERENCED_SEQ, FAILURE_REASON = "00081198", "00081199", "00081197"


@dataclass
class Baseline:
    """What the node held before the hostile traffic: SOP UID -> sha256 of the stored file."""

    digests: dict[str, str]


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NodeProcess]:
    with start_node(
        tmp_path_factory.mktemp("hostile"), node={"stow_max_bytes": STOW_LIMIT}
    ) as peer:
        yield peer


@pytest.fixture(scope="module")
def baseline(node: NodeProcess, tmp_path_factory: pytest.TempPathFactory) -> Baseline:
    files = write_ct_series(tmp_path_factory.mktemp("good"), 3, size=32)
    run = storescu(node.dicom_port, files)
    assert run.acknowledged == files, run.output
    return Baseline(_digests(node))


def _digests(node: NodeProcess, sop_uids: list[str] | None = None) -> dict[str, str]:
    """sha256 of each stored file (of every instance when ``sop_uids`` is None)."""
    index = Index(node.data_dir / "index.sqlite")
    try:
        if sop_uids is None:
            sop_uids = [
                inst.sop_uid
                for study in index.list_studies()
                for inst in index.study_instances(study["study_uid"])
            ]
        out = {}
        for sop_uid in sop_uids:
            inst = index.get_instance(sop_uid)
            if inst is not None and inst.path.is_file():
                out[sop_uid] = hashlib.sha256(inst.path.read_bytes()).hexdigest()
        return out
    finally:
        index.close()


def _quarantined(node: NodeProcess) -> dict[Path, dict[str, object]]:
    return {p: json.loads(p.read_text()) for p in (node.data_dir / "quarantine").glob("*.json")}


def _send_raw(node: NodeProcess, path: Path) -> tuple[int, str]:
    """C-STORE ``path`` byte for byte with pynetdicom (the data set is not parsed or fixed)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # pydicom warns about the hostile UIDs it reads
        meta = read_file_meta_info(path)
    ae = AE(ae_title="HOSTILE")
    ae.add_requested_context(str(meta.MediaStorageSOPClassUID), str(meta.TransferSyntaxUID))
    _config.STORE_SEND_CHUNKED_DATASET = True
    try:
        assoc = ae.associate("127.0.0.1", node.dicom_port, ae_title="AINODE")
        assert assoc.is_established
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                rsp = assoc.send_c_store(path)
        finally:
            assoc.release()
    finally:
        _config.STORE_SEND_CHUNKED_DATASET = False
    return int(rsp.Status), str(rsp.get("ErrorComment", ""))


def _stow(node: NodeProcess, parts: list[bytes]) -> httpx.Response:
    from tests.api.conftest import multipart

    body, headers = multipart(parts)
    return httpx.post(f"{node.url}/dicom-web/studies", content=body, headers=headers, timeout=120)


def _assert_alive(node: NodeProcess, baseline: Baseline) -> None:
    assert node.proc is not None and node.proc.poll() is None, node.log_text()[-3000:]
    assert echoscu(node.dicom_port).returncode == 0
    assert httpx.get(f"{node.url}/api/health", timeout=60).json()["status"] == "ok"
    now = _digests(node, list(baseline.digests))
    for sop_uid, digest in baseline.digests.items():
        assert now.get(sop_uid) == digest, f"previously stored {sop_uid} changed or vanished"


def _stored_path(node: NodeProcess, data: bytes) -> Path | None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        sop_uid = str(pydicom.dcmread(io.BytesIO(data), stop_before_pixels=True).SOPInstanceUID)
    index = Index(node.data_dir / "index.sqlite")
    try:
        inst = index.get_instance(sop_uid)
    finally:
        index.close()
    return None if inst is None else inst.path


CASES = hostile.cases()


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_hostile_case_over_dimse(
    node: NodeProcess, baseline: Baseline, tmp_path: Path, case: hostile.HostileCase
) -> None:
    data = case.build()
    path = tmp_path / f"{case.name}.dcm"
    path.write_bytes(data)
    before = _quarantined(node)
    status, comment = _send_raw(node, path)
    new = {p: r for p, r in _quarantined(node).items() if p not in before}
    if case.status is None:
        assert status == 0x0000, (status, comment)
        assert new == {}
        stored = _stored_path(node, data)
        assert stored is not None and stored.read_bytes()[132:] != b""
        if case.name.startswith(("huge", "short", "wrong-vr", "zero-length")):
            with pytest.raises(ImagingError) as err:
                load_volume([stored])
            if case.name.startswith("huge"):
                assert "refusing to allocate" in str(err.value)
                # the console's series preview goes through the same check
                series_uid = stored.parent.name
                thumb = httpx.get(
                    f"{node.url}/console/series/{series_uid}/thumbnail.png", timeout=60
                )
                assert thumb.status_code == 404
                assert "refusing to allocate" in thumb.json()["detail"]
    else:
        assert status == case.status, (hex(status), comment)
        assert case.reason.lower() in comment.lower(), comment
        assert len(new) == 1, new
        reason = next(iter(new.values()))
        assert reason["dicom_status"] == f"0x{case.status:04X}"
        assert case.reason.lower() in str(reason["reason"]).lower()
        assert reason["calling_aet"] == "HOSTILE"
        assert next(iter(new)).with_suffix(".dcm").is_file()
    _assert_alive(node, baseline)


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_hostile_case_over_stow(
    node: NodeProcess, baseline: Baseline, case: hostile.HostileCase
) -> None:
    data = case.build()
    before = _quarantined(node)
    resp = _stow(node, [data])
    new = {p: r for p, r in _quarantined(node).items() if p not in before}
    body = resp.json()
    if case.status is None:
        assert resp.status_code == 200, resp.text
        assert len(body[REFERENCED_SEQ]["Value"]) == 1
        assert new == {}
    else:
        assert resp.status_code == 409, resp.text
        failed = body[FAILED_SEQ]["Value"]
        assert [f[FAILURE_REASON]["Value"][0] for f in failed] == [case.status]
        assert len(new) == 1
        reason = next(iter(new.values()))
        assert reason["sha256"] == hashlib.sha256(data).hexdigest()
        assert reason["source"] == "stow"
        assert case.reason.lower() in str(reason["reason"]).lower()
    _assert_alive(node, baseline)


def test_storescu_sends_what_it_can(
    node: NodeProcess, baseline: Baseline, tmp_path: Path, corpus: Path
) -> None:
    """dcmtk re-encodes what it reads: every file it sends gets Success or a refusal with a
    reason, every refusal is quarantined; files storescu cannot read itself never reach us."""
    files = sorted((corpus / "malformed").glob("*.dcm"))
    for case in CASES:
        path = tmp_path / f"{case.name}.dcm"
        path.write_bytes(case.build())
        files.append(path)
    before = _quarantined(node)
    run = storescu(node.dicom_port, files, calling="STORESCU")
    new = {p: r for p, r in _quarantined(node).items() if p not in before}
    assert run.acknowledged or run.failed, run.output
    assert len(new) == len(run.failed), run.output
    for reason in new.values():
        assert reason["calling_aet"] == "STORESCU" and reason["reason"]
    _assert_alive(node, baseline)


#: corpus malformed/ files: what a PS3.10-byte-exact sender must get back.
MALFORMED = {
    "ExplVR_BigEndNoMeta.dcm": 0xC000,  # no file meta: not a PS3.10 file
    "Issue195.dcm": 0xA900,  # no SOP Class / Instance UID
    "MR_truncated.dcm": 0xC000,
    "UnknownSopClassUid.dcm": 0x0000,  # a private SOP class is still storage
    "badVR.dcm": 0x0000,  # stored as received; imaging reports the bad value later
    "empty_charset_LEI.dcm": 0xA900,  # a data set fragment: no UIDs at all
    "meta_missing_tsyntax.dcm": 0xC000,
    "no-pixel-data.dcm": 0x0000,
    "no_meta.dcm": 0xC000,
    "rtplan_truncated.dcm": 0xC000,
}


def test_every_corpus_malformed_file_over_stow(
    node: NodeProcess, baseline: Baseline, corpus: Path
) -> None:
    files = sorted((corpus / "malformed").glob("*.dcm"))
    assert sorted(f.name for f in files) == sorted(MALFORMED)
    for f in files:
        before = _quarantined(node)
        resp = _stow(node, [f.read_bytes()])
        new = {p: r for p, r in _quarantined(node).items() if p not in before}
        if MALFORMED[f.name] == 0:
            assert resp.status_code == 200, (f.name, resp.text)
            assert new == {}
        else:
            assert resp.status_code == 409, (f.name, resp.text)
            reasons = [x[FAILURE_REASON]["Value"][0] for x in resp.json()[FAILED_SEQ]["Value"]]
            assert reasons == [MALFORMED[f.name]], f.name
            assert len(new) == 1 and next(iter(new.values()))["reason"], f.name
    _assert_alive(node, baseline)


def test_every_corpus_malformed_file_over_dimse(
    node: NodeProcess, baseline: Baseline, corpus: Path, tmp_path: Path
) -> None:
    """Byte-exact C-STORE of every file whose file meta names a SOP class and transfer syntax."""
    sent = 0
    for f in sorted((corpus / "malformed").glob("*.dcm")):
        raw = f.read_bytes()
        meta = read_file_meta_info(f) if raw[128:132] == b"DICM" else FileMetaDataset()
        if "TransferSyntaxUID" not in meta or "MediaStorageSOPClassUID" not in meta:
            continue  # nothing a C-STORE could carry as-is: no context to propose
        before = _quarantined(node)
        status, comment = _send_raw(node, f)
        new = {p: r for p, r in _quarantined(node).items() if p not in before}
        assert status == MALFORMED[f.name], (f.name, hex(status), comment)
        assert (len(new) == 1) == (status != 0), f.name
        if status:
            assert comment, f.name
        sent += 1
    assert sent >= 6
    _assert_alive(node, baseline)


def test_bad_affected_sop_instance_uid_in_the_command(
    node: NodeProcess, baseline: Baseline, tmp_path: Path
) -> None:
    """The C-STORE command's Affected SOP Instance UID is a path, the data set's is valid."""
    ds = hostile.base_dataset()
    data = hostile.encode(ds)
    bad = hostile.with_meta(data[hostile_offset(data) :], sop_uid="../../../etc/passwd")
    path = tmp_path / "bad-affected.dcm"
    path.write_bytes(bad)
    status, comment = _send_raw(node, path)
    # the data set decides where it is stored; the command's UID is never a path
    assert status == 0x0000, (hex(status), comment)
    stored = _stored_path(node, data)
    assert stored is not None
    assert stored.resolve().is_relative_to((node.data_dir / "studies").resolve())
    assert not list(node.data_dir.parent.rglob("passwd"))
    _assert_alive(node, baseline)


def hostile_offset(data: bytes) -> int:
    from node.ingest.header import dataset_offset

    return dataset_offset(data)


@pytest.mark.slow
def test_giant_private_element_within_and_over_the_limit(
    node: NodeProcess, baseline: Baseline, tmp_path: Path
) -> None:
    """100 MB private element stored over STOW (24 MB over C-STORE); 160 MB: 413 problem JSON."""
    within = hostile.giant_private_element(100 * 1024 * 1024)
    resp = _stow(node, [within])
    assert resp.status_code == 200, resp.text[:500]
    stored = _stored_path(node, within)
    assert stored is not None and stored.stat().st_size == len(within)
    del within
    path = tmp_path / "giant.dcm"  # C-STORE has no size limit but the disk (0xA700)
    path.write_bytes(hostile.giant_private_element(24 * 1024 * 1024))
    status, comment = _send_raw(node, path)
    assert status == 0x0000, comment
    over = hostile.giant_private_element(160 * 1024 * 1024)
    resp = _stow(node, [over])  # Content-Length declared: refused before the body is read
    assert resp.status_code == 413
    assert resp.headers["content-type"].startswith("application/problem+json")
    assert "stow_max_bytes" in resp.json()["detail"]

    from tests.api.conftest import multipart

    body, headers = multipart([over])
    del over

    def chunks() -> Iterator[bytes]:
        for i in range(0, len(body), 1 << 20):
            yield body[i : i + (1 << 20)]

    try:
        resp = httpx.post(
            f"{node.url}/dicom-web/studies", content=chunks(), headers=headers, timeout=120
        )
        assert resp.status_code == 413  # no Content-Length: cut off while streaming
        assert "stow_max_bytes" in resp.json()["detail"]
    except (httpx.RemoteProtocolError, httpx.WriteError):
        # the server may close the connection once it has answered 413 mid-upload
        assert '"event": "stow.too_large"' in node.log_text()
    _assert_alive(node, baseline)


def test_stow_part_with_unknown_vr_uid_and_a_refusal(node: NodeProcess, baseline: Baseline) -> None:
    """Found by bench/fuzz.py: a refused part whose SOP Instance UID has an unknown VR made the
    STOW handler's UID look-up raise (500); it must be an ordinary 409 with FailedSOPSequence."""
    data = bytearray(hostile.encode(hostile.base_dataset()))
    i = data.index(b"\x08\x00\x18\x00UI")
    data[i + 4 : i + 6] = b"TH"  # SOP Instance UID with a VR that does not exist
    j = data.index(b"\x20\x00\x0d\x00UI")
    data[j + 6 : j + 8] = (0).to_bytes(2, "little")  # and an empty Study Instance UID
    resp = _stow(node, [bytes(data[: j + 8] + data[j + 8 + 64 :])])
    assert resp.status_code == 409, resp.text
    assert resp.json()[FAILED_SEQ]["Value"][0][FAILURE_REASON]["Value"] == [0xA900]
    _assert_alive(node, baseline)
