"""Choice of the sync sequence (node.ingest.durable) and the spool in both modes."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pydicom
import pytest

from node.ingest.durable import file_system_type, resolve_mode
from node.ingest.spool import Spool
from node.store.index import Index
from tests.ingest.synthetic import write_ct_series

SHM = Path("/dev/shm")


def _findmnt(path: Path) -> str:
    """The file-system type by util-linux ``findmnt``: an oracle independent of our parser."""
    out = subprocess.run(
        ["findmnt", "-n", "-o", "FSTYPE", "--target", str(path)],
        capture_output=True,
        text=True,
        check=True,
    )
    return out.stdout.split()[-1]  # the last line is the mount on top (stacked mounts)


@pytest.mark.skipif(shutil.which("findmnt") is None, reason="util-linux findmnt not installed")
@pytest.mark.parametrize("where", ["tmp", "shm"])
def test_file_system_type_matches_findmnt(tmp_path: Path, where: str) -> None:
    path = tmp_path if where == "tmp" else SHM
    if not path.is_dir():
        pytest.skip(f"{path} does not exist here")
    assert file_system_type(path) == _findmnt(path)


def test_mode_follows_the_file_system_and_the_setting(tmp_path: Path) -> None:
    kind = file_system_type(tmp_path)
    assert resolve_mode(tmp_path, "auto") == ("journal" if kind in {"ext4", "xfs"} else "full")
    assert resolve_mode(tmp_path, "full") == "full"
    if SHM.is_dir():
        assert resolve_mode(SHM, "auto") == "full"  # tmpfs has no journal


@pytest.mark.parametrize("sync", ["auto", "full"])
def test_spool_stores_and_replaces_in_both_modes(tmp_path: Path, sync: str) -> None:
    paths = write_ct_series(tmp_path / "in", 6, size=32)
    index = Index(tmp_path / "data" / "index.sqlite")
    spool = Spool(tmp_path / "data", index, sync=sync)  # type: ignore[arg-type]
    try:
        assert spool.sync_mode == ("full" if sync == "full" else resolve_mode(tmp_path, "auto"))
        for p in paths:
            assert spool.store(p.read_bytes(), calling_aet=None, source="test").status == "stored"
        ds = pydicom.dcmread(paths[0])
        ds.SeriesDescription = "changed"
        again = tmp_path / "changed.dcm"
        ds.save_as(again)
        out = spool.store(again.read_bytes(), calling_aet=None, source="test")
        assert out.status == "replaced"
        assert out.instance.path.read_bytes() == again.read_bytes()
        for p in paths[1:]:
            inst = index.get_instance(str(pydicom.dcmread(p).SOPInstanceUID))
            assert inst is not None and inst.path.read_bytes() == p.read_bytes()
        assert len(list(spool.studies_dir.rglob("*.dcm"))) == len(paths)
        assert list(spool.tmp_dir.iterdir()) == []
    finally:
        spool.stop()
        index.close()
