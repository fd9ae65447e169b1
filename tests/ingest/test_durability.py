"""Durability: ``kill -9`` the node while storescu sends; every acknowledged instance survives.

Each round starts ``ainode serve``, streams instances with ``storescu -v`` and SIGKILLs the node
after a random number of acknowledgements plus a random delay.  After a restart, every instance
storescu saw answered with Success must be indexed, its file intact (SHA-256 as indexed) and
its content that of the sent file.
"""

from __future__ import annotations

import hashlib
import os
import random
import subprocess
import threading
from pathlib import Path

import pydicom
import pytest

from node.store.index import Index
from tests.ingest.synthetic import write_ct_series
from tests.peers.dcmtk import parse_storescu, tool
from tests.peers.node import NodeProcess, write_config
from tests.util import wait_until

ROUNDS = 3
PER_ROUND = 150


@pytest.mark.slow
@pytest.mark.parametrize(
    "sync,receivers",
    [("auto", 1), ("full", 1), ("auto", 2)],
    ids=["journal-mode", "full-sync", "receivers"],
)
def test_acknowledged_instances_survive_kill_9(tmp_path: Path, sync: str, receivers: int) -> None:
    """Both ``node.ingest_sync`` modes (``auto`` is journal mode on ext4/XFS), and the main
    process of a node with receiver processes (they die with it)."""
    seed = int.from_bytes(os.urandom(4), "little")
    print(f"durability seed {seed}")
    rng = random.Random(seed)
    files = write_ct_series(tmp_path / "in", ROUNDS * PER_ROUND, size=64)
    cfg = write_config(tmp_path / "node", node={"ingest_sync": sync, "receivers": receivers})
    import json

    n = json.loads(cfg.read_text())["node"]
    node = NodeProcess(
        cfg, int(n["dicom_port"]), int(n["http_port"]), Path(n["data_dir"]), tmp_path / "node.log"
    )
    acked: list[Path] = []
    try:
        for r in range(ROUNDS):
            batch = files[r * PER_ROUND : (r + 1) * PER_ROUND]
            node.start()
            out = tmp_path / f"storescu-{r}.log"
            with out.open("w") as fh:
                sender = subprocess.Popen(
                    [
                        tool("storescu"),
                        "-v",
                        "-nh",
                        "-aec",
                        "AINODE",
                        "127.0.0.1",
                        str(node.dicom_port),
                        *map(str, batch),
                    ],
                    stdout=fh,
                    stderr=subprocess.STDOUT,
                    env=dict(os.environ, TCP_NODELAY="1"),
                )
            kill_after = rng.randint(1, PER_ROUND - 20)

            def reached(
                out: Path = out, n: int = kill_after, p: subprocess.Popen[bytes] = sender
            ) -> bool:
                return len(parse_storescu(out.read_text())[0]) >= n or p.poll() is not None

            wait_until(
                reached,
                timeout=60,
                what=f"{kill_after} acknowledgements",
            )
            threading.Event().wait(rng.uniform(0.0, 0.05))  # land anywhere in the next store
            node.kill()
            sender.wait(timeout=30)
            ok, _ = parse_storescu(out.read_text())
            print(f"round {r}: killed after {len(ok)} acks (target {kill_after})")
            assert len(ok) < len(batch), "the node was killed after storescu had finished"
            acked += ok
            node.start()  # restart and verify everything acknowledged so far
            _verify(node, acked)
            assert list((node.data_dir / "tmp").iterdir()) == []
            node.stop()
    except BaseException:
        print(node.log_text()[-4000:])
        raise
    finally:
        node.stop()
    assert len(acked) >= ROUNDS


def _verify(node: NodeProcess, acked: list[Path]) -> None:
    index = Index(node.data_dir / "index.sqlite")
    try:
        for f in acked:
            src = pydicom.dcmread(f)
            inst = index.get_instance(str(src.SOPInstanceUID))
            assert inst is not None, f"acknowledged {f.name} is not indexed"
            data = inst.path.read_bytes()
            assert hashlib.sha256(data).hexdigest() == inst.sha256, f"{f.name} damaged"
            stored = pydicom.dcmread(inst.path)
            assert stored.PixelData == src.PixelData
            assert stored.SeriesInstanceUID == src.SeriesInstanceUID
    finally:
        index.close()
