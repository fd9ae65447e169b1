"""Spool: durable store, duplicates, replacement, quarantine, quota, UID safety, group commit."""

from __future__ import annotations

import hashlib
import io
import json
import threading
import warnings
from pathlib import Path

import pydicom
import pytest

from node.errors import MalformedInstanceError, MissingAttributeError, OutOfResourcesError
from node.ingest.header import dataset_offset
from node.ingest.spool import Spool
from node.store.index import Index
from tests.ingest.synthetic import write_ct_series


@pytest.fixture
def spool(tmp_path: Path):  # type: ignore[no-untyped-def]
    index = Index(tmp_path / "data" / "index.sqlite")
    sp = Spool(tmp_path / "data", index)
    yield sp
    sp.stop()
    index.close()


def _modified(data: bytes, **changes: object) -> bytes:
    ds = pydicom.dcmread(io.BytesIO(data))
    out = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # invalid UIDs on purpose
        for key, value in changes.items():
            setattr(ds, key, value)
        ds.save_as(out, enforce_file_format=True)
    return out.getvalue()


def test_store_keeps_bytes_exactly_and_indexes(spool: Spool, corpus: Path) -> None:
    data = (corpus / "ct/single-slices").glob("*.dcm").__next__().read_bytes()
    out = spool.store(data, calling_aet="X", source="test")
    assert out.status == "stored"
    assert out.instance.path.read_bytes() == data
    assert out.instance.sha256 == hashlib.sha256(data).hexdigest()
    assert out.instance.path.is_relative_to(spool.studies_dir)
    assert spool.index.get_instance(out.instance.sop_uid) == out.instance
    study = spool.index.get_study(out.instance.study_uid)
    assert study is not None and study.series[0].instance_count == 1
    assert "0020000E" in study.series[0].header  # SeriesInstanceUID in the DICOM JSON header
    assert "7FE00010" not in study.series[0].header
    assert list(spool.tmp_dir.iterdir()) == []


def test_duplicate_is_not_stored_twice_and_replacement_keeps_newest(
    spool: Spool, corpus: Path
) -> None:
    data = (corpus / "mr/single-slices/MR_small.dcm").read_bytes()
    first = spool.store(data, calling_aet=None, source="test")
    again = spool.store(data, calling_aet=None, source="test")
    assert again.status == "duplicate"
    assert again.instance.path == first.instance.path
    files = list(first.instance.path.parent.iterdir())
    assert len(files) == 1
    changed = _modified(data, SeriesDescription="changed")
    repl = spool.store(changed, calling_aet=None, source="test")
    assert repl.status == "replaced"
    assert repl.instance.path.read_bytes() == changed
    assert not first.instance.path.exists()
    assert list(first.instance.path.parent.iterdir()) == [repl.instance.path]
    kinds = [e["kind"] for e in spool.index.events(first.instance.study_uid)]
    assert kinds == ["stored", "duplicate", "replaced"]
    ev = spool.index.events(first.instance.study_uid)[-1]
    assert ev["detail"]["previous_sha256"] == first.instance.sha256
    # replacing back again alternates names and still keeps exactly one file
    back = spool.store(data, calling_aet=None, source="test")
    assert back.status == "replaced"
    assert list(first.instance.path.parent.iterdir()) == [back.instance.path]
    assert spool.index.total_bytes() == len(data)


@pytest.mark.parametrize(
    ("name", "error"),
    [
        ("MR_truncated.dcm", MalformedInstanceError),
        ("rtplan_truncated.dcm", MalformedInstanceError),
        ("no_meta.dcm", MalformedInstanceError),
        ("ExplVR_BigEndNoMeta.dcm", MalformedInstanceError),
        ("meta_missing_tsyntax.dcm", MalformedInstanceError),
        ("Issue195.dcm", MissingAttributeError),
        ("empty_charset_LEI.dcm", MissingAttributeError),
    ],
)
def test_malformed_files_are_quarantined_with_reason(
    spool: Spool, corpus: Path, name: str, error: type[Exception]
) -> None:
    data = (corpus / "malformed" / name).read_bytes()
    with pytest.raises(error):
        spool.store(data, calling_aet="BAD", source="test")
    reasons = list(spool.quarantine_dir.glob("*.json"))
    assert len(reasons) == 1
    reason = json.loads(reasons[0].read_text())
    assert reason["reason"] and reason["sha256"] == hashlib.sha256(data).hexdigest()
    assert reason["calling_aet"] == "BAD"
    assert reasons[0].with_suffix(".dcm").read_bytes() == data
    assert spool.index.total_bytes() == 0
    assert list(spool.studies_dir.iterdir()) == []
    assert spool.index.count_events("quarantined") == 1


def test_truncated_encapsulated_pixel_data_is_malformed(spool: Spool, corpus: Path) -> None:
    path = next((corpus / "transfer-syntax").rglob("*1.2.840.10008.1.2.4.90.dcm"))
    with pytest.raises(MalformedInstanceError, match="truncated|End of file"):
        spool.store(path.read_bytes()[:-100], calling_aet=None, source="test")


@pytest.mark.parametrize("bad_uid", ["../../etc", "1.2/3", "1.2.3..4", "1.2.a", "9" * 65])
def test_unsafe_uids_never_reach_a_path(spool: Spool, corpus: Path, bad_uid: str) -> None:
    data = (corpus / "mr/single-slices/MR_small.dcm").read_bytes()
    bad = _modified(data, SOPInstanceUID=bad_uid)
    with pytest.raises(MalformedInstanceError, match="not a valid UID"):
        spool.store(bad, calling_aet=None, source="test")
    assert list(spool.studies_dir.iterdir()) == []


def test_quota_full_refuses_and_writes_nothing(tmp_path: Path, corpus: Path) -> None:
    data = (corpus / "mr/single-slices/MR_small.dcm").read_bytes()
    other = _modified(data, SOPInstanceUID="1.2.3.4.5.6.7")
    index = Index(tmp_path / "index.sqlite")
    sp = Spool(tmp_path, index, quota_bytes=len(data) + len(other) // 2)
    try:
        assert sp.store(data, calling_aet=None, source="test").status == "stored"
        with pytest.raises(OutOfResourcesError):
            sp.store(other, calling_aet=None, source="test")
        assert list(sp.tmp_dir.iterdir()) == []
        assert index.get_instance("1.2.3.4.5.6.7") is None
        assert index.total_bytes() == len(data)
    finally:
        sp.stop()
        index.close()
    index = Index(tmp_path / "index.sqlite")
    sp = Spool(tmp_path, index, min_free_bytes=2**62)
    try:
        with pytest.raises(OutOfResourcesError, match="free"):
            sp.store(other, calling_aet=None, source="test")
    finally:
        sp.stop()
        index.close()


def test_concurrent_callers_share_commits(spool: Spool, tmp_path: Path) -> None:
    paths = write_ct_series(tmp_path / "in", 80, size=32)
    datas = [p.read_bytes() for p in paths]
    commits: list[int] = []
    original = spool.index.commit

    def counting(records):  # type: ignore[no-untyped-def]
        commits.append(len(records))
        return original(records)

    spool.index.commit = counting  # type: ignore[method-assign]
    errors: list[BaseException] = []

    def worker(chunk: list[bytes]) -> None:
        try:
            for d in chunk:
                spool.store(d, calling_aet=None, source="test")
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(datas[i::8],)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert sum(commits) == 80
    assert max(commits) > 1, "no two callers ever shared a commit"
    for p, d in zip(paths, datas, strict=True):
        sop = pydicom.dcmread(p, stop_before_pixels=True).SOPInstanceUID
        inst = spool.index.get_instance(sop)
        assert inst is not None and inst.path.read_bytes() == d
        assert hashlib.sha256(d[dataset_offset(d) :]).hexdigest()


def test_stale_temp_files_are_cleared_on_start(tmp_path: Path) -> None:
    (tmp_path / "tmp").mkdir()
    (tmp_path / "tmp" / "abc.part").write_bytes(b"half")
    index = Index(tmp_path / "index.sqlite")
    sp = Spool(tmp_path, index)
    assert list(sp.tmp_dir.iterdir()) == []
    index.close()
