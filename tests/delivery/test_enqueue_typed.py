"""The stages hand the outbox typed objects (``Instance``, ``ResultObject``): it queues the same
rows as when it reads the files, without reading them."""

from __future__ import annotations

import random
import sqlite3
from pathlib import Path

import pydicom
import pytest

from node.config import FolderDestination
from node.delivery import Outbox
from node.errors import NotFoundError, ResultError
from node.results import result_object
from node.types import ResultObject
from tests.delivery.conftest import SimClock
from tests.util import stored_instance

ROW = (
    "destination, sop_uid, sop_class_uid, study_uid, series_uid, transfer_syntax_uid, path,"
    " fallback_path, job_id, state, next_attempt_at"
)


def _outbox(db: Path, clock: SimClock, out: Path) -> Outbox:
    folder = FolderDestination(type="folder", path=out)
    dests = {"f": folder, "g": folder}
    return Outbox(db, dests, clock=clock, rng=random.Random(7))


def _rows(db: Path) -> list[tuple[object, ...]]:
    with sqlite3.connect(db) as conn:
        return sorted(conn.execute(f"SELECT {ROW} FROM outbox").fetchall(), key=str)


def _result(path: Path, root: Path, *, model: str = "seg") -> ResultObject:
    ds = pydicom.dcmread(path, stop_before_pixels=True)
    return result_object(ds, path.relative_to(root), model=model)


def test_results_queue_as_their_files_do_with_the_sc_as_fallback(
    tmp_path: Path, clock: SimClock, seg_file: Path, sr_file: Path, sc_file: Path
) -> None:
    files = [seg_file, sr_file, sc_file]
    root = Path(seg_file.anchor)
    by_path = _outbox(tmp_path / "a.sqlite", clock, tmp_path / "out")
    by_path.enqueue_many(
        files, destinations=["f", "g"], job_id="j-1", fallback_paths=[sc_file, sc_file, None]
    )
    typed = _outbox(tmp_path / "b.sqlite", clock, tmp_path / "out")
    ids = typed.enqueue_results(
        [_result(p, root) for p in files], destinations=["f", "g"], job_id="j-1", root=root
    )
    assert len(ids) == 6
    rows = _rows(tmp_path / "b.sqlite")
    assert rows == _rows(tmp_path / "a.sqlite")
    fallbacks = {(r[1], r[7]) for r in rows}
    sc_path = str(sc_file.resolve())
    assert {f for _, f in fallbacks} == {sc_path, None}  # SEG and SR fall back to the SC
    by_path.close()
    typed.close()


def test_originals_queue_as_their_files_do(
    tmp_path: Path, clock: SimClock, chest_ct: list[Path]
) -> None:
    by_path = _outbox(tmp_path / "a.sqlite", clock, tmp_path / "out")
    by_path.enqueue_many(chest_ct[:5], destinations=["f"], job_id=None)
    typed = _outbox(tmp_path / "b.sqlite", clock, tmp_path / "out")
    typed.enqueue_instances([stored_instance(p) for p in chest_ct[:5]], destinations=["f"])
    assert _rows(tmp_path / "b.sqlite") == _rows(tmp_path / "a.sqlite")
    assert len(_rows(tmp_path / "b.sqlite")) == 5
    by_path.close()
    typed.close()


def test_typed_objects_are_taken_as_they_are(
    tmp_path: Path, clock: SimClock, seg_file: Path
) -> None:
    """No file is read for its UIDs: a path the outbox could not read is queued as described
    (the sender finds out at delivery time), while enqueueing that path itself fails."""
    junk = tmp_path / "results" / "000-seg.dcm"
    junk.parent.mkdir()
    junk.write_bytes(b"not DICOM")
    box = _outbox(tmp_path / "a.sqlite", clock, tmp_path / "out")
    with pytest.raises(ResultError):
        box.enqueue_many([junk], destinations=["f"], job_id="j")
    described = _result(seg_file, Path(seg_file.anchor))
    moved = ResultObject(**{**_fields(described), "path": Path("results/000-seg.dcm")})
    (rid,) = box.enqueue_results([moved], destinations=["f"], job_id="j", root=tmp_path)
    row = box.get(rid)
    assert row.path == junk.resolve() and row.sop_uid == described.sop_uid
    with pytest.raises(NotFoundError):
        box.enqueue_results([moved], destinations=["nope"], job_id="j", root=tmp_path)
    with pytest.raises(NotFoundError):
        box.enqueue_instances([stored_instance(seg_file)], destinations=["nope"])
    box.close()


def _fields(obj: ResultObject) -> dict[str, object]:
    return {f: getattr(obj, f) for f in ResultObject.__dataclass_fields__}
