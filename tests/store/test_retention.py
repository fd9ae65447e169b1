"""Retention with a real spool, index, job queue and outbox, a small quota and a test clock."""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from node.config import FolderDestination, RetentionConfig
from node.delivery.outbox import Outbox
from node.delivery.queries import DELIVERY_ROWS
from node.errors import IngestError, OutOfResourcesError
from node.ingest.spool import Spool
from node.jobs.queries import JOB_ROWS
from node.jobs.store import JobStore
from node.samples.writers import write_ct_series
from node.store.index import Index
from node.store.retention import Removal, Retention
from node.types import Job


def _retention(*args: object, **kwargs: object) -> Retention:
    """Retention as the node wires it: the job queue and the outbox own their rows."""
    return Retention(*args, study_rows=(JOB_ROWS, DELIVERY_ROWS), **kwargs)  # type: ignore[arg-type]


DAY = 86400.0


class Site:
    """A data directory with real stores, filled study by study."""

    def __init__(self, root: Path, quota: int | None = None) -> None:
        self.root = root
        self.data = root / "data"
        self.index = Index(self.data / "index.sqlite")
        self.spool = Spool(self.data, self.index, quota_bytes=quota, min_free_bytes=0)
        self.spool.start()
        self.jobs = JobStore(self.data / "index.sqlite")
        self.outbox = Outbox(
            self.data / "index.sqlite",
            {"archive": FolderDestination(type="folder", path=root / "archive")},
        )
        self.n = 0

    def files(self, slices: int = 3) -> list[Path]:
        self.n += 1
        hu = np.full((slices, 16, 16), float(self.n), dtype=np.float32)
        return write_ct_series(hu, spacing=(2.0, 1.0, 1.0), out_dir=self.root / f"in{self.n}")

    def receive(self, files: list[Path]) -> str:
        for f in files:
            out = self.spool.store(f.read_bytes(), calling_aet="T", source="dimse")
        return out.instance.study_uid

    def study(self, *, complete: bool = True, routed: bool = True) -> str:
        uid = self.receive(self.files())
        if complete:
            gen = self.index.mark_complete(uid, forced=True)
            assert gen is not None
            if routed:
                self.jobs.record_routing(uid, gen, rules_sha256="t", decisions={})
        return uid

    def job(self, study_uid: str, *, finish: bool) -> str:
        series = self.index.study_instances(study_uid)[0].series_uid
        job = Job(
            job_id=f"j-{study_uid[-12:]}",
            study_uid=study_uid,
            series_uids=(series,),
            model="m",
            rule="r",
        )
        self.jobs.submit([job])
        if finish:
            claimed = self.jobs.claim("w")
            assert claimed is not None and claimed.job_id == job.job_id
            out = self.data / "results" / job.job_id
            out.mkdir(parents=True)
            src = self.index.study_instances(study_uid)[0].path
            (out / "000-seg.dcm").write_bytes(src.read_bytes())
            self.jobs.finish(
                job.job_id,
                ok=True,
                outputs={"objects": [{"path": f"results/{job.job_id}/000-seg.dcm"}]},
            )
        return job.job_id

    def close(self) -> None:
        self.outbox.close()
        self.spool.stop()
        self.index.close()


@pytest.fixture
def site(tmp_path: Path) -> Iterator[Site]:
    s = Site(tmp_path)
    yield s
    s.close()


def _removed(site: Site, uid: str) -> list[dict[str, object]]:
    return [e for e in site.index.events(uid) if e["kind"] == "removed"]


def test_age_removes_only_finished_studies(site: Site) -> None:
    done = site.study()
    site.job(done, finish=True)
    queued = site.study()
    site.job(queued, finish=False)
    pending = site.study()
    path = site.index.study_instances(pending)[0].path
    site.outbox.enqueue(path, destinations=["archive"], job_id=None)
    still_open = site.study(complete=False)
    unrouted = site.study(routed=False)
    results = site.data / "results" / f"j-{done[-12:]}"
    originals = [i.path for i in site.index.study_instances(done)]
    assert results.is_dir() and all(p.is_file() for p in originals)
    size = sum(p.stat().st_size for p in originals) + (results / "000-seg.dcm").stat().st_size

    now = time.time()
    config = RetentionConfig(days=2)
    early = _retention(site.data, config, clock=lambda: now + 1.9 * DAY)
    assert early.run_once() == []

    late = _retention(site.data, config, clock=lambda: now + 2.1 * DAY)
    removed = late.run_once()
    assert [(r.study_uid, r.reason, r.instances, r.result_objects) for r in removed] == [
        (done, "age", 3, 1)
    ]
    assert removed[0].bytes_freed == size
    assert site.index.get_study(done) is None
    assert not results.exists() and not any(p.exists() for p in originals)
    assert site.jobs.list_jobs(study_uid=done) == []
    [event] = _removed(site, done)
    assert event["detail"]["reason"] == "age" and event["detail"]["jobs"] == 1
    for kept in (queued, pending, still_open, unrouted):
        assert site.index.get_study(kept) is not None
        assert all(i.path.is_file() for i in site.index.study_instances(kept))
        assert _removed(site, kept) == []


def test_low_watermark_removes_oldest_finished_first_and_ingest_resumes(tmp_path: Path) -> None:
    probe = Site(tmp_path / "probe")
    one_study = sum(f.stat().st_size for f in probe.files())
    probe.close()
    # room for about 4 studies; the spool refuses the 5th with 0xA700 (the high watermark)
    site = Site(tmp_path / "site", quota=int(one_study * 4.5))
    try:
        uids = [site.study() for _ in range(4)]
        busy = uids[0]  # the oldest, but it has a queued job: never removed
        site.job(busy, finish=False)
        with pytest.raises(OutOfResourcesError):
            site.receive(site.files())

        removals: list[str] = []

        def refreshed(r: Removal) -> None:
            removals.append(r.study_uid)
            site.spool.refresh_usage()

        free = int(one_study * 1.6)  # headroom wanted: more than one study's worth
        retention = _retention(
            site.data,
            RetentionConfig(low_watermark_bytes=free),
            quota_bytes=int(one_study * 4.5),
            free_bytes=lambda _p: 1 << 40,
            on_removed=refreshed,
        )
        assert retention.headroom_bytes() < free
        removed = retention.run_once()
        assert [r.reason for r in removed] == ["space", "space"]
        assert removals == uids[1:3]  # oldest finished first; the busy one skipped
        assert retention.headroom_bytes() >= free
        assert site.index.get_study(busy) is not None and site.index.get_study(uids[3])
        for uid in uids[1:3]:
            assert _removed(site, uid)[0]["detail"]["reason"] == "space"
        # ingest accepts again
        newest = site.receive(site.files())
        # it is still open, the headroom is below the watermark again: the next oldest goes
        assert [r.study_uid for r in retention.run_once()] == [uids[3]]
        assert site.index.get_study(newest) is not None
        assert retention.run_once() == []  # headroom above the watermark: nothing to do
    finally:
        site.close()


def test_disabled_by_default_and_background_thread(site: Site) -> None:
    assert not _retention(site.data, RetentionConfig()).enabled
    uid = site.study()
    now = time.time()
    retention = _retention(
        site.data, RetentionConfig(days=0, interval_seconds=0.05), clock=lambda: now + 1
    )
    retention.start()
    try:
        deadline = time.monotonic() + 10
        while site.index.get_study(uid) is not None:
            assert time.monotonic() < deadline, "background pass did not remove the study"
            time.sleep(0.02)
    finally:
        retention.stop()
    assert _removed(site, uid)


def test_node_runs_retention_in_the_background(tmp_path: Path) -> None:
    from node.app import Node
    from node.config import parse_config

    rules = tmp_path / "rules.yaml"
    rules.write_text("version: 1\nrules:\n  - name: nothing\n    then: ignore\n")
    config = parse_config(
        f"node: {{data_dir: {tmp_path / 'data'}, dicom_port: 0, min_free_bytes: 0}}\n"
        f"rules: {rules}\nstudy: {{stable_seconds: 0.2}}\n"
        "retention: {days: 0, interval_seconds: 0.1}\n"
    )
    node = Node(config, serve_http=False)
    node.start()
    try:
        files = write_ct_series(
            np.zeros((2, 8, 8), dtype=np.float32), spacing=(1.0, 1.0, 1.0), out_dir=tmp_path / "in"
        )
        for f in files:
            out = node.spool.store(f.read_bytes(), calling_aet="T", source="dimse")
        uid = out.instance.study_uid
        deadline = time.monotonic() + 30
        while not any(e["kind"] == "removed" for e in node.index.events(uid)):
            assert time.monotonic() < deadline, "the node's retention thread removed nothing"
            time.sleep(0.05)
        assert node.index.get_study(uid) is None
        assert node.jobs.routed_generation(uid) == 0  # routing rows went with the study
        assert node.spool.store(files[0].read_bytes(), calling_aet="T", source="dimse")
    finally:
        node.stop()


def test_a_folder_pruned_while_an_instance_is_placed_is_made_again(
    site: Site, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Retention prunes the empty folders of a study it removed without the spool's lock; an
    instance of the same study arriving then must land, not fail with 'No such file'."""
    import os

    import node.ingest.spool as spool_mod

    files = site.files(2)
    study_uid = site.receive(files[:1])
    study_dir = next((site.data / "studies").iterdir())
    assert study_dir.name == study_uid
    gen = site.index.mark_complete(study_uid, forced=True)
    assert gen is not None
    site.jobs.record_routing(study_uid, gen, rules_sha256="t", decisions={})
    [removed] = _retention(site.data, RetentionConfig(days=0)).run_once()
    assert removed.study_uid == study_uid and not study_dir.exists()
    site.spool.refresh_usage()

    real_replace, real_mkdir = os.replace, Path.mkdir
    pruned = {"replace": 0, "mkdir": 0}

    def prune_then_replace(src: object, dst: object) -> None:
        if pruned["replace"] == 0:  # the pruner wins the first rename: both levels go
            pruned["replace"] += 1
            Path(dst).parent.rmdir()  # type: ignore[arg-type]
            Path(dst).parent.parent.rmdir()  # type: ignore[arg-type]
        real_replace(src, dst)  # type: ignore[arg-type]

    def prune_then_mkdir(self: Path, *args: object, **kwargs: object) -> None:
        if self.parent == study_dir and pruned["mkdir"] == 0:  # and the study folder again,
            pruned["mkdir"] += 1  # between its check and the series folder's mkdir
            study_dir.rmdir()
        real_mkdir(self, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(spool_mod.os, "replace", prune_then_replace)
    monkeypatch.setattr(Path, "mkdir", prune_then_mkdir)
    out = site.spool.store(files[1].read_bytes(), calling_aet="T", source="dimse")
    assert pruned == {"replace": 1, "mkdir": 1}
    assert out.status == "stored" and out.instance.path.is_file()
    assert out.instance.path.read_bytes() == files[1].read_bytes()


def test_quarantined_files_expire_with_an_event(site: Site) -> None:
    good = site.files(1)[0].read_bytes()
    broken = good[:200]  # the preamble and a cut file meta: refused and quarantined
    with pytest.raises(IngestError):
        site.spool.store(broken, calling_aet="T", source="dimse")
    [old] = sorted((site.data / "quarantine").glob("*.dcm"))
    assert old.with_suffix(".json").is_file()
    now = time.time()
    later = _retention(site.data, RetentionConfig(days=30, quarantine_days=1), clock=lambda: now)
    assert later.run_once() == [] and old.is_file()

    # a second refusal, stamped a day later, must outlive the first
    with pytest.raises(IngestError):
        site.spool.store(good[:300], calling_aet="T", source="dimse")
    [young] = [p for p in (site.data / "quarantine").glob("*.dcm") if p != old]
    reason = json.loads(young.with_suffix(".json").read_text())
    reason["received_at"] = now + DAY
    young.with_suffix(".json").write_text(json.dumps(reason))

    expire = _retention(
        site.data, RetentionConfig(quarantine_days=1), clock=lambda: now + 1.5 * DAY
    )
    assert expire.run_once() == []
    assert not old.exists() and not old.with_suffix(".json").exists()
    assert young.is_file() and young.with_suffix(".json").is_file()
    db = sqlite3.connect(site.data / "index.sqlite")
    try:
        rows = db.execute("SELECT detail FROM events WHERE kind = 'quarantine_removed'").fetchall()
    finally:
        db.close()
    assert [json.loads(d)["file"] for (d,) in rows] == [old.name]

    # without any age rule the quarantine is kept for the administrator
    assert _retention(site.data, RetentionConfig(), clock=lambda: now + 99 * DAY).run_once() == []
    assert young.is_file()


def test_a_removed_study_sent_again_is_stored_again(site: Site) -> None:
    """Retention deletes the series folders of a study it removes; the spool had them marked
    as made, so the same study sent again failed to store until the node restarted."""
    files = site.files()
    uid = site.receive(files)
    assert site.index.mark_complete(uid, forced=True) is not None
    site.jobs.record_routing(uid, 1, rules_sha256="t", decisions={})
    series_dir = site.index.study_instances(uid)[0].path.parent
    now = time.time()
    [removal] = _retention(site.data, RetentionConfig(days=0), clock=lambda: now + 1).run_once()
    assert removal.study_uid == uid and not series_dir.exists()
    assert site.receive(files) == uid
    again = site.index.study_instances(uid)
    assert len(again) == len(files) and all(i.path.is_file() for i in again)
