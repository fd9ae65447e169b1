"""ainode as a UPS DIMSE Task Performer (issue 23 section 1, source ``type: ups-dimse``).

Two managers: ainode's own UPS DIMSE SCP (a second real node process), and a small UPS SCP
written here with pynetdicom's handlers and in-memory workitems (the independent peer).  The
input study is in a real Orthanc (``archive``), named by its Retrieve AE Title in the Input
Information Sequence and fetched with C-GET; the performer forwards it by its rules and
completes the workitem with N-SET (progress, Output Information Sequence) and N-ACTION.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pydicom
import pytest
from pydicom.dataset import Dataset
from pydicom.uid import generate_uid
from pynetdicom import AE, evt
from pynetdicom.association import Association
from pynetdicom.presentation import AllStoragePresentationContexts

from node.ingest.ups_datasets import output_information
from node.ingest.ups_scp import UPS_PULL, UPS_PUSH, UPS_WATCH
from node.store.ups import UpsState, check_final
from tests.api.upsdata import workitem
from tests.peers.node import NodeProcess, start_node
from tests.pull.conftest import Archive
from tests.util import free_port, wait_until

pytestmark = pytest.mark.slow

TIMEOUT = 120  # seconds: DIMSE answers and workitems on a loaded CI box


def _input(archive: Archive) -> dict[str, Any]:
    """An Input Information Sequence item naming the study and its Retrieve AE Title."""
    return {
        "0020000D": {"vr": "UI", "Value": [archive.study_uid]},
        "0040E021": {"vr": "SQ", "Value": [{"00080054": {"vr": "AE", "Value": ["ORTHANC"]}}]},
    }


def _code(value: str) -> dict[str, Any]:
    return {
        "vr": "SQ",
        "Value": [
            {
                "00080100": {"vr": "SH", "Value": [value]},
                "00080102": {"vr": "SH", "Value": ["99AINODE"]},
                "00080104": {"vr": "LO", "Value": [value]},
            }
        ],
    }


def _workitem(archive: Archive, code: str) -> Dataset:
    return Dataset.from_json(
        workitem(
            t00404021={"vr": "SQ", "Value": [_input(archive)]},
            t0020000D={"vr": "UI", "Value": [archive.study_uid]},
            t00404018=_code(code),
        )
    )


def _performer_config(
    tmp: Path, archive: Archive, *, port: int, ae_title: str, code: str
) -> dict[str, Any]:
    rules = tmp / "rules.yaml"
    rules.write_text("version: 1\nrules:\n  - name: back\n    then: {send_to: back}\n")
    return {
        "node": {"ae_title": "AINODE", "dicom_port": archive.node_port},
        "rules": str(rules),
        "study": {"stable_seconds": 3600},
        "sources": {
            "pacs": {
                "type": "dimse",
                "host": "127.0.0.1",
                "port": archive.orthanc.dicom_port,
                "ae_title": "ORTHANC",
            },
            "ris": {
                "type": "ups-dimse",
                "host": "127.0.0.1",
                "port": port,
                "ae_title": ae_title,
                "codes": [code],
                "station": "AINODE-1",
                "poll_seconds": 0.3,
                "method": "c-get",
                "result_timeout_seconds": 120,
            },
        },
        "destinations": {"back": {"type": "folder", "path": str(tmp / "results")}},
    }


def _connect(port: int, called: str) -> Association:
    ae = AE(ae_title="TESTSCU")
    for sop_class in (UPS_PUSH, UPS_PULL, UPS_WATCH):
        ae.add_requested_context(sop_class)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 60
    assoc = ae.associate("127.0.0.1", port, ae_title=called)
    assert assoc.is_established
    return assoc


def _n_get(port: int, called: str, uid: str) -> Dataset:
    assoc = _connect(port, called)
    try:
        status, ds = assoc.send_n_get([], UPS_PUSH, uid)
    finally:
        assoc.release()
    assert status.Status == 0x0000 and ds is not None
    return ds


def _searches(manager: NodeProcess) -> int:
    """The C-FIND searches of AINODE the manager audited."""
    path = manager.data_dir / "audit.log"
    records = [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []
    return sum(
        1
        for r in records
        if r["event"] == "phi.viewed"
        and r.get("purpose") == "C-FIND UPS"
        and r["actor"] == "dicom:AINODE"
    )


def _sop_uids(archive: Archive) -> set[str]:
    return {str(pydicom.dcmread(f, stop_before_pixels=True).SOPInstanceUID) for f in archive.files}


@pytest.fixture(scope="module")
def manager(tmp_path_factory: pytest.TempPathFactory, archive: Archive) -> Iterator[NodeProcess]:
    tmp = tmp_path_factory.mktemp("ups-dimse-manager")
    node = {
        "ae_title": "MANAGER",
        "allowed_calling_aets": ["AINODE", "TESTSCU"],
        "ups_dimse": {
            "enabled": True,
            # the performers of these tests listen as AINODE on the archive's node port
            "event_aets": {"AINODE": {"host": "127.0.0.1", "port": archive.node_port}},
        },
    }
    with start_node(tmp, node=node) as peer:
        yield peer


def test_performer_completes_a_workitem_of_ainodes_ups_scp(
    manager: NodeProcess, archive: Archive, tmp_path: Path
) -> None:
    assoc = _connect(manager.dicom_port, "MANAGER")
    uid = str(generate_uid())
    try:
        status, _ = assoc.send_n_create(_workitem(archive, "LUNG-AI"), UPS_PUSH, uid)
        assert status.Status == 0x0000
        # a workitem for another code is left alone
        other = str(generate_uid())
        status, _ = assoc.send_n_create(_workitem(archive, "OTHER-AI"), UPS_PUSH, other)
        assert status.Status == 0x0000
        # an input whose Retrieve AE Title the performer does not know cannot run
        unknown = _workitem(archive, "LUNG-AI")
        unknown.InputInformationSequence[0].DICOMRetrievalSequence[0].RetrieveAETitle = "NOWHERE"
        lost = str(generate_uid())
        status, _ = assoc.send_n_create(unknown, UPS_PUSH, lost)
        assert status.Status == 0x0000
    finally:
        assoc.release()
    cfg = _performer_config(
        tmp_path, archive, port=manager.dicom_port, ae_title="MANAGER", code="LUNG-AI"
    )
    with start_node(tmp_path / "performer", **cfg):

        def final() -> bool:
            states = [
                str(_n_get(manager.dicom_port, "MANAGER", u).ProcedureStepState)
                for u in (uid, lost)
            ]
            return all(state in ("COMPLETED", "CANCELED") for state in states)

        wait_until(final, timeout=TIMEOUT, what="workitem final")
    ds = _n_get(manager.dicom_port, "MANAGER", uid)
    assert ds.ProcedureStepState == "COMPLETED", ds
    as_json = ds.to_json_dict()
    assert check_final(as_json, UpsState.COMPLETED) == []
    performed = ds.UnifiedProcedureStepPerformedProcedureSequence[0]
    assert performed.PerformedWorkitemCodeSequence[0].CodeValue == "LUNG-AI"
    outputs = [Dataset.from_json(i) for i in output_information(as_json)]
    got = {str(r.ReferencedSOPInstanceUID) for o in outputs for r in o.ReferencedSOPSequence}
    assert got == _sop_uids(archive)
    progress = ds.ProcedureStepProgressInformationSequence[0]
    assert progress.ProcedureStepProgress == 90
    assert progress.ProcedureStepProgressDescription == "results delivered; completing"
    assert _n_get(manager.dicom_port, "MANAGER", other).ProcedureStepState == "SCHEDULED"
    canceled = _n_get(manager.dicom_port, "MANAGER", lost)
    assert canceled.ProcedureStepState == "CANCELED"
    assert check_final(canceled.to_json_dict(), UpsState.CANCELED) == []
    why = canceled.ProcedureStepProgressInformationSequence[0]
    assert "NOWHERE" in why.ReasonForCancellation
    code = why.ProcedureStepDiscontinuationReasonCodeSequence[0]
    assert (code.CodeValue, code.CodingSchemeDesignator) == ("110523", "DCM")


def test_event_report_triggers_the_claim_and_a_cancel_request_is_honoured(
    manager: NodeProcess, archive: Archive, tmp_path: Path
) -> None:
    """With a poll interval of 10 minutes only the manager's N-EVENT-REPORT (State Report) can
    start the work; the destination is down, so the workitem waits IN PROGRESS until the
    manager's cancel request (Cancel Requested report) makes the performer cancel it."""
    cfg = _performer_config(
        tmp_path, archive, port=manager.dicom_port, ae_title="MANAGER", code="EVT-AI"
    )
    cfg["sources"]["ris"]["poll_seconds"] = 600
    down = {"type": "dimse", "host": "127.0.0.1", "port": free_port(), "ae_title": "DOWN"}
    cfg["destinations"]["back"] = down
    # a workitem whose input is not ready: found by every search (so the manager audits it),
    # never claimed
    waiting = Dataset.from_json(
        workitem(
            t00404021={"vr": "SQ", "Value": [_input(archive)]},
            t00404018=_code("EVT-AI"),
            t00404041={"vr": "CS", "Value": ["UNAVAILABLE"]},
        )
    )
    waiting_uid = str(generate_uid())
    assoc = _connect(manager.dicom_port, "MANAGER")
    try:
        assert assoc.send_n_create(waiting, UPS_PUSH, waiting_uid)[0].Status == 0x0000
    finally:
        assoc.release()
    searches = _searches(manager)
    with start_node(tmp_path / "performer", **cfg) as node:
        # the performer subscribes, then searches (audited by the manager: C-FIND reads PHI);
        # a workitem created after both is found by its State Report only
        wait_until(
            lambda: (
                '"event": "performer.subscribed"' in node.log_text()
                and _searches(manager) > searches
            ),
            timeout=TIMEOUT,
            what="subscribed to the manager, first search done",
        )
        uid = str(generate_uid())
        assoc = _connect(manager.dicom_port, "MANAGER")
        try:
            status, _ = assoc.send_n_create(_workitem(archive, "EVT-AI"), UPS_PUSH, uid)
            assert status.Status == 0x0000
        finally:
            assoc.release()

        def progress() -> int | None:
            seq = _n_get(manager.dicom_port, "MANAGER", uid).get(
                "ProcedureStepProgressInformationSequence"
            )
            return int(seq[0].ProcedureStepProgress) if seq else None

        wait_until(lambda: progress() == 40, timeout=TIMEOUT, what="claimed on its State Report")
        assoc = _connect(manager.dicom_port, "MANAGER")
        try:
            reason = Dataset()
            reason.ReasonForCancellation = "ordered twice"
            status, _ = assoc.send_n_action(reason, 2, UPS_PUSH, uid)
            assert status.Status == 0x0000
        finally:
            assoc.release()
        wait_until(
            lambda: _n_get(manager.dicom_port, "MANAGER", uid).ProcedureStepState == "CANCELED",
            timeout=TIMEOUT,
            what="canceled on the manager's request",
        )
    why = _n_get(manager.dicom_port, "MANAGER", uid).ProcedureStepProgressInformationSequence[0]
    assert why.ReasonForCancellation == "canceled on the manager's request: ordered twice"
    assert _n_get(manager.dicom_port, "MANAGER", waiting_uid).ProcedureStepState == "SCHEDULED"


@dataclass
class MemoryUps:
    """A UPS SCP in the test process: pynetdicom handlers over in-memory workitems."""

    port: int
    items: dict[str, Dataset] = field(default_factory=dict)
    claims: dict[str, str] = field(default_factory=dict)
    log: list[tuple[str, str, str | None]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def on_find(self, event: evt.Event) -> Iterator[tuple[int, Dataset | None]]:
        query = event.identifier
        wanted = query.get("ScheduledWorkitemCodeSequence") or []
        code = wanted[0].get("CodeValue") if wanted else None
        with self.lock:
            found = [
                ds
                for ds in self.items.values()
                if ds.ProcedureStepState == query.get("ProcedureStepState", ds.ProcedureStepState)
                and (not code or ds.ScheduledWorkitemCodeSequence[0].CodeValue == code)
            ]
        for ds in found:
            yield 0xFF00, ds
        yield 0x0000, None

    def on_get(self, event: evt.Event) -> tuple[int, Dataset | None]:
        with self.lock:
            ds = self.items.get(str(_req(event).RequestedSOPInstanceUID))
        return (0x0000, ds) if ds is not None else (0xC307, None)

    def on_set(self, event: evt.Event) -> tuple[int, Dataset | None]:
        uid = str(_req(event).RequestedSOPInstanceUID)
        changes = event.modification_list
        with self.lock:
            ds = self.items.get(uid)
            if ds is None:
                return 0xC307, None
            if ds.ProcedureStepState != "IN PROGRESS":
                return 0xC310, None
            if changes.get("TransactionUID") != self.claims.get(uid):
                return 0xC301, None
            for element in changes:
                if element.keyword != "TransactionUID":
                    ds[element.tag] = element
            self.log.append(("set", uid, changes.get("TransactionUID")))
        return 0x0000, None

    def on_action(self, event: evt.Event) -> tuple[int, Dataset | None]:
        uid = str(_req(event).RequestedSOPInstanceUID)
        info = event.action_information
        if _req(event).ActionTypeID != 1:
            return 0x0123, None
        wanted, txn = str(info.ProcedureStepState), str(info.TransactionUID)
        with self.lock:
            ds = self.items.get(uid)
            if ds is None:
                return 0xC307, None
            state = ds.ProcedureStepState
            if state == "SCHEDULED" and wanted == "IN PROGRESS":
                self.claims[uid] = txn
            elif state == "IN PROGRESS" and wanted == "IN PROGRESS":
                return 0xC302, None
            elif state != "IN PROGRESS":
                return 0xC310 if state == "SCHEDULED" else 0xC300, None
            elif txn != self.claims.get(uid):
                return 0xC301, None
            ds.ProcedureStepState = wanted
            self.log.append((wanted, uid, txn))
        return 0x0000, None


@pytest.fixture
def memory_ups() -> Iterator[MemoryUps]:
    ups = MemoryUps(port=free_port())
    ae = AE(ae_title="UPSSCP")
    for sop_class in (UPS_PUSH, UPS_PULL, UPS_WATCH):
        ae.add_supported_context(sop_class)
    handlers: list[Any] = [
        (evt.EVT_C_FIND, ups.on_find),
        (evt.EVT_N_GET, ups.on_get),
        (evt.EVT_N_SET, ups.on_set),
        (evt.EVT_N_ACTION, ups.on_action),
    ]
    server = ae.start_server(("127.0.0.1", ups.port), block=False, evt_handlers=handlers)
    yield ups
    assert server is not None
    server.shutdown()


def test_performer_killed_mid_task_resumes_with_its_transaction_uid(
    memory_ups: MemoryUps, archive: Archive, tmp_path: Path
) -> None:
    """Against pynetdicom's UPS SCP: kill -9 while the results wait for a destination that is
    down; the restarted performer resumes with the stored Transaction UID and completes."""
    uid = str(generate_uid())
    ds = _workitem(archive, "KILL-AI")
    ds.SOPClassUID, ds.SOPInstanceUID = UPS_PUSH, uid
    memory_ups.items[uid] = ds
    cfg = _performer_config(
        tmp_path, archive, port=memory_ups.port, ae_title="UPSSCP", code="KILL-AI"
    )
    down_port = free_port()
    down = {"type": "dimse", "host": "127.0.0.1", "port": down_port, "ae_title": "DOWN"}
    cfg["destinations"]["back"] = down
    cfg["delivery"] = {"backoff_base_seconds": 0.2, "backoff_max_seconds": 0.5}
    with start_node(tmp_path / "performer", **cfg) as node:
        wait_until(
            lambda: any(
                entry[0] == "set" and entry[1] == uid and _progress(memory_ups, uid) == 40
                for entry in memory_ups.log
            ),
            timeout=TIMEOUT,
            what="workitem claimed, input fetched",
        )
        node.kill()
        claimed = memory_ups.claims[uid]
        assert memory_ups.items[uid].ProcedureStepState == "IN PROGRESS"
        # the destination comes up: a pynetdicom Storage SCP on its port
        storage = AE(ae_title="DOWN")
        storage.supported_contexts = AllStoragePresentationContexts
        stored: list[str] = []

        def on_store(event: evt.Event) -> int:
            stored.append(str(_req(event).AffectedSOPInstanceUID))
            return 0x0000

        server = storage.start_server(
            ("127.0.0.1", down_port), block=False, evt_handlers=[(evt.EVT_C_STORE, on_store)]
        )
        try:
            node.start()
            wait_until(
                lambda: memory_ups.items[uid].ProcedureStepState in ("COMPLETED", "CANCELED"),
                timeout=TIMEOUT,
                what="workitem final",
            )
        finally:
            assert server is not None
            server.shutdown()
        assert '"event": "workitem.resumed"' in node.log_text()
        assert set(stored) == _sop_uids(archive)
    done = memory_ups.items[uid]
    assert done.ProcedureStepState == "COMPLETED"
    claims = [e for e in memory_ups.log if e[0] == "IN PROGRESS"]
    assert claims == [("IN PROGRESS", uid, claimed)]  # claimed once, before the kill
    assert ("COMPLETED", uid, claimed) in memory_ups.log
    assert all(txn == claimed for _, u, txn in memory_ups.log if u == uid)
    outputs = output_information(done.to_json_dict())
    got = {
        str(r.ReferencedSOPInstanceUID)
        for o in outputs
        for r in Dataset.from_json(o).ReferencedSOPSequence
    }
    assert got == _sop_uids(archive)


def _progress(ups: MemoryUps, uid: str) -> int | None:
    with ups.lock:
        seq = ups.items[uid].get("ProcedureStepProgressInformationSequence")
        if not seq:
            return None
        value = seq[0].get("ProcedureStepProgress")
    return int(value) if value is not None else None


def _req(event: evt.Event) -> Any:
    """The event's DIMSE request primitive."""
    return event.request
