"""The SQLite index: schema migrations, WAL, queries used by the API and the CLI."""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path

from node.ingest.spool import Spool
from node.store.index import STEPS, Index
from tests.ingest.synthetic import write_ct_series


def test_schema_is_migrated_once_and_wal(tmp_path: Path) -> None:
    db = tmp_path / "index.sqlite"
    Index(db).close()
    Index(db).close()  # re-opening applies nothing new
    conn = sqlite3.connect(db)
    try:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        version = conn.execute(
            "SELECT version FROM schema_version WHERE component = 'index'"
        ).fetchone()[0]
        assert version == len(STEPS)
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        assert {"studies", "series", "instances", "events"} <= tables
    finally:
        conn.close()


def test_queries(tmp_path: Path) -> None:
    index = Index(tmp_path / "data" / "index.sqlite")
    spool = Spool(tmp_path / "data", index)
    try:
        a = write_ct_series(tmp_path / "a", 3, size=16)
        b = write_ct_series(tmp_path / "b", 2, size=16)
        outs = [spool.store(p.read_bytes(), calling_aet="CT1", source="t") for p in a + b]
        rows = index.list_studies()
        assert [r["instance_count"] for r in rows] == [2, 3]  # most recent first
        assert index.list_studies(limit=1, offset=1)[0]["study_uid"] == outs[0].instance.study_uid
        study = index.get_study(outs[0].instance.study_uid)
        assert study is not None and study.generation == 0
        (series,) = study.series
        assert (series.modality, series.body_part, series.series_description) == (
            "CT",
            "CHEST",
            "synthetic",
        )
        assert series.header["00080060"] == {"vr": "CS", "Value": ["CT"]}
        insts = index.series_instances(series.series_uid)
        assert [i.sop_uid for i in insts] == [o.instance.sop_uid for o in outs[:3]]
        assert all(i.path.is_file() and i.calling_aet == "CT1" for i in insts)
        assert index.get_study("1.2.3") is None and index.study_row("1.2.3") is None
        assert len(index.events(outs[0].instance.study_uid)) == 3
        assert index.mark_complete(outs[0].instance.study_uid, forced=True) == 1
        assert index.mark_complete(outs[0].instance.study_uid, forced=True) is None
    finally:
        spool.stop()
        index.close()


def test_readers_in_other_threads(tmp_path: Path) -> None:
    index = Index(tmp_path / "index.sqlite")
    results: list[int] = []

    def read() -> None:
        results.append(len(index.list_studies()))

    threads = [threading.Thread(target=read) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == [0, 0, 0, 0]
    index.close()
