"""After an unclean shutdown the spool re-indexes fsync'd files whose index rows were lost."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from pydicom import dcmread

from node.ingest.spool import Spool
from node.store.index import Index
from tests.ingest.synthetic import write_ct_series


def _lose_rows(db: Path, sops: list[str]) -> None:
    """What a power loss does to the last WAL transactions: the rows are gone, files remain."""
    conn = sqlite3.connect(db)
    with conn:
        conn.executemany("DELETE FROM instances WHERE sop_uid = ?", [(s,) for s in sops])
    conn.close()


def test_lost_rows_are_reindexed_after_unclean_shutdown(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    files = write_ct_series(tmp_path / "in", 4, size=16)
    index = Index(data_dir / "index.sqlite")
    spool = Spool(data_dir, index)
    outs = [spool.store(f.read_bytes(), calling_aet=None, source="t") for f in files]
    spool.stop()
    index.close()
    assert (data_dir / ".clean-shutdown").exists()

    lost = [o.instance for o in outs[2:]]
    _lose_rows(data_dir / "index.sqlite", [i.sop_uid for i in lost])
    # clean marker present: nothing is scanned, the rows stay lost
    index = Index(data_dir / "index.sqlite")
    Spool(data_dir, index)
    assert index.get_instance(lost[0].sop_uid) is None
    index.close()
    # no marker (the Spool above never stopped = unclean): the files are indexed again
    index = Index(data_dir / "index.sqlite")
    spool = Spool(data_dir, index)
    try:
        for inst in lost:
            again = index.get_instance(inst.sop_uid)
            assert again is not None
            assert (again.path, again.sha256, again.size_bytes) == (
                inst.path,
                inst.sha256,
                inst.size_bytes,
            )
        assert index.total_bytes() == sum(o.instance.size_bytes for o in outs)
        kinds = [e["detail"]["source"] for e in index.events(lost[0].study_uid)]
        assert kinds.count("reconcile") == 2
    finally:
        spool.stop()
        index.close()


def test_cut_short_unacknowledged_file_is_not_indexed_and_a_resend_replaces_it(
    tmp_path: Path,
) -> None:
    """A crash between the rename and the fdatasync can leave a truncated file at its final path
    (never acknowledged, no index row): reconcile must not index it, the sender's retry wins."""
    data_dir = tmp_path / "data"
    files = write_ct_series(tmp_path / "in", 2, size=16)
    index = Index(data_dir / "index.sqlite")
    spool = Spool(data_dir, index)
    first = spool.store(files[0].read_bytes(), calling_aet=None, source="t").instance
    spool.stop()
    index.close()

    data = files[1].read_bytes()
    ds = dcmread(files[1])
    final = first.path.parent / f"{ds.SOPInstanceUID}.dcm"
    final.write_bytes(data[: len(data) - 100])  # what the crash left: cut short
    (data_dir / ".clean-shutdown").unlink()

    index = Index(data_dir / "index.sqlite")
    spool = Spool(data_dir, index)
    try:
        assert index.get_instance(ds.SOPInstanceUID) is None
        out = spool.store(data, calling_aet=None, source="t")
        assert out.status == "stored"
        assert out.instance.path == final
        assert final.read_bytes() == data
        assert index.total_bytes() == first.size_bytes + len(data)
    finally:
        spool.stop()
        index.close()
