"""Pulled instances land in the real ingest spool (node.ingest.spool) in these tests."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from node.ingest.spool import Spool
from node.store.index import Index
from tests.pull.conftest import Received


@contextmanager
def spool_in(data_dir: Path) -> Iterator[Spool]:
    """A started spool over a fresh index under ``data_dir``."""
    index = Index(data_dir / "index.sqlite")
    spool = Spool(data_dir, index)
    spool.start()
    try:
        yield spool
    finally:
        spool.stop()
        index.close()


def stored_study(data_dir: Path, study_uid: str) -> list[Received]:
    """What the index says is stored for ``study_uid``, with each file's bytes."""
    index = Index(data_dir / "index.sqlite")
    try:
        return [Received(i.sop_uid, i.path.read_bytes()) for i in index.study_instances(study_uid)]
    finally:
        index.close()
