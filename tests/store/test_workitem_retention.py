"""Retention of UPS workitems (issue 23 §2): final workitems go after ``retention.workitems_days``
unless a subscriber holds a deletion lock (PS3.4 CC.2.3.1).  Real SQLite index, the real
workitem store and retention, a test clock."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest

from node.config import RetentionConfig
from node.delivery.queries import DELIVERY_ROWS
from node.errors import NotFoundError
from node.jobs.queries import JOB_ROWS
from node.store.index import Index
from node.store.retention import Retention
from node.store.ups import FILTERED_SUBSCRIPTION_UID, GLOBAL_SUBSCRIPTION_UID
from node.store.workitems import WorkitemStore
from tests.api.upsdata import workitem
from tests.peers.node import start_node
from tests.util import wait_until

DAY = 86400.0
T0 = 1_700_000_000.0  # 2023: long past for the node test


@pytest.fixture
def store(tmp_path: Path) -> WorkitemStore:
    Index(tmp_path / "index.sqlite").close()  # the node's index exists before its tables
    return WorkitemStore(tmp_path / "index.sqlite")


def _retention(tmp_path: Path, store: WorkitemStore, now: float, **config: float) -> Retention:
    removed: list[list[str]] = []
    retention = Retention(
        tmp_path,
        RetentionConfig(**config),
        clock=lambda: now,
        study_rows=(JOB_ROWS, DELIVERY_ROWS),
        workitems=store,
        on_workitems_removed=removed.append,
    )
    retention.removed_workitems = removed  # type: ignore[attr-defined]
    return retention


def _canceled(store: WorkitemStore, uid: str, at: float) -> None:
    store.create(uid, workitem(), worklist_label="AINODE", now=at)
    assert store.request_cancel(uid, reason="test", now=at).canceled


def _uids(store: WorkitemStore) -> set[str]:
    return {w.uid for w in store.workitems()}


def test_final_workitems_older_than_the_limit_go_and_the_others_stay(
    tmp_path: Path, store: WorkitemStore
) -> None:
    _canceled(store, "1.2.3.1", T0)  # final, 3 days old at the check
    _canceled(store, "1.2.3.2", T0 + 2.5 * DAY)  # final, half a day old
    store.create("1.2.3.3", workitem(), worklist_label="AINODE", now=T0)  # SCHEDULED, old
    store.subscribe("PERF", "1.2.3.1", deletion_lock=False, now=T0)
    retention = _retention(tmp_path, store, T0 + 3 * DAY, workitems_days=1)
    assert retention.enabled  # a workitem rule alone turns retention on
    retention.run_once()
    assert _uids(store) == {"1.2.3.2", "1.2.3.3"}
    assert retention.removed_workitems == [["1.2.3.1"]]  # type: ignore[attr-defined]
    with pytest.raises(NotFoundError):
        store.get("1.2.3.1")
    assert store.subscriptions(target="1.2.3.1") == []  # its subscription went with it
    retention.run_once()  # nothing more to do: no second report
    assert retention.removed_workitems == [["1.2.3.1"]]  # type: ignore[attr-defined]


def test_retention_days_is_the_default_and_unset_keeps_everything(
    tmp_path: Path, store: WorkitemStore
) -> None:
    _canceled(store, "1.2.3.1", T0)
    kept = _retention(tmp_path, store, T0 + 100 * DAY)
    assert not kept.enabled
    kept.run_once()
    assert _uids(store) == {"1.2.3.1"}
    _retention(tmp_path, store, T0 + 100 * DAY, days=30).run_once()
    assert _uids(store) == set()


@pytest.mark.parametrize(
    ("target", "suspended", "kept"),
    [
        ("1.2.3.1", None, True),  # a locked subscription to the workitem itself
        (GLOBAL_SUBSCRIPTION_UID, None, True),  # a locked global subscription
        (FILTERED_SUBSCRIPTION_UID, None, True),  # a locked filtered global subscription
        (GLOBAL_SUBSCRIPTION_UID, T0 - DAY, False),  # suspended before the workitem came
        (GLOBAL_SUBSCRIPTION_UID, T0 + DAY, True),  # suspended after: it still covers it
    ],
)
def test_a_deletion_lock_keeps_the_workitem(
    tmp_path: Path, store: WorkitemStore, target: str, suspended: float | None, kept: bool
) -> None:
    _canceled(store, "1.2.3.1", T0)
    store.subscribe("RIS", target, deletion_lock=True, now=T0 - 2 * DAY)
    if suspended is not None:
        assert store.suspend("RIS", target, now=suspended)
    store.subscribe("OTHER", "1.2.3.1", deletion_lock=False, now=T0)  # no lock: no say
    _retention(tmp_path, store, T0 + 10 * DAY, workitems_days=1).run_once()
    assert (_uids(store) == {"1.2.3.1"}) is kept
    # the lock ends with the subscription: the next pass deletes it
    store.unsubscribe("RIS", target)
    _retention(tmp_path, store, T0 + 10 * DAY, workitems_days=1).run_once()
    assert _uids(store) == set()


def test_the_node_deletes_and_audits_expired_workitems(tmp_path: Path) -> None:
    """A real node process: a final workitem past the limit goes, audited, the others stay."""
    data = tmp_path / "n" / "data"
    data.mkdir(parents=True)
    Index(data / "index.sqlite").close()
    seeded = WorkitemStore(data / "index.sqlite")
    _canceled(seeded, "1.2.3.1", T0)  # years ago
    seeded.create("1.2.3.2", workitem(), worklist_label="AINODE")  # SCHEDULED, now
    seeded.close()
    with start_node(
        tmp_path / "n",
        node={"data_dir": str(data)},
        retention={"workitems_days": 1, "interval_seconds": 0.5},
    ) as node:

        def gone() -> bool:
            with sqlite3.connect(node.data_dir / "index.sqlite") as conn:
                rows = conn.execute("SELECT uid FROM workitems").fetchall()
            return [r[0] for r in rows] == ["1.2.3.2"]

        wait_until(gone, timeout=60, what="the expired workitem deleted")

        def audited() -> list[dict[str, object]]:
            lines = (node.data_dir / "audit.log").read_text().splitlines()
            return [r for r in map(json.loads, lines) if r.get("event") == "workitem.deleted"]

        wait_until(lambda: bool(audited()), timeout=30, what="workitem.deleted audited")
        [record] = audited()
        assert (record["workitem_uid"], record["actor"], record["reason"]) == (
            "1.2.3.1",
            "node",
            "retention",
        )
