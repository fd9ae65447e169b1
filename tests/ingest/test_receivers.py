"""Several receiver processes on one DICOM port (``node.receivers``), one spool and index writer.

A real ``ainode serve`` with two receivers: concurrent storescu associations are all stored and
indexed once; a receiver killed with SIGKILL in the middle of an association is restarted, every
instance it acknowledged is indexed intact, and the node takes the rest afterwards.
"""

from __future__ import annotations

import hashlib
import os
import signal
import sqlite3
import subprocess
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pydicom
import pytest

from node.store.index import Index
from tests.ingest.synthetic import write_ct_series
from tests.peers.dcmtk import parse_storescu, storescu, tool
from tests.peers.node import NodeProcess, start_node
from tests.util import wait_until


def _receivers(node: NodeProcess) -> list[int]:
    """Pids of the node's receiver processes."""
    assert node.proc is not None
    out = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
            cmd = Path(f"/proc/{entry}/cmdline").read_bytes()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        if ppid == node.proc.pid and b"node.ingest.receivers" in cmd:
            out.append(int(entry))
    return sorted(out)


def _holding_connection(pids: list[int], port: int) -> list[int]:
    """Which of ``pids`` hold an established TCP connection on local ``port``."""
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            f = line.split()
            if f[3] == "01" and int(f[1].rsplit(":", 1)[1], 16) == port:
                inodes.add(f[9])
    holders = []
    for pid in pids:
        try:
            links = [os.readlink(f"/proc/{pid}/fd/{fd}") for fd in os.listdir(f"/proc/{pid}/fd")]
        except OSError:
            continue
        if any(link.startswith("socket:[") and link[8:-1] in inodes for link in links):
            holders.append(pid)
    return holders


def _verify(node: NodeProcess, files: list[Path]) -> None:
    index = Index(node.data_dir / "index.sqlite")
    try:
        for f in files:
            src = pydicom.dcmread(f)
            inst = index.get_instance(str(src.SOPInstanceUID))
            assert inst is not None, f"acknowledged {f.name} is not indexed"
            assert hashlib.sha256(inst.path.read_bytes()).hexdigest() == inst.sha256
            assert pydicom.dcmread(inst.path).PixelData == src.PixelData
    finally:
        index.close()


def _count(node: NodeProcess) -> int:
    conn = sqlite3.connect(f"file:{node.data_dir / 'index.sqlite'}?mode=ro", uri=True)
    try:
        return int(conn.execute("SELECT COUNT(*) FROM instances").fetchone()[0])
    finally:
        conn.close()


@pytest.mark.slow
@pytest.mark.parametrize("sync", ["auto", "full"])
def test_receivers_share_one_port_and_one_spool(tmp_path: Path, sync: str) -> None:
    studies = [write_ct_series(tmp_path / f"in{i}", 40, size=64) for i in range(4)]
    with start_node(tmp_path / "node", node={"receivers": 2, "ingest_sync": sync}) as node:
        pids = _receivers(node)
        assert len(pids) == 2
        with ThreadPoolExecutor(4) as pool:
            runs = list(pool.map(lambda files: storescu(node.dicom_port, files), studies))
        for files, run in zip(studies, runs, strict=True):
            assert run.acknowledged == files, run.output
        _verify(node, [f for files in studies for f in files])
        assert _count(node) == 160
        assert list((node.data_dir / "tmp").iterdir()) == []
        assert _receivers(node) == pids  # nobody crashed
        log = node.log_text()
        assert log.count('"event": "dicom.listening"') >= 2  # each receiver accepts


@pytest.mark.slow
@pytest.mark.parametrize("sync", ["auto", "full"])
def test_a_receiver_killed_mid_send_loses_nothing_acknowledged(tmp_path: Path, sync: str) -> None:
    files = write_ct_series(tmp_path / "in", 400, size=64)
    with start_node(tmp_path / "node", node={"receivers": 2, "ingest_sync": sync}) as node:
        before = _receivers(node)
        out = tmp_path / "storescu.log"
        with out.open("w") as fh:
            sender = subprocess.Popen(
                [tool("storescu"), "-v", "-nh", "-aec", "AINODE", "127.0.0.1",
                 str(node.dicom_port), *map(str, files)],
                stdout=fh,
                stderr=subprocess.STDOUT,
                env=dict(os.environ, TCP_NODELAY="1"),
            )  # fmt: skip
        wait_until(lambda: len(parse_storescu(out.read_text())[0]) >= 60, timeout=60, what="acks")
        (victim,) = _holding_connection(before, node.dicom_port)
        threading.Event().wait(0.01)  # land anywhere in a store
        os.kill(victim, signal.SIGKILL)
        sender.wait(timeout=60)
        acked, failed = parse_storescu(out.read_text())
        assert 60 <= len(acked) < len(files), "killed too late"
        _verify(node, acked)  # every acknowledged instance survived the receiver
        wait_until(
            lambda: len(_receivers(node)) == 2 and victim not in _receivers(node),
            timeout=30,
            what="the receiver restarted",
        )
        rest = [f for f in files if f not in set(acked)]
        again = storescu(node.dicom_port, rest)
        assert again.acknowledged == rest, again.output
        _verify(node, files)
        assert _count(node) == len(files)  # none twice
        wait_until(
            lambda: list((node.data_dir / "tmp").iterdir()) == [],
            timeout=30,
            what="tmp/ cleaned",
        )
        assert '"event": "receivers.died"' in node.log_text()
        assert failed or len(acked) < len(files)
