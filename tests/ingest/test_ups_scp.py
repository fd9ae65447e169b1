"""UPS over DIMSE, ainode as Task Manager (issue 23): a real ``ainode serve`` process driven by
pynetdicom's own SCU, the independent peer; N-EVENT-REPORTs received by a pynetdicom SCP.

Statuses are PS3.4 Annex CC's (the texts of pynetdicom's UPS status table); workitems made over
DIMSE are read back over UPS-RS and the other way round (one table, one state machine).
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import requests
import websockets.sync.client
from pydicom.datadict import tag_for_keyword
from pydicom.dataset import Dataset
from pydicom.tag import BaseTag, Tag
from pydicom.uid import generate_uid
from pynetdicom import AE, evt
from pynetdicom.association import Association
from pynetdicom.status import UNIFIED_PROCEDURE_STEP_SERVICE_CLASS_STATUS as UPS_STATUS

from node.ingest.ups_scp import UPS_EVENT, UPS_PULL, UPS_PUSH, UPS_WATCH, identifier_query
from node.store.ups import GLOBAL_SUBSCRIPTION_UID, UpsState
from tests.api.upsdata import PERFORMED, workitem
from tests.peers.node import NodeProcess, start_node
from tests.util import free_port, wait_until

TOKEN = "ups-dimse-operator"
TIMEOUT = 60  # seconds, for HTTP requests and DIMSE answers on a loaded CI box


@dataclass
class Watcher:
    """A pynetdicom UPS Event SCP: the N-EVENT-REPORTs it received."""

    port: int
    reports: list[tuple[int, str, Dataset]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def of(self, uid: str) -> list[tuple[int, Dataset]]:
        with self.lock:
            return [(t, ds) for t, u, ds in self.reports if u == uid]


@pytest.fixture(scope="module")
def watcher() -> Iterator[Watcher]:
    ae = AE(ae_title="WATCHER")
    ae.add_supported_context(UPS_EVENT)
    ae.add_supported_context(UPS_PUSH)
    seen = Watcher(port=free_port())

    def on_report(event: evt.Event) -> tuple[int, None]:
        req = _req(event)
        with seen.lock:
            seen.reports.append(
                (int(req.EventTypeID), str(req.AffectedSOPInstanceUID), event.event_information)
            )
        return 0x0000, None  # (status, Event Reply): what pynetdicom's N-EVENT-REPORT needs

    server = ae.start_server(
        ("127.0.0.1", seen.port), block=False, evt_handlers=[(evt.EVT_N_EVENT_REPORT, on_report)]
    )
    yield seen
    assert server is not None
    server.shutdown()


@pytest.fixture(scope="module")
def manager(tmp_path_factory: pytest.TempPathFactory, watcher: Watcher) -> Iterator[NodeProcess]:
    tmp = tmp_path_factory.mktemp("ups-dimse")
    (tmp / "token").write_text(TOKEN + "\n")
    node = {
        "allowed_calling_aets": ["SCU1", "SCU2"],
        "ups_dimse": {
            "enabled": True,
            "event_aets": {"WATCHER": {"host": "127.0.0.1", "port": watcher.port}},
        },
    }
    auth = {"tokens": {"ris": {"token_file": str(tmp / "token"), "role": "operator"}}}
    with start_node(tmp, node=node, auth=auth) as peer:
        yield peer


def _connect(node: NodeProcess, aet: str = "SCU1") -> Association:
    ae = AE(ae_title=aet)
    for sop_class in (UPS_PUSH, UPS_PULL, UPS_WATCH):
        ae.add_requested_context(sop_class)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = TIMEOUT
    return ae.associate("127.0.0.1", node.dicom_port, ae_title="AINODE")


@pytest.fixture
def scu(manager: NodeProcess) -> Iterator[Association]:
    assoc = _connect(manager)
    assert assoc.is_established
    yield assoc
    assoc.release()


def _ds(data: dict[str, Any]) -> Dataset:
    return Dataset.from_json(data)


def _code(status: Dataset) -> int:
    assert "Status" in status, "no answer from the node"
    return int(status.Status)


def _create(scu: Association, **changes: Any) -> str:
    uid = str(generate_uid())
    status, attrs = scu.send_n_create(_ds(workitem(**changes)), UPS_PUSH, uid)
    assert _code(status) == 0x0000, status
    assert attrs is not None and attrs.SOPInstanceUID == uid
    return uid


def _state(scu: Association, uid: str, state: str, txn: str | None) -> Dataset:
    info = Dataset()
    info.ProcedureStepState = state
    if txn is not None:
        info.TransactionUID = txn
    status, _ = scu.send_n_action(info, 1, UPS_PUSH, uid)
    return status


def _set(scu: Association, uid: str, changes: dict[str, Any], txn: str | None) -> Dataset:
    ds = _ds(changes)
    if txn is not None:
        ds.TransactionUID = txn
    status, _ = scu.send_n_set(ds, UPS_PUSH, uid)
    return status


def _get(scu: Association, uid: str, *keywords: str) -> Dataset:
    tags = [_tag(k) for k in keywords]
    status, ds = scu.send_n_get(tags, UPS_PUSH, uid)
    assert _code(status) == 0x0000, status
    assert ds is not None
    return ds


def _tag(keyword: str) -> BaseTag:
    tag = tag_for_keyword(keyword)
    assert tag is not None
    return Tag(tag)


def _progress(percent: str, text: str) -> dict[str, Any]:
    return {
        "00741002": {
            "vr": "SQ",
            "Value": [
                {
                    "00741004": {"vr": "DS", "Value": [percent]},
                    "00741006": {"vr": "ST", "Value": [text]},
                }
            ],
        }
    }


def _http(node: NodeProcess) -> requests.Session:
    session = requests.Session()
    session.headers["Authorization"] = f"Bearer {TOKEN}"
    return session


def _find(scu: Association, identifier: Dataset) -> list[tuple[int, Dataset | None]]:
    return [
        (int(status.Status), ident)
        for status, ident in scu.send_c_find(identifier, UPS_PULL)
        if "Status" in status
    ]


def test_full_life_cycle_over_dimse_is_seen_over_ups_rs(
    manager: NodeProcess, scu: Association
) -> None:
    uid = _create(scu)
    # C-FIND: SCHEDULED workitems of the code, answered with the keys asked for
    query = Dataset()
    query.SOPInstanceUID = uid
    query.ProcedureStepState = "SCHEDULED"
    item = Dataset()
    item.CodeValue = "LUNG-AI"
    query.ScheduledWorkitemCodeSequence = [item]
    query.PatientName = ""
    query.TransactionUID = ""
    answers = _find(scu, query)
    assert [s for s, _ in answers] == [0xFF00, 0x0000]
    found = answers[0][1]
    assert found is not None and found.SOPInstanceUID == uid
    assert str(found.PatientName) == "Doe^Jane" and "TransactionUID" not in found
    assert _get(scu, uid, "ProcedureStepState").ProcedureStepState == "SCHEDULED"

    txn = str(generate_uid())
    assert _code(_state(scu, uid, "IN PROGRESS", txn)) == 0x0000
    assert _code(_set(scu, uid, _progress("50", "running the model"), txn)) == 0x0000
    assert _code(_state(scu, uid, "COMPLETED", txn)) == 0xC304  # final-state attributes missing
    assert _code(_set(scu, uid, PERFORMED, txn)) == 0x0000
    assert _code(_state(scu, uid, "COMPLETED", txn)) == 0x0000
    assert _code(_state(scu, uid, "COMPLETED", txn)) == 0xB306  # already COMPLETED: a warning
    got = _get(scu, uid)
    assert got.ProcedureStepState == "COMPLETED" and "TransactionUID" not in got

    with _http(manager) as http:
        resp = http.get(f"{manager.url}/dicom-web/workitems/{uid}", timeout=TIMEOUT)
    assert resp.status_code == 200, resp.text
    ds = Dataset.from_json(resp.json()[0])
    assert ds.ProcedureStepState == UpsState.COMPLETED.value
    progress = ds.ProcedureStepProgressInformationSequence[0]
    assert progress.ProcedureStepProgress == 50
    assert progress.ProcedureStepProgressDescription == "running the model"
    audit = [json.loads(line) for line in (manager.data_dir / "audit.log").read_text().splitlines()]
    mine = [r for r in audit if r.get("workitem_uid") == uid]
    assert {"workitem.created", "workitem.updated", "workitem.state_changed"} <= {
        r["event"] for r in mine
    }
    assert all(r["actor"] == "dicom:SCU1" for r in mine)
    assert "Doe" not in json.dumps(mine)  # no patient data in the audit


def test_creation_refusals_carry_the_ps3_4_status(scu: Association) -> None:
    uid = _create(scu)
    status, _ = scu.send_n_create(_ds(workitem()), UPS_PUSH, uid)
    assert _code(status) == 0x0111  # duplicate SOP instance
    status, _ = scu.send_n_create(_ds(workitem(t00741204=None)), UPS_PUSH, str(generate_uid()))
    assert _code(status) == 0xA900
    assert "ProcedureStepLabel (0074,1204) is missing" in status.ErrorComment
    started = workitem(t00741000={"vr": "CS", "Value": ["IN PROGRESS"]})
    status, _ = scu.send_n_create(_ds(started), UPS_PUSH, str(generate_uid()))
    assert _code(status) == 0xC309
    status, _ = scu.send_n_get([], UPS_PUSH, str(generate_uid()))
    assert _code(status) == 0xC307  # no such workitem
    for code in (0x0111, 0xA900, 0xC309, 0xC307):
        assert code in UPS_STATUS


def test_wrong_transaction_uid_is_refused(scu: Association) -> None:
    uid = _create(scu)
    assert _code(_state(scu, uid, "COMPLETED", str(generate_uid()))) == 0xC310  # not yet claimed
    txn, other = str(generate_uid()), str(generate_uid())
    assert _code(_state(scu, uid, "IN PROGRESS", txn)) == 0x0000
    assert _code(_set(scu, uid, PERFORMED, other)) == 0xC301
    assert _code(_set(scu, uid, PERFORMED, None)) == 0xC301
    assert _code(_state(scu, uid, "CANCELED", other)) == 0xC301
    assert _code(_state(scu, uid, "SCHEDULED", txn)) == 0xC303
    assert _get(scu, uid).ProcedureStepState == "IN PROGRESS"


def test_claim_race_has_one_winner(manager: NodeProcess, scu: Association) -> None:
    uid = _create(scu)
    barrier = threading.Barrier(2)
    codes: dict[str, int] = {}

    def claim(aet: str) -> None:
        assoc = _connect(manager, aet)
        try:
            barrier.wait(timeout=TIMEOUT)
            codes[aet] = _code(_state(assoc, uid, "IN PROGRESS", str(generate_uid())))
        finally:
            assoc.release()

    threads = [threading.Thread(target=claim, args=(aet,)) for aet in ("SCU1", "SCU2")]
    for t in threads:
        t.start()
    for t in threads:
        t.join(TIMEOUT * 2)
    assert sorted(codes.values()) == [0x0000, 0xC302], codes


def test_claim_race_between_dimse_and_ups_rs_has_one_winner(
    manager: NodeProcess, scu: Association
) -> None:
    """One table, one state machine: a DIMSE performer and a UPS-RS performer claim at once."""
    uid = _create(scu)
    barrier = threading.Barrier(2)
    outcome: dict[str, Any] = {}

    def over_dimse() -> None:
        assoc = _connect(manager, "SCU2")
        try:
            barrier.wait(timeout=TIMEOUT)
            outcome["dimse"] = _code(_state(assoc, uid, "IN PROGRESS", str(generate_uid())))
        finally:
            assoc.release()

    def over_http() -> None:
        body = [
            {
                "00741000": {"vr": "CS", "Value": ["IN PROGRESS"]},
                "00081195": {"vr": "UI", "Value": [str(generate_uid())]},
            }
        ]
        with _http(manager) as http:
            barrier.wait(timeout=TIMEOUT)
            resp = http.put(
                f"{manager.url}/dicom-web/workitems/{uid}/state",
                data=json.dumps(body),
                headers={"Content-Type": "application/dicom+json"},
                timeout=TIMEOUT,
            )
        outcome["http"] = (resp.status_code, resp.headers.get("Warning", ""))

    threads = [threading.Thread(target=over_dimse), threading.Thread(target=over_http)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(TIMEOUT * 2)
    dimse_won = outcome["dimse"] == 0x0000
    http_won = outcome["http"][0] == 200
    assert dimse_won != http_won, outcome
    if dimse_won:
        assert outcome["http"][0] == 409 and "C302" in outcome["http"][1]
    else:
        assert outcome["dimse"] == 0xC302
    assert _get(scu, uid).ProcedureStepState == "IN PROGRESS"


def test_request_cancel(scu: Association) -> None:
    scheduled = _create(scu)
    reason = Dataset()
    reason.ReasonForCancellation = "ordered twice"
    status, _ = scu.send_n_action(reason, 2, UPS_PUSH, scheduled)
    assert _code(status) == 0x0000
    got = _get(scu, scheduled)
    assert got.ProcedureStepState == "CANCELED"
    item = got.ProcedureStepProgressInformationSequence[0]
    assert item.ReasonForCancellation == "ordered twice" and item.ProcedureStepCancellationDateTime
    status, _ = scu.send_n_action(reason, 2, UPS_PUSH, scheduled)
    assert _code(status) == 0xB304  # already CANCELED

    running = _create(scu)
    assert _code(_state(scu, running, "IN PROGRESS", str(generate_uid()))) == 0x0000
    status, _ = scu.send_n_action(reason, 2, UPS_PUSH, running)
    assert _code(status) == 0x0000  # noted: its performer decides
    assert _get(scu, running).ProcedureStepState == "IN PROGRESS"


def _subscribe(scu: Association, aet: str, target: str, action: int = 3) -> int:
    info = Dataset()
    info.ReceivingAE = aet
    info.DeletionLock = "FALSE"
    status, _ = scu.send_n_action(info, action, UPS_PUSH, target)
    return _code(status)


def test_subscribers_get_event_reports_from_both_transports(
    manager: NodeProcess, scu: Association, watcher: Watcher
) -> None:
    assert _subscribe(scu, "NOWHERE", GLOBAL_SUBSCRIPTION_UID) == 0xC308  # no address for it
    assert _subscribe(scu, "WATCHER", GLOBAL_SUBSCRIPTION_UID) == 0x0000
    try:
        uid = _create(scu)
        txn = str(generate_uid())
        assert _code(_state(scu, uid, "IN PROGRESS", txn)) == 0x0000
        assert _code(_set(scu, uid, _progress("20", "fetching"), txn)) == 0x0000
        reason = Dataset()
        reason.ReasonForCancellation = "patient left"
        status, _ = scu.send_n_action(reason, 2, UPS_PUSH, uid)
        assert _code(status) == 0x0000
        wait_until(lambda: len(watcher.of(uid)) >= 4, timeout=TIMEOUT, what="four reports")
        reports = watcher.of(uid)
        assert [t for t, _ in reports] == [1, 1, 3, 2]
        assert [ds.ProcedureStepState for t, ds in reports if t == 1] == [
            "SCHEDULED",
            "IN PROGRESS",
        ]
        assert reports[2][1].ProcedureStepProgressInformationSequence[0].ProcedureStepProgress == 20
        assert reports[3][1].ReasonForCancellation == "patient left"

        # a workitem created over UPS-RS is reported to the DIMSE subscriber too
        rs_uid = str(generate_uid())
        with _http(manager) as http:
            resp = http.post(
                f"{manager.url}/dicom-web/workitems",
                params={"workitem": rs_uid},
                data=json.dumps([workitem()]),
                headers={"Content-Type": "application/dicom+json"},
                timeout=TIMEOUT,
            )
        assert resp.status_code == 201, resp.text
        wait_until(
            lambda: bool(watcher.of(rs_uid)), timeout=TIMEOUT, what="report of the RS workitem"
        )
        assert watcher.of(rs_uid)[0][1].ProcedureStepState == "SCHEDULED"
        # and found over DIMSE
        query = Dataset()
        query.SOPInstanceUID = rs_uid
        query.ProcedureStepLabel = ""
        answers = _find(scu, query)
        assert [s for s, _ in answers] == [0xFF00, 0x0000]
    finally:
        assert _subscribe(scu, "WATCHER", GLOBAL_SUBSCRIPTION_UID, action=4) == 0x0000
    after = _create(scu)
    # a subscription to one workitem answers with its current state at once
    assert _subscribe(scu, "WATCHER", after) == 0x0000
    wait_until(lambda: bool(watcher.of(after)), timeout=TIMEOUT, what="the current state")
    assert [t for t, _ in watcher.of(after)] == [1]  # not the creation: unsubscribed then


def test_ups_rs_event_channel_reports_changes_made_over_dimse(
    manager: NodeProcess, scu: Association
) -> None:
    headers = {"Authorization": f"Bearer {TOKEN}"}
    ws_url = manager.url.replace("http://", "ws://") + "/dicom-web/subscribers/WS-AE"
    with websockets.sync.client.connect(ws_url, additional_headers=headers, open_timeout=60) as ws:
        with _http(manager) as http:
            resp = http.post(
                f"{manager.url}/dicom-web/workitems/{GLOBAL_SUBSCRIPTION_UID}/subscribers/WS-AE",
                timeout=TIMEOUT,
            )
        assert resp.status_code == 201, resp.text
        try:
            uid = _create(scu)
            assert _code(_state(scu, uid, "IN PROGRESS", str(generate_uid()))) == 0x0000
            events = [json.loads(ws.recv(timeout=TIMEOUT)) for _ in range(2)]
        finally:
            with _http(manager) as http:
                http.delete(
                    f"{manager.url}/dicom-web/workitems/{GLOBAL_SUBSCRIPTION_UID}/subscribers/WS-AE",
                    timeout=TIMEOUT,
                )
    assert [e["00001000"]["Value"][0] for e in events] == [uid, uid]
    assert [e["00741000"]["Value"][0] for e in events] == ["SCHEDULED", "IN PROGRESS"]


def test_unknown_calling_ae_is_refused(manager: NodeProcess) -> None:
    assoc = _connect(manager, "STRANGER")
    assert assoc.is_rejected
    text = Path(manager.log).read_text()
    assert "association.rejected" in text


def test_identifier_query_separates_matching_and_return_keys() -> None:
    ident = Dataset()
    ident.ProcedureStepState = "SCHEDULED"
    ident.PatientName = ""  # a return key
    code = Dataset()
    code.CodeValue = "LUNG-AI"
    ident.ScheduledWorkitemCodeSequence = [code]
    ident.InputInformationSequence = []
    ident.StudyInstanceUID = ["1.2.3", "1.2.4"]
    query, unsupported = identifier_query(ident)
    assert sorted(query) == [
        ("ProcedureStepState", "SCHEDULED"),
        ("ScheduledWorkitemCodeSequence.CodeValue", "LUNG-AI"),
        ("StudyInstanceUID", "1.2.3\\1.2.4"),
    ]
    assert unsupported is False
    ident.Modality = "CT"  # not a key ainode matches on
    assert identifier_query(ident)[1] is True


def _req(event: evt.Event) -> Any:
    """The event's DIMSE request primitive."""
    return event.request
