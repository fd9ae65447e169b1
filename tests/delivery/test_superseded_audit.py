"""The ``results.superseded`` audit record survives a kill between the rejection and its record
(issue 18 §4): it is re-derived from the ``rejections`` table, once."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest

from node.audit import AuditLog, SupersededAuditor
from node.config import FolderDestination
from node.delivery import Outbox
from node.delivery.rejections import Rejections
from node.types import RejectionKind
from tests.delivery.conftest import SimClock
from tests.peers.node import start_node


def _records(audit: AuditLog) -> list[dict[str, object]]:
    lines = audit.path.read_text(encoding="utf-8").splitlines() if audit.path.exists() else []
    return [r for r in map(json.loads, lines) if r["event"] == "results.superseded"]


def test_superseded_record_lost_in_a_crash_is_re_derived_once(
    tmp_path: Path, clock: SimClock, corpus: Path
) -> None:
    ref = corpus / "reference-results" / "highdicom"
    old_set = [ref / "seg_image_ct_binary.dcm", ref / "seg_image_ct_binary_fractional.dcm"]
    dests = {"archive": FolderDestination(type="folder", path=tmp_path / "archive")}
    box = Outbox(tmp_path / "index.sqlite", dests, clock=clock)
    rejections = Rejections(box, data_dir=tmp_path, clock=clock)
    try:
        box.enqueue_many(old_set, destinations=["archive"], job_id="j-old")
        box.run_once()
        # the state change is committed, and the process dies before any listener records it
        done = rejections.reject(
            ["j-old"],
            kind=RejectionKind.SUPERSEDED,
            reason="superseded by job j-new",
            actor="node",
            superseded_by="j-new",
        )
        assert done is not None and done.queued_at is not None

        # the restarted node: a fresh audit log over the same data folder
        audit = AuditLog(tmp_path)
        auditor = SupersededAuditor(audit)
        assert _records(audit) == []
        found = rejections.list(kind="superseded")
        assert [r.note_id for r in found] == [done.note_id]
        assert auditor.catch_up(found) == 1
        (record,) = _records(audit)
        assert record["note_id"] == done.note_id and record["actor"] == "node"
        assert record["job_ids"] == ["j-old"] and record["superseded_by"] == "j-new"
        assert record["objects"] == 2 and record["destinations"] == ["archive"]

        # a second restart, and the live listener hearing of the same rejection: no duplicate
        again = SupersededAuditor(AuditLog(tmp_path))
        assert again.catch_up(rejections.list(kind="superseded")) == 0
        assert again.record(done) is False
        assert len(_records(audit)) == 1
        (row,) = audit.list(event="results.superseded")
        assert row.detail["note_id"] == done.note_id
        audit.close()
    finally:
        rejections.close()
        box.close()


@pytest.mark.slow  # two node starts
def test_a_started_node_records_what_a_kill_left_unrecorded(
    tmp_path: Path, clock: SimClock, corpus: Path
) -> None:
    """The state a ``kill -9`` right after a supersede leaves (rejection queued, no audit
    record): the node records it when it starts, and not again at the next start."""
    ref = corpus / "reference-results" / "highdicom"
    workdir = tmp_path / "node"
    data = workdir / "data"
    data.mkdir(parents=True)
    archive = tmp_path / "archive"
    dests = {"archive": FolderDestination(type="folder", path=archive)}
    box = Outbox(data / "index.sqlite", dests, clock=clock)
    rejections = Rejections(box, data_dir=data, clock=clock)
    try:
        box.enqueue_many([ref / "seg_image_ct_binary.dcm"], destinations=["archive"], job_id="j-1")
        box.run_once()
        done = rejections.reject(
            ["j-1"], kind="superseded", reason="superseded", actor="node", superseded_by="j-2"
        )
        assert done is not None
    finally:
        rejections.close()
        box.close()
    with start_node(
        workdir, destinations={"archive": {"type": "folder", "path": str(archive)}}
    ) as node:
        http = httpx.Client(base_url=node.url, timeout=60)
        audited = http.get("/api/audit", params={"event": "results.superseded"}).json()
        (record,) = audited["records"]
        assert record["note_id"] == done.note_id and record["superseded_by"] == "j-2"
        node.stop()
        node.start()
        audited = http.get("/api/audit", params={"event": "results.superseded"}).json()
        assert [r["note_id"] for r in audited["records"]] == [done.note_id]
        http.close()
