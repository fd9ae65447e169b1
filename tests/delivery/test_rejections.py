"""Rejecting superseded and retracted results into real Orthancs: IOCM note by DIMSE and
STOW-RS, REST delete, withdrawn rows, exactly once, resumable (issue 18 §4)."""

from __future__ import annotations

import sqlite3
from io import BytesIO
from pathlib import Path

import httpx
import pydicom
import pytest
from pydicom.uid import generate_uid

from node.config import (
    DicomwebDestination,
    DimseDestination,
    FolderDestination,
    OrthancDestination,
)
from node.delivery import Outbox
from node.delivery.rejections import Rejections, accepts_notes
from node.delivery.senders import DestinationConfig
from node.errors import ConflictError, NotFoundError
from node.types import DeliveryState, RejectionKind
from tests.delivery.conftest import SimClock
from tests.delivery.storescp import start_storescp
from tests.peers.orthanc import OrthancPeer, start_orthanc
from tests.results.conftest import run_tool
from tests.util import wait_until

KOS_CLASS = "1.2.840.10008.5.1.4.1.1.88.59"


def _copies(sources: list[Path], out: Path) -> list[Path]:
    """The same objects as a newer result set: fresh series and SOP Instance UIDs."""
    out.mkdir(parents=True, exist_ok=True)
    series: dict[str, str] = {}
    paths = []
    for n, src in enumerate(sources):
        ds = pydicom.dcmread(src)
        ds.SeriesInstanceUID = series.setdefault(str(ds.SeriesInstanceUID), generate_uid())
        ds.SOPInstanceUID = generate_uid()
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        path = out / f"{n}.dcm"
        ds.save_as(path, enforce_file_format=True)
        paths.append(path)
    return paths


def _sops(peer: OrthancPeer) -> dict[str, str]:
    """SOP Instance UID -> SOP Class UID of every instance stored in ``peer``."""
    out = {}
    for iid in httpx.get(f"{peer.url}/instances", timeout=30).json():
        tags = httpx.get(f"{peer.url}/instances/{iid}/simplified-tags", timeout=30).json()
        out[tags["SOPInstanceUID"]] = tags["SOPClassUID"]
    return out


def _note_refs(peer: OrthancPeer, note_uid: str) -> set[str]:
    """The SOP Instance UIDs the stored rejection note ``note_uid`` references."""
    (iid,) = httpx.post(f"{peer.url}/tools/lookup", content=note_uid, timeout=30).json()
    data = httpx.get(f"{peer.url}/instances/{iid['ID']}/file", timeout=30).content
    note = pydicom.dcmread(BytesIO(data))
    title = note.ConceptNameCodeSequence[0]
    assert (title.CodeValue, title.CodingSchemeDesignator) == ("113001", "DCM")
    return {
        str(sop.ReferencedSOPInstanceUID)
        for study in note.CurrentRequestedProcedureEvidenceSequence
        for series in study.ReferencedSeriesSequence
        for sop in series.ReferencedSOPSequence
    }


@pytest.fixture
def old_set(corpus: Path) -> list[Path]:
    ref = corpus / "reference-results" / "highdicom"
    return [ref / "seg_image_ct_binary.dcm", ref / "seg_image_ct_binary_fractional.dcm"]


def _uids(paths: list[Path]) -> set[str]:
    return {str(pydicom.dcmread(p, stop_before_pixels=True).SOPInstanceUID) for p in paths}


def test_superseded_set_is_flagged_by_note_and_deleted_by_rest(
    tmp_path: Path,
    clock: SimClock,
    orthanc: OrthancPeer,
    old_set: list[Path],
    checker_tools: Path,
) -> None:
    new_set = _copies(old_set, tmp_path / "new")
    with start_orthanc(tmp_path / "rest-orthanc") as rest:
        dests: dict[str, DestinationConfig] = {
            "pacs": DimseDestination(host="127.0.0.1", port=orthanc.dicom_port, ae_title="X"),
            "web": DicomwebDestination(type="dicomweb", url=orthanc.dicomweb_url),
            "rest": OrthancDestination(type="orthanc", url=rest.url, delete_rejected=True),
        }
        box = Outbox(tmp_path / "index.sqlite", dests, clock=clock)
        rejections = Rejections(box, data_dir=tmp_path, clock=clock)
        try:
            box.enqueue_many(old_set, destinations=list(dests), job_id="j-old")
            box.run_once()
            old = _uids(old_set)
            assert old <= set(_sops(orthanc)) and old <= set(_sops(rest))

            box.enqueue_many(new_set, destinations=list(dests), job_id="j-new")
            box.run_once()
            done = rejections.reject(
                ["j-old"],
                kind=RejectionKind.SUPERSEDED,
                reason="superseded by job j-new",
                actor="node",
                superseded_by="j-new",
            )
            assert done is not None
            assert set(done.rejected_sop_uids) == old
            assert done.destinations == ("pacs", "rest", "web")
            box.run_once()

            note_uid = str(done.note_sop_uid)
            notes = box.list(job_id=done.note_id)
            assert sorted((r.destination, r.state) for r in notes) == [
                ("pacs", DeliveryState.DELIVERED),
                ("rest", DeliveryState.DELIVERED),
                ("web", DeliveryState.DELIVERED),
            ]
            # DIMSE + STOW-RS: the note is stored next to the old objects and flags them
            flagged = _sops(orthanc)
            assert flagged[note_uid] == KOS_CLASS
            assert old <= set(flagged)
            assert _note_refs(orthanc, note_uid) == old
            # REST with delete_rejected: the old objects are gone, the new ones stay
            kept = _sops(rest)
            assert not old & set(kept)
            assert _uids(new_set) <= set(kept)
            assert "deleted 2 rejected instance(s)" in str(
                next(r for r in notes if r.destination == "rest").last_error
            )
            # the note passes dciodvfy with zero errors
            assert done.note_path is not None
            out = run_tool(checker_tools, "check-dicom", done.note_path)
            assert "0 error(s)" in out.splitlines()[-1], out

            # a re-run of the old job queues the same UIDs: nothing is sent again
            box.enqueue_many(old_set, destinations=list(dests), job_id="j-old")
            assert box.run_once() == 0
            assert not old & set(_sops(rest))
            # rejecting again finds nothing left; the record is visible per job and study
            assert rejections.reject(["j-old"], kind="superseded", reason="x", actor="n") is None
            assert [r.note_id for r in rejections.list(job_id="j-old")] == [done.note_id]
            assert rejections.rejected_jobs(["j-old", "j-new"]) == {"j-old": done.note_id}
        finally:
            rejections.close()
            box.close()


def test_retraction_withdraws_unsent_rows_for_good(
    tmp_path: Path, clock: SimClock, orthanc: OrthancPeer, old_set: list[Path]
) -> None:
    dests = {"pacs": DimseDestination(host="127.0.0.1", port=orthanc.dicom_port)}
    box = Outbox(tmp_path / "index.sqlite", dests, clock=clock)
    rejections = Rejections(box, data_dir=tmp_path, clock=clock)
    try:
        box.enqueue_many(old_set, destinations=["pacs"], job_id="j-queued")
        series_uid = str(pydicom.dcmread(old_set[0], stop_before_pixels=True).SeriesInstanceUID)
        with pytest.raises(NotFoundError, match="no delivered or queued result"):
            rejections.retract("1.2.3.4", reason="wrong side", actor="user:op")
        done = rejections.retract(series_uid, reason="wrong side", actor="user:op")
        assert done.kind is RejectionKind.RETRACTED and done.actor == "user:op"
        assert done.job_ids == ("j-queued",)
        assert done.destinations == ()  # nothing had gone out: no note needed
        rows = box.list(job_id="j-queued")
        assert {r.state for r in rows} == {DeliveryState.WITHDRAWN}
        assert all(r.last_error == f"withdrawn: retracted, rejection {done.note_id}" for r in rows)
        # never sent: not by the worker, not by a retry, not by a re-enqueue
        assert box.run_once() == 0
        with pytest.raises(ConflictError, match="withdrawn"):
            box.retry(rows[0].id)
        assert box.retry_dead() == 0
        box.enqueue_many(old_set, destinations=["pacs"], job_id="j-queued")
        assert box.run_once() == 0
        assert _sops(orthanc) == {}
        with pytest.raises(ConflictError, match="rejected already"):
            rejections.retract("j-queued", reason="again", actor="user:op")
    finally:
        rejections.close()
        box.close()


def test_interrupted_rejection_is_finished_at_start_with_the_same_note(
    tmp_path: Path, clock: SimClock, orthanc: OrthancPeer, old_set: list[Path]
) -> None:
    dests = {"pacs": DimseDestination(host="127.0.0.1", port=orthanc.dicom_port)}
    box = Outbox(tmp_path / "index.sqlite", dests, clock=clock)
    rejections = Rejections(box, data_dir=tmp_path, clock=clock)
    try:
        box.enqueue_many(old_set, destinations=["pacs"], job_id="j-old")
        box.run_once()
        done = rejections.retract("j-old", reason="wrong patient", actor="user:op")
        assert done.note_path is not None
        first = done.note_path.read_bytes()
        # a crash after the record, before the note was written and queued
        conn = sqlite3.connect(tmp_path / "index.sqlite")
        with conn:
            conn.execute("UPDATE rejections SET queued_at = NULL")
            conn.execute("DELETE FROM outbox WHERE job_id = ?", (done.note_id,))
        conn.close()
        done.note_path.unlink()
        clock.advance(3600)  # later: the note keeps the time of the rejection
    finally:
        rejections.close()
        box.close()
    box = Outbox(tmp_path / "index.sqlite", dests, clock=clock)
    rejections = Rejections(box, data_dir=tmp_path, clock=clock)
    try:
        assert rejections.resume() == [done.note_id]
        assert done.note_path.read_bytes() == first
        box.run_once()
        (row,) = box.list(job_id=done.note_id)
        assert row.state is DeliveryState.DELIVERED
        assert _note_refs(orthanc, str(done.note_sop_uid)) == _uids(old_set)
        assert rejections.resume() == []
    finally:
        rejections.close()
        box.close()


def test_which_destinations_take_rejection_notes(tmp_path: Path) -> None:
    dimse = DimseDestination(host="127.0.0.1", port=104)
    assert accepts_notes(dimse)
    assert not accepts_notes(dimse.model_copy(update={"rejection_notes": False}))
    ct_only = dimse.model_copy(update={"sop_classes": ["1.2.840.10008.5.1.4.1.1.2"]})
    assert not accepts_notes(ct_only)  # it would refuse the KOS: no dead note rows
    assert accepts_notes(ct_only.model_copy(update={"sop_classes": [KOS_CLASS]}))
    rest = OrthancDestination(type="orthanc", url="http://127.0.0.1:8042")
    assert accepts_notes(rest)
    quiet = rest.model_copy(update={"rejection_notes": False})
    assert not accepts_notes(quiet)
    assert accepts_notes(quiet.model_copy(update={"delete_rejected": True}))
    assert accepts_notes(FolderDestination(type="folder", path=tmp_path))


def test_an_object_withdrawn_while_it_is_sent_gets_its_note(
    tmp_path: Path, old_set: list[Path]
) -> None:
    # storescp sleeps during each C-STORE: the rejection happens while the batch is on the wire
    with start_storescp(tmp_path / "scp", args=["-v", "--sleep-during", "2"]) as scp:
        dests = {"scp": DimseDestination(host="127.0.0.1", port=scp.port, ae_title=scp.aet)}
        box = Outbox(tmp_path / "index.sqlite", dests, poll_seconds=0.1)
        rejections = Rejections(box, data_dir=tmp_path)
        box.start()
        try:
            box.enqueue_many(old_set, destinations=["scp"], job_id="j-old")
            wait_until(
                lambda: "Received Store Request" in scp.log.read_text(errors="replace"),
                timeout=30,
                what="storescp receiving the first object",
            )
            done = rejections.retract("j-old", reason="wrong study", actor="user:op")
            assert done.destinations == ()  # nothing was delivered yet when it was recorded

            def noted() -> bool:
                rows = box.list(job_id=done.note_id)
                return [r.state for r in rows] == [DeliveryState.DELIVERED]

            wait_until(noted, timeout=60, what="the note sent after the in-flight objects")
            states = {r.sop_uid: r.state for r in box.list(job_id="j-old")}
            received = _uids(scp.files())
            assert str(done.note_sop_uid) in received
            # what reached the peer is flagged; what did not reach it stays withdrawn
            for uid, state in states.items():
                assert (state is DeliveryState.DELIVERED) == (uid in received), states
            assert DeliveryState.DELIVERED in states.values()
        finally:
            box.stop()
            rejections.close()
            box.close()


def test_a_job_run_again_with_new_objects_rejects_its_earlier_ones(
    tmp_path: Path, clock: SimClock, old_set: list[Path]
) -> None:
    """An operator retry after a new model version: the same job id, other SOP Instance UIDs.
    The earlier objects are rejected (note to the destination that has them), the new ones are
    kept; a retry with the same UIDs (the usual case) rejects nothing."""
    new_set = _copies(old_set, tmp_path / "new")
    dests = {"archive": FolderDestination(type="folder", path=tmp_path / "archive")}
    box = Outbox(tmp_path / "index.sqlite", dests, clock=clock)
    rejections = Rejections(box, data_dir=tmp_path, clock=clock)
    try:
        box.enqueue_many(old_set, destinations=["archive"], job_id="j-1")
        box.run_once()
        old, new = _uids(old_set), _uids(new_set)
        # the same objects again: nothing to reject
        assert (
            rejections.reject(["j-1"], kind="superseded", reason="r", actor="n", keep=old) is None
        )
        box.enqueue_many(new_set, destinations=["archive"], job_id="j-1")
        box.run_once()
        done = rejections.reject(
            ["j-1"],
            kind="superseded",
            reason="new run",
            actor="node",
            superseded_by="j-1",
            keep=new,
        )
        assert done is not None and set(done.rejected_sop_uids) == old
        box.run_once()
        note = box.list(job_id=done.note_id)
        assert [(r.destination, r.state) for r in note] == [("archive", DeliveryState.DELIVERED)]
        stored = {
            str(pydicom.dcmread(p, stop_before_pixels=True).SOPInstanceUID): p
            for p in (tmp_path / "archive").rglob("*")
            if p.is_file()
        }
        assert old | new | {str(done.note_sop_uid)} <= set(stored)
        # the new objects stay live: nothing rejects them, again or later
        assert not new & set(done.rejected_sop_uids)
        assert (
            rejections.reject(["j-1"], kind="superseded", reason="r", actor="n", keep=new) is None
        )
    finally:
        rejections.close()
        box.close()
