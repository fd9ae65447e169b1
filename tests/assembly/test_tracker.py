"""Study completion: stable window, forced, late instances re-open, timers rebuilt on restart."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from node.assembly.tracker import StudyTracker
from node.errors import NotFoundError
from node.ingest.spool import Spool
from node.store.index import Index
from node.types import Study
from tests.ingest.synthetic import write_ct_series
from tests.util import wait_until


class Completed:
    """Collects completed studies (thread-safe)."""

    def __init__(self) -> None:
        self.studies: list[Study] = []
        self._lock = threading.Lock()

    def __call__(self, study: Study) -> None:
        with self._lock:
            self.studies.append(study)

    def generations(self, uid: str) -> list[int]:
        with self._lock:
            return [s.generation for s in self.studies if s.study_uid == uid]


@pytest.fixture
def parts(tmp_path: Path) -> Iterator[tuple[Index, Spool]]:
    index = Index(tmp_path / "data" / "index.sqlite")
    spool = Spool(tmp_path / "data", index)
    yield index, spool
    spool.stop()
    index.close()


def _tracker(index: Index, spool: Spool, done: Completed, stable: float) -> StudyTracker:
    tracker = StudyTracker(index, stable_seconds=stable, on_complete=done)
    spool.add_listener(lambda o: tracker.instance_stored(o.instance))
    tracker.start()
    return tracker


def test_stable_window_completes_once_quiet(parts: tuple[Index, Spool], tmp_path: Path) -> None:
    index, spool = parts
    done = Completed()
    tracker = _tracker(index, spool, done, stable=0.6)
    try:
        files = write_ct_series(tmp_path / "s", 4, size=16)
        uid = None
        for f in files:
            uid = spool.store(f.read_bytes(), calling_aet=None, source="t").instance.study_uid
        assert uid is not None
        assert done.generations(uid) == []  # not before the window passed
        wait_until(lambda: done.generations(uid) == [1], timeout=10, what="completion")
        study = done.studies[0]
        assert study.series[0].instance_count == 4
        assert study.series[0].modality == "CT" and study.series[0].body_part == "CHEST"
        row = index.study_row(uid)
        assert row is not None and row["state"] == "complete" and row["generation"] == 1
        assert [e["kind"] for e in index.events(uid)][-1] == "study-completed"
    finally:
        tracker.stop()


def test_window_restarts_with_each_instance(parts: tuple[Index, Spool], tmp_path: Path) -> None:
    index, spool = parts
    done = Completed()
    tracker = _tracker(index, spool, done, stable=1.0)
    try:
        files = write_ct_series(tmp_path / "s", 6, size=16)
        uid = spool.store(files[0].read_bytes(), calling_aet=None, source="t").instance.study_uid
        stop = threading.Event()
        for f in files[1:]:
            stop.wait(0.3)  # arrivals closer than the window keep the study open
            spool.store(f.read_bytes(), calling_aet=None, source="t")
            assert done.generations(uid) == []
        wait_until(lambda: done.generations(uid) == [1], timeout=10, what="completion")
    finally:
        tracker.stop()


def test_forced_completion_and_late_instance_reopens(
    parts: tuple[Index, Spool], tmp_path: Path
) -> None:
    index, spool = parts
    done = Completed()
    tracker = _tracker(index, spool, done, stable=0.5)
    try:
        files = write_ct_series(tmp_path / "s", 3, size=16)
        uid = spool.store(files[0].read_bytes(), calling_aet=None, source="t").instance.study_uid
        assert tracker.complete(uid) == 1
        assert done.generations(uid) == [1]
        assert tracker.complete(uid) is None  # already complete: nothing changes
        with pytest.raises(NotFoundError):
            tracker.complete("1.2.3.999")
        spool.store(files[1].read_bytes(), calling_aet=None, source="t")
        row = index.study_row(uid)
        assert row is not None and row["state"] == "open"
        wait_until(lambda: done.generations(uid) == [1, 2], timeout=10, what="re-completion")
        assert done.studies[-1].series[0].instance_count == 2
        kinds = [e["kind"] for e in index.events(uid)]
        assert kinds == ["stored", "study-completed", "study-reopened", "stored", "study-completed"]
        forced = [
            e["detail"]["forced"] for e in index.events(uid) if e["kind"] == "study-completed"
        ]
        assert forced == [True, False]
    finally:
        tracker.stop()


def test_restart_rebuilds_timers_from_the_index(tmp_path: Path) -> None:
    files = write_ct_series(tmp_path / "s", 2, size=16)
    index = Index(tmp_path / "data" / "index.sqlite")
    spool = Spool(tmp_path / "data", index)
    done = Completed()
    tracker = _tracker(index, spool, done, stable=1.0)
    uid = spool.store(files[0].read_bytes(), calling_aet=None, source="t").instance.study_uid
    tracker.stop()  # "crash" before the window ends: nothing completed
    spool.stop()
    index.close()
    assert done.studies == []

    index = Index(tmp_path / "data" / "index.sqlite")
    done2 = Completed()
    tracker2 = StudyTracker(index, stable_seconds=1.0, on_complete=done2)
    tracker2.start()
    try:
        wait_until(lambda: done2.generations(uid) == [1], timeout=10, what="rebuilt timer")
    finally:
        tracker2.stop()
        index.close()


def test_failing_consumer_does_not_stop_assembly(
    parts: tuple[Index, Spool], tmp_path: Path
) -> None:
    index, spool = parts
    calls: list[str] = []

    def broken(study: Study) -> None:
        calls.append(study.study_uid)
        raise RuntimeError("consumer bug")

    tracker = StudyTracker(index, stable_seconds=0.2, on_complete=broken)
    spool.add_listener(lambda o: tracker.instance_stored(o.instance))
    tracker.start()
    try:
        a = write_ct_series(tmp_path / "a", 1, size=16)[0]
        b = write_ct_series(tmp_path / "b", 1, size=16)[0]
        spool.store(a.read_bytes(), calling_aet=None, source="t")
        spool.store(b.read_bytes(), calling_aet=None, source="t")
        wait_until(lambda: len(calls) == 2, timeout=10, what="both completions")
    finally:
        tracker.stop()
