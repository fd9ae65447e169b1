"""Rule replay on stored studies (issue 22 section 4): a real SQLite index, real rule files.

Studies are stored the way ingest stores them (``parse_received_file`` -> ``Index.commit``),
one of them carries a routing record written by the real ``JobStore``; the stored instance
files are removed before the replay, so it can only have used the stored headers.
"""

from __future__ import annotations

import gc
import hashlib
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

import dicom_rules
from node.imaging.dicom_json import header_from_dataset
from node.ingest.header import parse_received_file
from node.jobs.store import JobStore
from node.routing.replay import parse_since, replay
from node.samples import write_ct_series, write_projection
from node.store.index import Index, IngestRecord
from node.types import Instance

OLD = """\
version: 1
rules:
  - name: chest-ct
    when: {Modality: CT, body_part: CHEST}
    then: {model: lung-seg, deliver: [pacs], send_to: archive}
  - name: head-ct
    when: {Modality: CT, body_part: HEAD}
    then: {model: brain-seg, deliver: [pacs]}
  - name: dx
    when: {Modality: DX}
    then: {model: cxr, deliver: [pacs]}
"""

NEW = """\
version: 1
rules:
  - name: chest-ct
    when: {Modality: CT, body_part: CHEST}
    then:
      - {model: lung-seg, deliver: [pacs, viewer]}
      - {model: nodule-det, deliver: [pacs]}
  - name: head-ct
    when: {Modality: CT, body_part: HEAD}
    then: {model: brain-seg, deliver: [pacs]}
  - name: dx
    when: {Modality: DX}
    then: ignore
"""

DAY = 86400.0


def _store(index: Index, files: list[Path], received: float) -> str:
    study_uid = ""
    for path in files:
        header = parse_received_file(path, path.stat().st_size)
        data = path.read_bytes()
        instance = Instance(
            study_uid=header.study_uid,
            series_uid=header.series_uid,
            sop_uid=header.sop_uid,
            sop_class_uid=header.sop_class_uid,
            transfer_syntax_uid=header.transfer_syntax_uid,
            path=path,
            size_bytes=len(data),
            sha256=hashlib.sha256(data).hexdigest(),
            modality=header.modality,
            body_part=header.body_part,
        )
        index.commit(
            [
                IngestRecord(
                    instance,
                    "stored",
                    instance.sha256,
                    "test",
                    received,
                    series_description=header.series_description,
                    series_header=header_from_dataset(header.dataset),
                )
            ]
        )
        study_uid = header.study_uid
    return study_uid


@dataclass
class Stored:
    index: Index
    jobs: JobStore
    now: float
    chest: str
    head: str
    dx: str
    old: str
    chest_series: str


@pytest.fixture
def stored(tmp_path: Path) -> Stored:
    now = time.time()
    yy, xx = np.mgrid[-8:8, -8:8]
    disk = np.where(yy**2 + xx**2 < 36, 40.0, -1000.0)
    index = Index(tmp_path / "index.sqlite")
    chest = _store(
        index,
        write_ct_series(np.stack([disk] * 2), spacing=(1, 1, 1), out_dir=tmp_path / "chest"),
        now - 2 * DAY,
    )
    head = _store(
        index,
        write_ct_series(
            np.stack([disk] * 2), spacing=(1, 1, 1), out_dir=tmp_path / "head", body_part="HEAD"
        ),
        now - 1 * DAY,
    )
    dx = _store(
        index,
        [write_projection(np.abs(xx + yy).astype(float), out_dir=tmp_path / "dx")],
        now - 1 * DAY,
    )
    old_study = _store(
        index,
        write_ct_series(np.stack([disk] * 2), spacing=(1, 1, 1), out_dir=tmp_path / "old"),
        now - 30 * DAY,
    )
    # the chest study was routed under OLD: its record is what the live router writes
    jobs = JobStore(tmp_path / "index.sqlite")
    old_rules = dicom_rules.parse(OLD)
    chest_study = index.get_study(chest)
    assert chest_study is not None
    from node.routing.dispatch import routing_record, series_inputs

    decisions = dicom_rules.route(old_rules, series_inputs(chest_study), destinations=["pacs"])
    jobs.record_routing(
        chest,
        1,
        rules_sha256="old",
        decisions=routing_record(decisions, [], {}),
    )
    # headers only: the instance files are gone
    for sub in ("chest", "head", "dx", "old"):
        for f in (tmp_path / sub).iterdir():
            f.unlink()
    (series,) = chest_study.series
    return Stored(index, jobs, now, chest, head, dx, old_study, series.series_uid)


def test_replay_diffs_current_against_new(stored: Stored) -> None:
    index, jobs = stored.index, stored.jobs
    before = jobs.list_jobs()
    out = replay(
        index,
        dicom_rules.parse(NEW),
        since=stored.now - 7 * DAY,
        current_rules=dicom_rules.parse(OLD),
        stored=jobs.routing_decisions,
        destinations=["pacs", "viewer", "archive"],
    ).to_json()
    by_uid = {s["study_uid"]: s for s in out["studies"]}
    # the 30-day-old study is outside the window
    assert set(by_uid) == {stored.chest, stored.head, stored.dx}
    chest_series = stored.chest_series
    chest = by_uid[stored.chest]
    assert chest["current_source"] == "stored"
    assert chest["diff"]["models_added"] == [
        {"series_uid": chest_series, "model": "nodule-det", "deliver": ["pacs"]}
    ]
    assert chest["diff"]["models_removed"] == []
    assert chest["diff"]["destinations_changed"] == [
        {
            "series_uid": chest_series,
            "model": "lung-seg",
            "before": ["pacs"],
            "after": ["pacs", "viewer"],
        }
    ]
    assert chest["diff"]["forwards_removed"] == [
        {"series_uid": chest_series, "destination": "archive"}
    ]
    assert chest["extra_runs"] == 1
    head = by_uid[stored.head]
    assert head["current_source"] == "rules" and head["changed"] is False
    dx = by_uid[stored.dx]
    assert dx["diff"]["models_removed"][0]["model"] == "cxr"
    assert dx["diff"]["newly_ignored"] == [dx["diff"]["models_removed"][0]["series_uid"]]
    assert dx["extra_runs"] == -1
    assert out["totals"]["studies"] == 3 and out["totals"]["changed"] == 2
    assert out["totals"]["current_runs"] == 3 and out["totals"]["new_runs"] == 3
    assert sum(d["extra_runs"] for d in out["per_day"]) == 0
    assert len(out["per_day"]) == 8  # every day of the window, empty days included
    day_of_chest = chest["received"][:10]
    assert {d["day"]: d["extra_runs"] for d in out["per_day"]}[day_of_chest] == 1
    # nothing was queued and no routing was recorded
    assert jobs.list_jobs() == before
    assert jobs.routing(stored.head) is None


def test_replay_pages_and_filters(stored: Stored) -> None:
    index = stored.index
    result = replay(
        index,
        dicom_rules.parse(NEW),
        since=stored.now - 60 * DAY,
        current_rules=dicom_rules.parse(OLD),
    )
    page = result.to_json(limit=1, offset=1, changed_only=True)
    assert page["totals"]["studies"] == 4
    assert page["listed"] == 3  # chest, dx and the old chest study changed; head did not
    assert len(page["studies"]) == 1


def test_parse_since() -> None:
    assert parse_since("7d", now=1000.0 + 7 * DAY) == 1000.0
    assert parse_since("24h", now=DAY) == 0.0
    assert parse_since("2026-12-01") == parse_since("2026-12-01T00:00:00+00:00")
    with pytest.raises(ValueError, match="give a duration"):
        parse_since("last week")
    with pytest.raises(ValueError, match="positive"):
        parse_since("0d")


def test_worker_processes_give_the_same_replay(stored: Stored) -> None:
    args = {
        "since": stored.now - 60 * DAY,
        "until": stored.now + 1,
        "current_rules": dicom_rules.parse(OLD),
        "stored": stored.jobs.routing_decisions,
        "destinations": ["pacs", "viewer", "archive"],
    }
    serial = replay(stored.index, dicom_rules.parse(NEW), **args).to_json(changed_only=False)  # type: ignore[arg-type]
    parallel = replay(
        stored.index,
        dicom_rules.parse(NEW),
        workers=2,
        parallel_min=2,
        **args,  # type: ignore[arg-type]
    ).to_json(changed_only=False)
    assert len(serial["studies"]) == 4
    for out in (serial, parallel):
        out.pop("seconds")
    assert parallel == serial


class _FailingIndex:
    """An index whose query fails (a locked or corrupt database)."""

    def studies_received_raw(self, since: float, until: float) -> list[object]:
        raise RuntimeError("database is locked")


def test_replay_puts_back_the_garbage_collector_thresholds(stored: Stored) -> None:
    before = gc.get_threshold()
    result = replay(stored.index, dicom_rules.parse(NEW), since=stored.now - 60 * DAY)
    result.to_json()
    assert gc.get_threshold() == before
    with pytest.raises(RuntimeError, match="locked"):
        replay(_FailingIndex(), dicom_rules.parse(NEW), since=0.0)  # type: ignore[arg-type]
    assert gc.get_threshold() == before
    # two replays overlapping (two API requests): the first to end does not restore early,
    # the last one restores what was there before either
    from node.routing.replay import _rare_full_collections

    first, second = _rare_full_collections(), _rare_full_collections()
    first.__enter__()
    during = gc.get_threshold()
    assert during[2] >= 1000
    second.__enter__()
    first.__exit__(None, None, None)
    assert gc.get_threshold() == during
    second.__exit__(None, None, None)
    assert gc.get_threshold() == before


def test_routing_records_read_at_once_give_the_same_replay(stored: Stored) -> None:
    """``JobStore.routing_decisions_many`` (one query per 500 studies) equals the per-study
    read, also for a study routed twice (its newest generation counts)."""
    jobs = stored.jobs
    first = jobs.routing_decisions(stored.chest)
    assert first is not None
    jobs.record_routing(
        stored.chest,
        2,
        rules_sha256="newer",
        decisions={**first["decisions"], "decisions": []},  # the second completion: nothing
    )
    uids = [stored.chest, stored.head, stored.dx, stored.old, "1.2.3.unknown"]
    many = jobs.routing_decisions_many(uids)
    assert set(many) == {stored.chest}
    assert many[stored.chest] == jobs.routing_decisions(stored.chest)
    assert many[stored.chest]["generation"] == 2 and many[stored.chest]["rules_sha256"] == "newer"
    args = {
        "since": stored.now - 60 * DAY,
        "until": stored.now + 1,
        "current_rules": dicom_rules.parse(OLD),
        "destinations": ["pacs", "viewer", "archive"],
    }
    one = replay(stored.index, dicom_rules.parse(NEW), stored=jobs.routing_decisions, **args)  # type: ignore[arg-type]
    batch = replay(
        stored.index,
        dicom_rules.parse(NEW),
        stored_many=jobs.routing_decisions_many,
        **args,  # type: ignore[arg-type]
    )
    a, b = one.to_json(), batch.to_json()
    a.pop("seconds")
    b.pop("seconds")
    assert a == b
    chest = next(s for s in b["studies"] if s["study_uid"] == stored.chest)
    assert chest["current_source"] == "stored" and chest["current"]["model_runs"] == 0
