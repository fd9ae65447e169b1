"""Per-instance C-STORE statuses and a mid-batch abort, from a pynetdicom storage SCP whose
handler answers chosen statuses (a real association; the peer is third-party code)."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pydicom
from pydicom.dataset import Dataset
from pynetdicom import AE, StoragePresentationContexts, evt
from pynetdicom.events import Event

from node.config import DimseDestination
from node.delivery import Outbox
from node.delivery.base import OutcomeKind, Parcel
from node.delivery.dicomweb import _per_instance
from node.types import DeliveryState
from tests.delivery.conftest import SimClock
from tests.util import free_port


@contextmanager
def picky_scp(answer: Callable[[Event, int], int]) -> Iterator[int]:
    """A storage SCP on a free port; ``answer(event, n)`` gives the status of the n-th C-STORE."""
    ae = AE("PICKY")
    ae.supported_contexts = StoragePresentationContexts
    count = [0]
    lock = threading.Lock()

    def handle(event: Event) -> int:
        with lock:
            count[0] += 1
            n = count[0]
        return answer(event, n)

    port = free_port()
    server = ae.start_server(
        ("127.0.0.1", port), block=False, evt_handlers=[(evt.EVT_C_STORE, handle)]
    )
    assert server is not None
    try:
        yield port
    finally:
        server.shutdown()


def test_each_instance_gets_its_own_status(
    tmp_path: Path, clock: SimClock, chest_ct: list[Path]
) -> None:
    statuses = {0: 0x0000, 1: 0xB000, 2: 0xA700, 3: 0x0122, 4: 0xC000}
    files = chest_ct[:5]
    order = {str(pydicom.dcmread(f, stop_before_pixels=True).SOPInstanceUID): i
             for i, f in enumerate(files)}  # fmt: skip

    def answer(event: Event, n: int) -> int:
        return statuses[order[str(event.dataset.SOPInstanceUID)]]

    with picky_scp(answer) as port:
        dest = DimseDestination(host="127.0.0.1", port=port, ae_title="PICKY")
        box = Outbox(tmp_path / "index.sqlite", {"p": dest}, clock=clock)
        ids = box.enqueue_many(files, destinations=["p"], job_id="j")
        box.run_once()
        rows = [box.get(i) for i in ids]
        assert [r.state for r in rows] == [
            DeliveryState.DELIVERED,
            DeliveryState.DELIVERED,
            DeliveryState.PENDING,
            DeliveryState.DEAD,
            DeliveryState.PENDING,
        ]
        assert [r.last_status for r in rows] == [0x0000, 0xB000, 0xA700, 0x0122, 0xC000]
        assert "status 0xA700" in (rows[2].last_error or "")
        assert rows[2].next_attempt_at > clock()
        box.close()


def test_abort_mid_batch_keeps_what_was_delivered(
    tmp_path: Path, clock: SimClock, chest_ct: list[Path]
) -> None:
    def answer(event: Event, n: int) -> int:
        if n == 3:
            event.assoc.abort()
        return 0x0000

    with picky_scp(answer) as port:
        dest = DimseDestination(host="127.0.0.1", port=port, ae_title="PICKY")
        box = Outbox(tmp_path / "index.sqlite", {"p": dest}, clock=clock)
        ids = box.enqueue_many(chest_ct[:6], destinations=["p"], job_id="j")
        box.run_once()
        states = [box.get(i).state for i in ids]
        assert states[:2] == [DeliveryState.DELIVERED] * 2
        assert set(states[2:]) == {DeliveryState.PENDING}
        assert "association" in (box.get(ids[3]).last_error or "")
        clock.advance(3600)
        box.run_once()  # the next association delivers the rest (the SCP aborts only once)
        assert box.counts() == {"p": {"delivered": 6}}
        box.close()


def test_stow_response_maps_to_outcomes() -> None:
    def parcel(i: int) -> Parcel:
        return Parcel(i, Path("x"), f"1.2.{i}", "1.2.840.10008.5.1.4.1.1.2", "1.2", "1.2.9", "1.2")

    resp = Dataset()
    ok = Dataset()
    ok.ReferencedSOPInstanceUID = "1.2.1"
    warn = Dataset()
    warn.ReferencedSOPInstanceUID = "1.2.2"
    warn.WarningReason = 0xB000
    bad = Dataset()
    bad.ReferencedSOPInstanceUID = "1.2.3"
    bad.FailureReason = 0xA700
    never = Dataset()
    never.ReferencedSOPInstanceUID = "1.2.4"
    never.FailureReason = 0x0122
    resp.ReferencedSOPSequence = [ok, warn]
    resp.FailedSOPSequence = [bad, never]
    out = _per_instance([parcel(i) for i in range(1, 6)], resp)
    assert [o.kind for o in out] == [
        OutcomeKind.DELIVERED,
        OutcomeKind.DELIVERED,
        OutcomeKind.RETRY,
        OutcomeKind.REFUSED,
        OutcomeKind.RETRY,  # in neither list
    ]
    assert [o.status for o in out[:4]] == [0, 0xB000, 0xA700, 0x0122]
    assert all(o.kind is OutcomeKind.DELIVERED for o in _per_instance([parcel(7)], Dataset()))


def test_dicomweb_sessions_verify_tls_unless_told_not_to() -> None:
    from node.config import DicomwebDestination
    from node.web.peers import make_session

    cfg = DicomwebDestination(type="dicomweb", url="https://pacs.example/dicom-web")
    assert make_session(cfg).verify is True
    lax = make_session(cfg.model_copy(update={"verify_tls": False}))
    assert lax.verify is False
    bearer = make_session(cfg.model_copy(update={"auth": "bearer", "token": "abc"}))
    assert bearer.headers["Authorization"] == "Bearer abc"
