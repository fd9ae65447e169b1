"""Faults (issue 11): quota reached and a really full disk answer 0xA700, leave no half-written
file anywhere under ``data_dir``, and ingest works again once space is available.

The "nothing written" side of a quota refusal is also in ``test_scp.py``/``test_spool.py``; these
tests add the recovery and a real ENOSPC on a small ext4 file system.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from node.store.index import Index
from tests.ingest.synthetic import write_ct_series
from tests.peers.dcmtk import storescu
from tests.peers.node import NodeProcess, start_node


def _assert_store_intact(node: NodeProcess, expected_count: int) -> None:
    """Every file under studies/ is indexed with its hash, nothing else is there, tmp/ is empty."""
    index = Index(node.data_dir / "index.sqlite")
    try:
        files = sorted(p for p in (node.data_dir / "studies").rglob("*") if p.is_file())
        assert len(files) == expected_count
        for study in index.list_studies():
            for inst in index.study_instances(study["study_uid"]):
                assert inst.path in files
                assert hashlib.sha256(inst.path.read_bytes()).hexdigest() == inst.sha256
        assert index.total_bytes() == sum(f.stat().st_size for f in files)
    finally:
        index.close()
    assert list((node.data_dir / "tmp").iterdir()) == []


@pytest.mark.slow
def test_quota_reached_then_raised_ingest_resumes(tmp_path: Path) -> None:
    files = write_ct_series(tmp_path / "in", 5, size=128)
    size = files[0].stat().st_size
    with start_node(tmp_path / "node", node={"quota_bytes": 2 * size + size // 2}) as node:
        run = storescu(node.dicom_port, files)
        assert run.acknowledged == files[:2], run.output
        assert run.failed == files[2:]
        assert run.output.count("Refused: OutOfResources") == 3
        _assert_store_intact(node, 2)
        # the operator raises the quota and restarts the node
        node.stop()
        cfg = json.loads(node.config_path.read_text())
        cfg["node"]["quota_bytes"] = 100 * size
        node.config_path.write_text(json.dumps(cfg))
        node.start()
        again = storescu(node.dicom_port, files)
        assert again.acknowledged == files, again.output
        _assert_store_intact(node, 5)


@contextlib.contextmanager
def _small_ext4(tmp_path: Path, megabytes: int) -> Iterator[Path]:
    image, mount = tmp_path / "fs.img", tmp_path / "mnt"
    mount.mkdir()
    with image.open("wb") as fh:
        fh.truncate(megabytes * 1024 * 1024)
    subprocess.run(["mkfs.ext4", "-q", "-F", str(image)], check=True, capture_output=True)
    done = subprocess.run(
        ["mount", "-o", "loop", str(image), str(mount)], capture_output=True, text=True
    )
    if done.returncode != 0:
        pytest.skip(f"a real ENOSPC needs a loop-mounted file system: {done.stderr.strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


@pytest.mark.slow
@pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("mkfs.ext4") is None,
    reason="mounting a small ext4 image needs root and mkfs.ext4",
)
def test_disk_full_answers_a700_and_recovers_when_space_frees(tmp_path: Path) -> None:
    files = write_ct_series(tmp_path / "in", 8, size=512)  # ~0.5 MB each
    size = files[0].stat().st_size
    with (
        _small_ext4(tmp_path, 24) as mount,
        start_node(tmp_path / "node", node={"data_dir": str(mount / "data")}) as node,
    ):
        # warm the index up (its pages and WAL) before the disk is filled
        assert storescu(node.dicom_port, files[:1]).acknowledged == files[:1]
        ballast = mount / "ballast"
        free = shutil.disk_usage(mount).free
        with ballast.open("wb") as fh:  # leave room for about two more instances
            fh.write(b"\0" * max(0, free - int(2.5 * size)))
            fh.flush()
            os.fsync(fh.fileno())
        run = storescu(node.dicom_port, files[1:])
        assert run.failed, "the disk never filled up"
        assert "Refused: OutOfResources" in run.output
        assert len(run.acknowledged) <= 3
        stored = 1 + len(run.acknowledged)
        _assert_store_intact(node, stored)
        # space frees (the operator removes a file): the same node takes the rest
        ballast.unlink()
        again = storescu(node.dicom_port, run.failed)
        assert again.acknowledged == run.failed, again.output
        _assert_store_intact(node, len(files))
