"""The C-STORE/C-ECHO SCP of a real ``ainode serve`` process, driven by dcmtk and pynetdicom."""

from __future__ import annotations

import hashlib
import io
import json
import subprocess
import zlib
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pydicom
import pytest
from pydicom.filereader import read_file_meta_info
from pydicom.uid import DeflatedExplicitVRLittleEndian

from node.ingest.header import dataset_offset
from node.store.index import Index
from tests.peers.dcmtk import echoscu, storescu, storescu_config
from tests.peers.node import NodeProcess, start_node

ALLOWED = ["STORESCU", "ECHOSCU", "PYNETDICOM"]


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NodeProcess]:
    with start_node(tmp_path_factory.mktemp("scp"), node={"allowed_calling_aets": ALLOWED}) as peer:
        yield peer


def _index(node: NodeProcess) -> Index:
    return Index(node.data_dir / "index.sqlite")


def _dataset_digest(data: bytes, tsuid: str) -> str:
    """SHA-256 of the data set after the file meta (inflated for the deflate syntax)."""
    body = data[dataset_offset(data) :]
    if tsuid == DeflatedExplicitVRLittleEndian:
        body = zlib.decompress(body, wbits=-zlib.MAX_WBITS)
    return hashlib.sha256(body).hexdigest()


def _wire_digest(src: Path, workdir: Path) -> str:
    """Digest of the data set storescu puts on the wire for ``src``.

    storescu re-encodes what it reads (explicit sequence lengths, recalculated group lengths);
    dcmtk's ``dcmconv +e +g=`` produces exactly that encoding, so the node must have stored it
    byte for byte.  (``ainode send`` streams files unchanged: tests/cli checks those bytes equal
    the source file's.)
    """
    out = workdir / f"wire-{src.name}"
    subprocess.run(["dcmconv", "+e", "+g=", str(src), str(out)], check=True, capture_output=True)
    tsuid = str(read_file_meta_info(src).TransferSyntaxUID)
    return _dataset_digest(out.read_bytes(), tsuid)


def _pairs(files: list[Path]) -> list[tuple[str, str]]:
    out = []
    for f in files:
        meta = read_file_meta_info(f)
        out.append((str(meta.MediaStorageSOPClassUID), str(meta.TransferSyntaxUID)))
    return out


def _assert_round_trip(node: NodeProcess, files: list[Path], workdir: Path) -> None:
    index = _index(node)
    try:
        for f in files:
            ds = pydicom.dcmread(f, stop_before_pixels=True)
            inst = index.get_instance(str(ds.SOPInstanceUID))
            assert inst is not None, f"{f.name} not indexed"
            tsuid = str(ds.file_meta.TransferSyntaxUID)
            assert inst.transfer_syntax_uid == tsuid
            stored = inst.path.read_bytes()
            assert hashlib.sha256(stored).hexdigest() == inst.sha256
            assert _dataset_digest(stored, tsuid) == _wire_digest(f, workdir), f
    finally:
        index.close()


def test_echo(node: NodeProcess) -> None:
    r = echoscu(node.dicom_port)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "Received Echo Response (Success)" in r.stdout + r.stderr


def test_every_transfer_syntax_round_trips_byte_identical(
    node: NodeProcess, corpus: Path, tmp_path: Path
) -> None:
    files = sorted((corpus / "transfer-syntax").rglob("*.dcm"))
    assert len(files) >= 15
    extra = storescu_config(tmp_path, _pairs(files))
    # the files share one SOP Instance UID: send one at a time and check each stored version
    for f in files:
        run = storescu(node.dicom_port, [f], extra=extra)
        assert run.acknowledged == [f], run.output
        _assert_round_trip(node, [f], tmp_path)


def test_ct_mr_and_enhanced_series_round_trip(
    node: NodeProcess, corpus: Path, tmp_path: Path
) -> None:
    files = sorted((corpus / "ct/chest-ct-siemens-sensation10-b40f-30sl").glob("*.dcm"))
    files += sorted((corpus / "mr/ge-signa-dwi-brain-14").glob("*.dcm"))
    files += sorted((corpus / "enhanced").rglob("*.dcm"))
    run = storescu(node.dicom_port, files, extra=storescu_config(tmp_path, _pairs(files)))
    assert run.returncode == 0 and len(run.acknowledged) == len(files), run.output
    _assert_round_trip(node, files, tmp_path)
    index = _index(node)
    try:
        ct_study = str(pydicom.dcmread(files[0], stop_before_pixels=True).StudyInstanceUID)
        study = index.get_study(ct_study)
        assert study is not None
        assert [(s.modality, s.body_part, s.instance_count) for s in study.series] == [
            ("CT", "CHEST", 30)
        ]
        enh = pydicom.dcmread(sorted((corpus / "enhanced").rglob("*.dcm"))[0])
        inst = index.get_instance(str(enh.SOPInstanceUID))
        assert inst is not None and int(enh.NumberOfFrames) > 1
        assert inst.sop_class_uid == enh.SOPClassUID
    finally:
        index.close()


def test_parallel_associations(node: NodeProcess, tmp_path: Path) -> None:
    from tests.ingest.synthetic import write_ct_series

    files = write_ct_series(tmp_path / "par", 60, size=32)
    chunks = [files[i::4] for i in range(4)]
    with ThreadPoolExecutor(4) as pool:
        runs = list(pool.map(lambda c: storescu(node.dicom_port, c), chunks))
    for chunk, run in zip(chunks, runs, strict=True):
        assert sorted(run.acknowledged) == sorted(chunk), run.output
    index = _index(node)
    try:
        uid = str(pydicom.dcmread(files[0], stop_before_pixels=True).StudyInstanceUID)
        row = index.study_row(uid)
        assert row is not None and row["instance_count"] == 60
    finally:
        index.close()


def test_unknown_calling_ae_is_rejected(node: NodeProcess, corpus: Path) -> None:
    r = echoscu(node.dicom_port, calling="INTRUDER")
    assert r.returncode != 0
    assert "Association Rejected" in r.stdout + r.stderr
    run = storescu(node.dicom_port, [corpus / "mr/single-slices/MR_small.dcm"], calling="INTRUDER")
    assert run.acknowledged == []
    assert echoscu(node.dicom_port).returncode == 0  # the node is still up


def test_malformed_files_quarantined_and_association_keeps_working(
    node: NodeProcess, corpus: Path
) -> None:
    from pynetdicom import AE, _config

    bad = [corpus / "malformed/MR_truncated.dcm", corpus / "malformed/rtplan_truncated.dcm"]
    missing = corpus / "malformed/Issue195.dcm"  # no SOP Class UID in the data set
    good = corpus / "mr/single-slices/MR_small.dcm"
    before = set((node.data_dir / "quarantine").glob("*.json"))
    _config.STORE_SEND_CHUNKED_DATASET = True  # send the bytes as they are, truncated included
    try:
        ae = AE(ae_title="PYNETDICOM")
        for f in [*bad, missing, good]:
            meta = read_file_meta_info(f)
            ae.add_requested_context(meta.MediaStorageSOPClassUID, meta.TransferSyntaxUID)
        assoc = ae.associate("127.0.0.1", node.dicom_port, ae_title="AINODE")
        assert assoc.is_established
        statuses = {f.name: int(assoc.send_c_store(f).Status) for f in [*bad, missing, good]}
        assoc.release()
    finally:
        _config.STORE_SEND_CHUNKED_DATASET = False
    assert statuses == {
        "MR_truncated.dcm": 0xC000,
        "rtplan_truncated.dcm": 0xC000,
        "Issue195.dcm": 0xA900,
        "MR_small.dcm": 0x0000,
    }
    new = set((node.data_dir / "quarantine").glob("*.json")) - before
    reasons = sorted(json.loads(p.read_text())["reason"] for p in new)
    assert len(reasons) == 3
    assert sum("truncated" in r for r in reasons) == 2
    assert any("SOPClassUID" in r for r in reasons)
    assert echoscu(node.dicom_port).returncode == 0


def test_duplicate_and_replacement(node: NodeProcess, corpus: Path, tmp_path: Path) -> None:
    src = corpus / "ct/single-slices"
    original = sorted(src.glob("*.dcm"))[0]
    ds = pydicom.dcmread(original)
    sop = str(ds.SOPInstanceUID)
    assert storescu(node.dicom_port, [original, original]).acknowledged == [original] * 2
    index = _index(node)
    try:
        first = index.get_instance(sop)
        assert first is not None
        assert len(list(first.path.parent.glob(f"{sop}*"))) == 1
        ds.SeriesDescription = "re-sent with a change"
        changed = tmp_path / "changed.dcm"
        buf = io.BytesIO()
        ds.save_as(buf, enforce_file_format=True)
        changed.write_bytes(buf.getvalue())
        assert storescu(node.dicom_port, [changed]).acknowledged == [changed]
        now = index.get_instance(sop)
        assert now is not None and now.sha256 != first.sha256
        assert list(now.path.parent.glob(f"{sop}*")) == [now.path]
        kinds = [e["kind"] for e in index.events(first.study_uid) if e["sop_uid"] == sop]
        assert kinds[-3:] == ["stored", "duplicate", "replaced"] or kinds[-2:] == [
            "duplicate",
            "replaced",
        ]
        back = pydicom.dcmread(now.path)
        assert back.SeriesDescription == "re-sent with a change"
        assert back.PixelData == ds.PixelData
    finally:
        index.close()


def test_quota_full_answers_a700_and_writes_nothing(corpus: Path, tmp_path: Path) -> None:
    files = sorted((corpus / "ct/chest-ct-siemens-sensation10-b40f-30sl").glob("*.dcm"))[:3]
    quota = files[0].stat().st_size + files[1].stat().st_size // 2
    with start_node(tmp_path, node={"quota_bytes": quota}) as peer:
        run = storescu(peer.dicom_port, files)
        assert run.acknowledged == [files[0]], run.output
        assert run.failed == files[1:]
        assert "Refused: OutOfResources" in run.output
        index = _index(peer)
        try:
            stored = [p for p in (peer.data_dir / "studies").rglob("*") if p.is_file()]
            assert len(stored) == 1
            assert index.total_bytes() == stored[0].stat().st_size
            assert len(index.list_studies()) == 1
            assert index.list_studies()[0]["instance_count"] == 1
        finally:
            index.close()
        assert list((peer.data_dir / "tmp").iterdir()) == []
        assert echoscu(peer.dicom_port).returncode == 0
