"""Outbox behaviour with real SQLite and a folder destination: idempotency, back-off, dead
letters, manual retry, threads per destination."""

from __future__ import annotations

import random
import sqlite3
from pathlib import Path
from typing import Any

import pydicom
import pytest

from node.config import DeliveryConfig, DimseDestination, FolderDestination
from node.delivery import FORWARD, Outbox
from node.delivery.senders import DestinationConfig
from node.errors import NotFoundError, ResultError
from node.types import DeliveryState
from tests.delivery.conftest import SimClock
from tests.util import free_port, wait_until

POLICY = DeliveryConfig(max_attempts=5, backoff_base_seconds=10, backoff_max_seconds=60)


def _outbox(
    tmp_path: Path, clock: SimClock, dests: dict[str, Any], policy: DeliveryConfig = POLICY
) -> Outbox:
    return Outbox(
        tmp_path / "data" / "index.sqlite", dests, clock=clock, policy=policy, rng=random.Random(7)
    )


def test_enqueue_is_idempotent_per_sop_and_destination(
    tmp_path: Path, clock: SimClock, chest_ct: list[Path]
) -> None:
    box = _outbox(tmp_path, clock, {"f": FolderDestination(type="folder", path=tmp_path / "out")})
    first = box.enqueue(chest_ct[0], destinations=["f"], job_id="job-1")
    again = box.enqueue(chest_ct[0], destinations=["f"], job_id="job-1")
    assert first == again
    assert box.run_once() == 1
    after = box.enqueue(chest_ct[0], destinations=["f"], job_id="job-1")
    assert after == first
    assert box.run_once() == 0  # delivered rows are not sent again
    rows = box.list()
    assert len(rows) == 1 and rows[0].state is DeliveryState.DELIVERED and rows[0].attempts == 1
    ds = pydicom.dcmread(chest_ct[0], stop_before_pixels=True)
    out = tmp_path / "out" / ds.StudyInstanceUID / ds.SeriesInstanceUID / f"{ds.SOPInstanceUID}.dcm"
    assert out.read_bytes() == chest_ct[0].read_bytes()
    box.close()


def test_forwarded_originals_are_marked_forward(
    tmp_path: Path, clock: SimClock, chest_ct: list[Path]
) -> None:
    box = _outbox(tmp_path, clock, {"f": FolderDestination(type="folder", path=tmp_path / "out")})
    box.enqueue_many(chest_ct[:3], destinations=["f"], job_id=None)
    assert {r.job_id for r in box.list()} == {FORWARD}
    box.close()


def test_unknown_destination_and_unreadable_file_are_clear_errors(
    tmp_path: Path, clock: SimClock
) -> None:
    box = _outbox(tmp_path, clock, {"f": FolderDestination(type="folder", path=tmp_path / "o")})
    junk = tmp_path / "junk.dcm"
    junk.write_bytes(b"not dicom at all")
    with pytest.raises(NotFoundError, match="unknown destination"):
        box.enqueue(junk, destinations=["nope"], job_id="j")
    with pytest.raises(ResultError, match="junk.dcm"):
        box.enqueue(junk, destinations=["f"], job_id="j")
    assert box.list() == []
    box.close()


def test_backoff_grows_then_dead_letter_then_manual_retry(
    tmp_path: Path, clock: SimClock, chest_ct: list[Path]
) -> None:
    blocker = tmp_path / "blocked"
    blocker.write_text("a file where the destination folder should be")
    box = _outbox(tmp_path, clock, {"f": FolderDestination(type="folder", path=blocker / "x")})
    (rid,) = box.enqueue(chest_ct[0], destinations=["f"], job_id="j")
    delays = []
    for attempt in range(1, POLICY.max_attempts + 1):
        assert box.run_once() == 1
        row = box.get(rid)
        assert row.attempts == attempt
        assert "cannot create folder" in (row.last_error or "")
        if attempt < POLICY.max_attempts:
            assert row.state is DeliveryState.PENDING
            delay = row.next_attempt_at - clock()
            expected = min(60.0, 10.0 * 2 ** (attempt - 1))
            assert expected / 2 <= delay <= expected
            delays.append(delay)
            assert box.run_once() == 0  # not due yet
            clock.advance(delay)
    assert box.get(rid).state is DeliveryState.DEAD
    assert [r.id for r in box.list(state="dead")] == [rid]
    clock.advance(10_000)
    assert box.run_once() == 0  # dead rows stay dead
    blocker.unlink()
    assert box.retry(rid).state is DeliveryState.PENDING
    assert box.run_once() == 1
    row = box.get(rid)
    assert row.state is DeliveryState.DELIVERED and row.attempts == 1
    assert delays[2] > delays[0]
    box.close()


def test_re_enqueue_of_dead_row_revives_it(
    tmp_path: Path, clock: SimClock, chest_ct: list[Path]
) -> None:
    policy = DeliveryConfig(max_attempts=1, backoff_base_seconds=1, backoff_max_seconds=1)
    blocker = tmp_path / "blocked"
    blocker.write_text("x")
    box = _outbox(
        tmp_path, clock, {"f": FolderDestination(type="folder", path=blocker / "x")}, policy
    )
    (rid,) = box.enqueue(chest_ct[0], destinations=["f"], job_id="j")
    box.run_once()
    assert box.get(rid).state is DeliveryState.DEAD
    assert box.enqueue(chest_ct[0], destinations=["f"], job_id="j") == [rid]
    assert box.get(rid).state is DeliveryState.PENDING and box.get(rid).attempts == 0
    box.close()


def test_retry_dead_all(tmp_path: Path, clock: SimClock, chest_ct: list[Path]) -> None:
    policy = DeliveryConfig(max_attempts=1, backoff_base_seconds=1, backoff_max_seconds=1)
    blocker = tmp_path / "blocked"
    blocker.write_text("x")
    box = _outbox(
        tmp_path, clock, {"f": FolderDestination(type="folder", path=blocker / "x")}, policy
    )
    box.enqueue_many(chest_ct[:4], destinations=["f"], job_id="j")
    box.run_once()
    assert len(box.list(state=DeliveryState.DEAD)) == 4
    blocker.unlink()
    assert box.retry_dead() == 4
    box.run_once()
    assert box.counts() == {"f": {"delivered": 4}}
    box.close()


def test_one_hour_outage_loses_nothing(
    tmp_path: Path, clock: SimClock, chest_ct: list[Path]
) -> None:
    """Default policy: a destination down for an hour (simulated) is still pending, then
    everything is delivered once it is back."""
    blocker = tmp_path / "blocked"
    blocker.write_text("x")
    box = Outbox(
        tmp_path / "index.sqlite",
        {"f": FolderDestination(type="folder", path=blocker / "x")},
        clock=clock,
        rng=random.Random(1),
    )
    box.enqueue_many(chest_ct, destinations=["f"], job_id="j")
    end = clock() + 3600
    while clock() < end:
        box.run_once()
        clock.advance(30)
    assert box.counts() == {"f": {"pending": 30}}
    assert max(r.attempts for r in box.list()) < DeliveryConfig().max_attempts
    blocker.unlink()
    clock.advance(DeliveryConfig().backoff_max_seconds)
    box.run_once()
    assert box.counts() == {"f": {"delivered": 30}}
    assert len(list((blocker / "x").rglob("*.dcm"))) == 30
    box.close()


def test_down_destination_blocks_no_other(tmp_path: Path, chest_ct: list[Path]) -> None:
    """Real threads and real time: a DIMSE destination nobody listens on, and a folder."""
    dests: dict[str, DestinationConfig] = {
        "down": DimseDestination(host="127.0.0.1", port=free_port(), ae_title="NOBODY"),
        "f": FolderDestination(type="folder", path=tmp_path / "out"),
    }
    box = Outbox(tmp_path / "index.sqlite", dests, poll_seconds=0.1)
    box.start()
    try:
        box.enqueue_many(chest_ct[:10], destinations=["down", "f"], job_id="j")
        wait_until(lambda: box.counts().get("f") == {"delivered": 10}, timeout=30, what="folder")
        down = box.list(destination="down")
        assert all(r.state is DeliveryState.PENDING for r in down)
        wait_until(lambda: all(r.attempts >= 1 for r in box.list(destination="down")), 30)
        assert "cannot be reached" in (box.list(destination="down")[0].last_error or "")
    finally:
        box.close()


def test_schema_is_migrated_once_and_survives_reopen(
    tmp_path: Path, clock: SimClock, chest_ct: list[Path]
) -> None:
    db = tmp_path / "index.sqlite"
    box = _outbox(tmp_path, clock, {"f": FolderDestination(type="folder", path=tmp_path / "o")})
    box.close()
    box = Outbox(db.parent / "data" / "index.sqlite", {}, clock=clock)
    box.close()
    conn = sqlite3.connect(tmp_path / "data" / "index.sqlite")
    sql = "SELECT version FROM schema_version WHERE component='outbox'"
    (version,) = conn.execute(sql).fetchone()
    assert version == 1
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    conn.close()


def test_each_destination_type_has_its_sender_and_unknown_types_stop_at_the_config(
    tmp_path: Path,
) -> None:
    from node.config import parse_config
    from node.delivery import SenderContext, make_sender
    from node.delivery.dicomweb import DicomwebSender
    from node.delivery.dimse import DimseSender
    from node.delivery.folder import FolderSender
    from node.delivery.orthanc import OrthancSender
    from node.errors import ConfigError

    ctx = SenderContext("d", "AINODE", 5.0, lambda a, b: None, frozenset)
    cfg = parse_config(
        "destinations:\n"
        "  a: {type: folder, path: out}\n"
        "  b: {type: dimse, host: 127.0.0.1, port: 104}\n"
        "  c: {type: dicomweb, url: 'http://127.0.0.1:1/dicom-web'}\n"
        "  d: {type: orthanc, url: 'http://127.0.0.1:1'}\n",
        base_dir=tmp_path,
    )
    built = {name: type(make_sender(dest, ctx)) for name, dest in cfg.destinations.items()}
    assert built == {"a": FolderSender, "b": DimseSender, "c": DicomwebSender, "d": OrthancSender}
    # a type without a sender cannot get past the config: the error names the known ones
    with pytest.raises(ConfigError, match="carrier-pigeon") as err:
        parse_config("destinations: {x: {type: carrier-pigeon}}\n", base_dir=tmp_path)
    assert "dimse" in str(err.value)


def test_from_config_uses_the_node_index_and_policy(tmp_path: Path, chest_ct: list[Path]) -> None:
    from node.config import parse_config

    cfg = parse_config(
        "node: {data_dir: d, ae_title: MYNODE}\n"
        "destinations: {f: {type: folder, path: out}}\n"
        "delivery: {max_attempts: 2, backoff_base_seconds: 1, backoff_max_seconds: 2}\n",
        base_dir=tmp_path,
    )
    box = Outbox.from_config(cfg)
    box.enqueue(chest_ct[0], destinations=["f"], job_id="j")
    box.run_once()
    assert box.counts() == {"f": {"delivered": 1}}
    assert (tmp_path / "d" / "index.sqlite").is_file()
    assert len(list((tmp_path / "out").rglob("*.dcm"))) == 1
    box.close()
