"""UPS-RS, ainode as Task Manager (issue 23 section 2), over real HTTP to a real node process.

Requests go through ``dicomweb-client``'s HTTP session (it has no UPS methods).  What the node
answers is read back with pydicom (``Dataset.from_json``) and checked against the attribute
requirements of PS3.4 Table CC.2.5-3 (``node.store.ups.REQUIREMENTS``, whose tags and VRs
``tests/store/test_ups.py`` checks against pydicom's dictionary).
"""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pydicom
import pytest
import requests
import websockets.exceptions
import websockets.sync.client
from dicomweb_client.session_utils import create_session

from node.store.ups import REQUIREMENTS, UPS_PUSH_SOP_CLASS_UID, UpsState, check_final
from tests.api.upsdata import PERFORMED, workitem
from tests.peers.node import NodeProcess, start_node

OPERATOR = "ups-operator-token"
VIEWER = "ups-viewer-token"
ROOT = "1.2.826.0.1.3680043.10.543.23"
JSON_TYPE = {"Content-Type": "application/dicom+json"}
_counter = iter(range(1, 1_000_000))


def _auth(tmp: Path) -> dict[str, Any]:
    (tmp / "operator").write_text(OPERATOR + "\n")
    (tmp / "viewer").write_text(VIEWER + "\n")
    return {
        "tokens": {
            "performer": {"token_file": str(tmp / "operator"), "role": "operator"},
            "watcher": {"token_file": str(tmp / "viewer"), "role": "viewer"},
        }
    }


def _session(token: str | None = OPERATOR) -> requests.Session:
    session = create_session()
    if token:
        session.headers["Authorization"] = f"Bearer {token}"
    return session


@pytest.fixture(scope="module")
def manager(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NodeProcess]:
    tmp = tmp_path_factory.mktemp("ups")
    with start_node(tmp, auth=_auth(tmp)) as node:
        yield node


@pytest.fixture
def http() -> Iterator[requests.Session]:
    with _session() as session:
        yield session


def _new_uid() -> str:
    return f"{ROOT}.{next(_counter)}.{threading.get_ident() % 1000}"


def _create(node: NodeProcess, http: requests.Session, **changes: Any) -> str:
    uid = _new_uid()
    resp = http.post(
        f"{node.url}/dicom-web/workitems",
        params={"workitem": uid},
        data=json.dumps([workitem(**changes)]),
        headers=JSON_TYPE,
    )
    assert resp.status_code == 201, resp.text
    assert resp.headers["Location"] == f"{node.url}/dicom-web/workitems/{uid}"
    return uid


def _get(node: NodeProcess, http: requests.Session, uid: str) -> dict[str, Any]:
    resp = http.get(f"{node.url}/dicom-web/workitems/{uid}")
    assert resp.status_code == 200, resp.text
    assert resp.headers["Content-Type"].startswith("application/dicom+json")
    body = resp.json()
    assert isinstance(body, list) and len(body) == 1
    item: dict[str, Any] = body[0]
    return item


def _state(node: NodeProcess, http: requests.Session, uid: str, state: str, txn: str | None):
    body: dict[str, Any] = {"00741000": {"vr": "CS", "Value": [state]}}
    if txn is not None:
        body["00081195"] = {"vr": "UI", "Value": [txn]}
    return http.put(
        f"{node.url}/dicom-web/workitems/{uid}/state",
        data=json.dumps([body]),
        headers=JSON_TYPE,
    )


def _update(
    node: NodeProcess, http: requests.Session, uid: str, changes: dict[str, Any], **params: str
) -> requests.Response:
    return http.post(
        f"{node.url}/dicom-web/workitems/{uid}",
        params=params,
        data=json.dumps([changes]),
        headers=JSON_TYPE,
    )


def _refused(resp: requests.Response, status: int, dicom_status: str) -> dict[str, Any]:
    assert resp.status_code == status, resp.text
    assert resp.headers["Content-Type"] == "application/problem+json"
    problem: dict[str, Any] = resp.json()
    assert problem["status"] == status and problem["dicom_status"] == dicom_status
    assert resp.headers["Warning"].startswith(f'299 ainode "{dicom_status}: ')
    return problem


def _value(ds: dict[str, Any], tag: str) -> Any:
    return ds[tag]["Value"][0]


def _check_shape(ds: dict[str, Any], state: UpsState) -> None:
    """The returned workitem is DICOM JSON pydicom reads, of the UPS Push class, without a
    Transaction UID, and meets the requirement types of Table CC.2.5-3 for its state."""
    parsed = pydicom.Dataset.from_json(ds)
    assert parsed.SOPClassUID == UPS_PUSH_SOP_CLASS_UID
    assert parsed.ProcedureStepState == state.value
    assert "TransactionUID" not in parsed
    for row in REQUIREMENTS:
        if row.create == "1" and row.keyword != "TransactionUID":
            assert parsed.get(row.keyword) not in (None, ""), row.keyword
        if row.create == "2":
            assert row.keyword in parsed, row.keyword
    if state.is_final:
        assert check_final(ds, state) == []


def test_create_and_retrieve_return_a_standard_workitem(
    manager: NodeProcess, http: requests.Session
) -> None:
    uid = _create(manager, http)
    ds = _get(manager, http, uid)
    _check_shape(ds, UpsState.SCHEDULED)
    assert _value(ds, "00080018") == uid
    assert _value(ds, "00741202")  # Worklist Label filled in by the SCP
    # the UID may come in the body instead of the query
    other = _new_uid()
    body = workitem(t00080018={"vr": "UI", "Value": [other]})
    resp = http.post(f"{manager.url}/dicom-web/workitems", data=json.dumps(body), headers=JSON_TYPE)
    assert resp.status_code == 201, resp.text
    assert _value(_get(manager, http, other), "00080018") == other


@pytest.mark.parametrize(
    ("changes", "status", "dicom_status", "detail"),
    [
        ({"t00741000": {"vr": "CS", "Value": ["IN PROGRESS"]}}, 400, "C309", "created SCHEDULED"),
        ({"t00741204": None}, 400, "A900", "ProcedureStepLabel (0074,1204) is missing"),
        ({"t00741204": {"vr": "LO"}}, 400, "A900", "ProcedureStepLabel (0074,1204) has no value"),
        ({"t00100020": None}, 400, "A900", "PatientID (0010,0020) is missing (type 2)"),
        ({"t00741200": {"vr": "CS", "Value": ["URGENT"]}}, 400, "A900", "'URGENT' is not one of"),
        (
            {"t00081195": {"vr": "UI", "Value": ["1.2.3"]}},
            400,
            "A900",
            "TransactionUID (0008,1195) is not allowed",
        ),
        ({"t00080016": {"vr": "UI", "Value": ["1.2.3"]}}, 400, "A900", "UPS Push"),
    ],
)
def test_creation_refuses_what_table_cc_2_5_3_forbids(
    manager: NodeProcess,
    http: requests.Session,
    changes: dict[str, Any],
    status: int,
    dicom_status: str,
    detail: str,
) -> None:
    uid = _new_uid()
    resp = http.post(
        f"{manager.url}/dicom-web/workitems",
        params={"workitem": uid},
        data=json.dumps([workitem(**changes)]),
        headers=JSON_TYPE,
    )
    assert detail in _refused(resp, status, dicom_status)["detail"]
    assert http.get(f"{manager.url}/dicom-web/workitems/{uid}").status_code == 404


@pytest.mark.parametrize(
    ("body", "content_type", "status", "detail"),
    [
        (b"{not json", "application/dicom+json", 400, "not JSON"),
        (b"[{}, {}]", "application/dicom+json", 400, "holds 2 datasets"),
        (b'{"0010": {"vr": "PN"}}', "application/dicom+json", 400, "is not a tag"),
        (b'{"00100010": {"Value": []}}', "application/dicom+json", 400, "with a 'vr'"),
        (b'{"00100010": {"vr": "PN", "Value": 3}}', "application/json", 400, "must be an array"),
        (b"{}", "text/plain", 415, "application/dicom+json"),
        (b"[" * 100_000 + b"]" * 100_000, "application/dicom+json", 400, "nested too deeply"),
        (
            b'{"00741002": {"vr": "SQ", "Value": [' * 20 + b"{}" + b"]}}" * 20,
            "application/json",
            400,
            "nested deeper",
        ),
        (b" " * (1 << 20) + b"{}", "application/dicom+json", 413, "larger than 1048576 bytes"),
    ],
)
def test_malformed_bodies_get_a_precise_problem(
    manager: NodeProcess,
    http: requests.Session,
    body: bytes,
    content_type: str,
    status: int,
    detail: str,
) -> None:
    resp = http.post(
        f"{manager.url}/dicom-web/workitems",
        data=body,
        headers={"Content-Type": content_type},
    )
    assert resp.status_code == status, resp.text
    assert detail in resp.json()["detail"]


def test_a_duplicate_workitem_is_409(manager: NodeProcess, http: requests.Session) -> None:
    uid = _create(manager, http)
    resp = http.post(
        f"{manager.url}/dicom-web/workitems",
        params={"workitem": uid},
        data=json.dumps([workitem()]),
        headers=JSON_TYPE,
    )
    _refused(resp, 409, "0111")


def test_the_state_machine_and_its_error_codes(
    manager: NodeProcess, http: requests.Session
) -> None:
    uid = _create(manager, http)
    url = f"{manager.url}/dicom-web/workitems/{uid}"
    # SCHEDULED: updates need no Transaction UID; only IN PROGRESS may follow
    low = {"00741200": {"vr": "CS", "Value": ["LOW"]}}
    assert _update(manager, http, uid, low).status_code == 200
    assert _value(_get(manager, http, uid), "00741200") == "LOW"
    _refused(_state(manager, http, uid, "COMPLETED", "1.2.3.4"), 409, "C310")
    _refused(_state(manager, http, uid, "CANCELED", "1.2.3.4"), 409, "C310")
    _refused(_state(manager, http, uid, "IN PROGRESS", None), 400, "C301")
    _refused(_state(manager, http, uid, "SCHEDULED", "1.2.3.4"), 400, "C303")
    _refused(
        _update(manager, http, uid, {"00741000": {"vr": "CS", "Value": ["COMPLETED"]}}), 400, "C303"
    )
    txn = f"{ROOT}.99.{uid.rsplit('.', 2)[-2]}"
    assert _state(manager, http, uid, "IN PROGRESS", txn).status_code == 200
    _check_shape(_get(manager, http, uid), UpsState.IN_PROGRESS)
    # IN PROGRESS: a second claim, updates without or with a wrong Transaction UID
    _refused(_state(manager, http, uid, "IN PROGRESS", "1.2.3.5"), 409, "C302")
    _refused(_update(manager, http, uid, low), 400, "C301")
    _refused(_update(manager, http, uid, low, **{"transaction-uid": "1.2.3.5"}), 409, "C301")
    for spelling in ("transaction-uid", "transaction", "Transaction-uid"):
        assert _update(manager, http, uid, low, **{spelling: txn}).status_code == 200, spelling
    resp = http.put(url, params={"transaction": txn}, data=json.dumps([low]), headers=JSON_TYPE)
    assert resp.status_code == 200, resp.text  # PUT, as some clients update
    # COMPLETED needs the final-state attributes (Table CC.2.5-3) and the right Transaction UID
    problem = _refused(_state(manager, http, uid, "COMPLETED", txn), 409, "C304")
    assert (
        "UnifiedProcedureStepPerformedProcedureSequence (0074,1216) is missing" in problem["detail"]
    )
    assert _update(manager, http, uid, PERFORMED, transaction=txn).status_code == 200
    _refused(_state(manager, http, uid, "COMPLETED", "1.2.3.5"), 409, "C301")
    assert _state(manager, http, uid, "COMPLETED", txn).status_code == 200
    _check_shape(_get(manager, http, uid), UpsState.COMPLETED)
    # COMPLETED is final
    again = _state(manager, http, uid, "COMPLETED", txn)
    assert again.status_code == 200
    assert again.headers["Warning"].startswith('299 ainode "B306: ')
    _refused(_state(manager, http, uid, "CANCELED", txn), 409, "C311")
    _refused(_update(manager, http, uid, low, transaction=txn), 409, "C300")
    _refused(http.post(f"{url}/cancelrequest"), 409, "C311")
    assert http.get(f"{manager.url}/dicom-web/workitems/{ROOT}.404").status_code == 404


def test_cancel_requests(manager: NodeProcess, http: requests.Session) -> None:
    # SCHEDULED: cancelled at once, with the reason and time in the progress information
    uid = _create(manager, http)
    reason = {"00741238": {"vr": "LT", "Value": ["input study withdrawn"]}}
    resp = http.post(
        f"{manager.url}/dicom-web/workitems/{uid}/cancelrequest",
        data=json.dumps([reason]),
        headers=JSON_TYPE,
    )
    assert resp.status_code == 202, resp.text
    ds = _get(manager, http, uid)
    _check_shape(ds, UpsState.CANCELED)
    progress = ds["00741002"]["Value"][0]
    assert _value(progress, "00741238") == "input study withdrawn"
    assert _value(progress, "00404052")  # Procedure Step Cancellation DateTime
    again = http.post(f"{manager.url}/dicom-web/workitems/{uid}/cancelrequest")
    assert again.status_code == 200 and again.headers["Warning"].startswith('299 ainode "B304: ')
    # IN PROGRESS: only requested; the performer cancels with its Transaction UID
    uid = _create(manager, http)
    txn = f"{ROOT}.98.{uid.rsplit('.', 2)[-2]}"
    assert _state(manager, http, uid, "IN PROGRESS", txn).status_code == 200
    resp = http.post(f"{manager.url}/dicom-web/workitems/{uid}/cancelrequest")
    assert resp.status_code == 202
    assert _value(_get(manager, http, uid), "00741000") == "IN PROGRESS"
    _refused(_state(manager, http, uid, "CANCELED", txn), 409, "C304")  # no cancellation time yet
    progress_item = {"00404052": {"vr": "DT", "Value": ["20261207121500"]}}
    changes = {"00741002": {"vr": "SQ", "Value": [progress_item]}}
    assert _update(manager, http, uid, changes, transaction=txn).status_code == 200
    assert _state(manager, http, uid, "CANCELED", txn).status_code == 200
    _check_shape(_get(manager, http, uid), UpsState.CANCELED)


def test_two_concurrent_claimers_exactly_one_wins(manager: NodeProcess) -> None:
    with _session() as http:
        uids = [_create(manager, http) for _ in range(4)]
    for uid in uids:
        barrier = threading.Barrier(2)
        answers: dict[str, requests.Response] = {}

        def claim(
            txn: str,
            uid: str = uid,
            barrier: threading.Barrier = barrier,
            answers: dict[str, requests.Response] = answers,
        ) -> None:
            with _session() as own:
                barrier.wait(timeout=30)
                answers[txn] = _state(manager, own, uid, "IN PROGRESS", txn)

        threads = [threading.Thread(target=claim, args=(f"{ROOT}.7.{i}",)) for i in (1, 2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=60)
        codes = sorted(r.status_code for r in answers.values())
        assert codes == [200, 409], {k: r.text for k, r in answers.items()}
        winner = next(t for t, r in answers.items() if r.status_code == 200)
        loser = next(t for t, r in answers.items() if r.status_code == 409)
        assert answers[loser].json()["dicom_status"] == "C302"
        with _session() as http:
            low = {"00741200": {"vr": "CS", "Value": ["LOW"]}}
            assert _update(manager, http, uid, low, transaction=winner).status_code == 200
            _refused(_update(manager, http, uid, low, transaction=loser), 409, "C301")


def test_search_matches_the_main_attributes(manager: NodeProcess, http: requests.Session) -> None:
    code = f"CODE-{next(_counter)}"
    codes = {"vr": "SQ", "Value": [{"00080100": {"vr": "SH", "Value": [code]}}]}
    first = _create(manager, http, t00404018=codes)
    second = _create(manager, http, t00404018=codes, t00100020={"vr": "LO", "Value": ["OTHER-1"]})
    txn = f"{ROOT}.97.1"
    assert _state(manager, http, second, "IN PROGRESS", txn).status_code == 200
    url = f"{manager.url}/dicom-web/workitems"

    def found(**params: str) -> list[str]:
        resp = http.get(url, params={"ScheduledWorkitemCodeSequence.CodeValue": code, **params})
        assert resp.status_code == 200, resp.text
        return [_value(ds, "00080018") for ds in resp.json()]

    assert found() == [first, second]
    assert found(ProcedureStepState="SCHEDULED") == [first]
    assert found(**{"00741000": "IN PROGRESS"}) == [second]
    assert found(PatientID="OTH*") == [second]
    assert found(PatientName="doe^jane") == []  # case-sensitive, as PS3.4 C.2.2.2.1
    assert found(PatientName="Doe^J?ne") == [first, second]
    assert found(SOPInstanceUID=f"{first},{ROOT}.0") == [first]
    assert found(limit="1", offset="1") == [second]
    assert found(ScheduledProcedureStepStartDateTime="20261207-20261207235959") == [first, second]
    assert found(ScheduledProcedureStepStartDateTime="20261208-") == []
    assert all("00081195" not in ds for ds in http.get(url).json())
    # fuzzy matching is not done: the search matches literally and a Warning says so
    fuzzy = http.get(url, params={"PatientName": "Doe^Jane", "fuzzymatching": "true"})
    assert "fuzzymatching parameter is not supported" in fuzzy.headers["Warning"]
    assert "Warning" not in http.get(url, params={"PatientName": "Doe^Jane"}).headers
    bad = http.get(url, params={"PatientWeight": "70"})
    assert bad.status_code == 400 and "PatientWeight" in bad.json()["detail"]
    bad = http.get(url, params={"ProcedureStepState": "DONE"})
    assert bad.status_code == 400


def test_subscriptions(manager: NodeProcess, http: requests.Session) -> None:
    uid = _create(manager, http)
    base = f"{manager.url}/dicom-web/workitems"
    assert http.post(f"{base}/{uid}/subscribers/AI-PERFORMER").status_code == 201
    resp = http.post(f"{base}/{ROOT}.404/subscribers/AI-PERFORMER")
    assert resp.status_code == 404
    glob = "1.2.840.10008.5.1.4.34.5"
    assert (
        http.post(
            f"{base}/{glob}/subscribers/AI-PERFORMER", params={"deletionlock": "true"}
        ).status_code
        == 201
    )
    assert http.post(f"{base}/{glob}.1/subscribers/AI-PERFORMER").status_code == 400  # no filter
    flt = {"filter": "ScheduledWorkitemCodeSequence.CodeValue=LUNG-AI"}
    assert http.post(f"{base}/{glob}.1/subscribers/AI-PERFORMER", params=flt).status_code == 201
    assert http.post(f"{base}/{uid}/subscribers/{'X' * 17}").status_code == 400
    assert http.delete(f"{base}/{uid}/subscribers/AI-PERFORMER").status_code == 200
    assert http.delete(f"{base}/{uid}/subscribers/AI-PERFORMER").status_code == 404


def test_authentication_comes_first_and_roles_are_checked(manager: NodeProcess) -> None:
    url = f"{manager.url}/dicom-web/workitems"
    with _session(None) as anonymous:
        resp = anonymous.post(url, data=b"{not json", headers=JSON_TYPE)
        assert (
            resp.status_code == 401 and resp.headers["Content-Type"] == "application/problem+json"
        )
        assert anonymous.get(url).status_code == 401
    with _session(VIEWER) as viewer:
        assert viewer.post(url, data=b"{not json", headers=JSON_TYPE).status_code == 403
        # workitems carry patient name and ID: reading them needs a role of console.phi_roles
        assert viewer.get(url).status_code == 403


def test_changes_are_audited_without_patient_data(
    manager: NodeProcess, http: requests.Session
) -> None:
    uid = _create(manager, http)
    assert _state(manager, http, uid, "IN PROGRESS", f"{ROOT}.96.1").status_code == 200
    _state(manager, http, uid, "IN PROGRESS", f"{ROOT}.96.2")
    log = (manager.data_dir / "audit.log").read_text()
    mine = [r for r in map(json.loads, log.splitlines()) if r.get("workitem_uid") == uid]
    events = sorted((r["event"], r["outcome"]) for r in mine)
    assert events == [
        ("workitem.created", "success"),
        ("workitem.state_changed", "failure"),
        ("workitem.state_changed", "success"),
    ]
    assert all(r["actor"] == "token:performer" for r in mine)
    assert uid in log and "Doe^Jane" not in log and "PID-0007" not in log


@pytest.mark.slow  # starts nodes (twice: kill -9 and restart)
def test_workitems_survive_kill_9(tmp_path: Path) -> None:
    with start_node(tmp_path, auth=_auth(tmp_path)) as node, _session() as http:
        claimed, scheduled = _create(node, http), _create(node, http)
        txn = f"{ROOT}.95.1"
        assert _state(node, http, claimed, "IN PROGRESS", txn).status_code == 200
        node.kill()
        node.start()
        assert _value(_get(node, http, scheduled), "00741000") == "SCHEDULED"
        assert _value(_get(node, http, claimed), "00741000") == "IN PROGRESS"
        # the claim's Transaction UID survived: only its holder may go on
        _refused(_state(node, http, claimed, "IN PROGRESS", f"{ROOT}.95.2"), 409, "C302")
        assert _update(node, http, claimed, PERFORMED, transaction=txn).status_code == 200
        assert _state(node, http, claimed, "COMPLETED", txn).status_code == 200


def test_the_console_lists_workitems_with_their_state(
    manager: NodeProcess, http: requests.Session
) -> None:
    label = f"console check {next(_counter)}"
    uid = _create(manager, http, t00741204={"vr": "LO", "Value": [label]})
    assert _state(manager, http, uid, "IN PROGRESS", f"{ROOT}.94.1").status_code == 200
    page = http.get(f"{manager.url}/console/workitems")
    assert page.status_code == 200, page.text
    row = re.search(
        rf'<tr class="workitem" data-uid="{re.escape(uid)}"[^>]*>.*?</tr>', page.text, re.S
    )
    assert row is not None
    assert 'data-state="IN PROGRESS"' in row.group(0) and label in row.group(0)
    assert "LUNG-AI (Lung nodule detection)" in row.group(0)
    assert "Doe^Jane" not in page.text and "PID-0007" not in page.text
    only = http.get(f"{manager.url}/console/workitems", params={"state": "SCHEDULED"}).text
    assert uid not in only
    assert uid in http.get(f"{manager.url}/console/workitems", params={"state": "IN PROGRESS"}).text
    with _session(VIEWER) as viewer:  # a work queue without patient data: any role sees it
        assert viewer.get(f"{manager.url}/console/workitems").status_code == 200


def _channel(node: NodeProcess, aet: str, token: str | None = OPERATOR) -> Any:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    ws_url = node.url.replace("http://", "ws://") + f"/dicom-web/subscribers/{aet}"
    return websockets.sync.client.connect(ws_url, additional_headers=headers, open_timeout=30)


def _event(ws: Any) -> dict[str, Any]:
    message: dict[str, Any] = json.loads(ws.recv(timeout=30))
    pydicom.Dataset.from_json(message)  # a DICOM JSON dataset
    return message


def test_the_event_channel_reports_to_subscribers(
    manager: NodeProcess, http: requests.Session
) -> None:
    base = f"{manager.url}/dicom-web/workitems"
    with pytest.raises(websockets.exceptions.InvalidStatus) as refused:
        _channel(manager, "NO-TOKEN", token=None)
    assert refused.value.response.status_code == 403
    glob = "1.2.840.10008.5.1.4.34.5"
    with _channel(manager, "WATCHER") as watcher:
        assert http.post(f"{base}/{glob}/subscribers/WATCHER").status_code == 201
        uid = _create(manager, http)
        event = _event(watcher)
        assert (_value(event, "00001000"), _value(event, "00001002")) == (uid, 1)
        assert _value(event, "00741000") == "SCHEDULED"
        assert _state(manager, http, uid, "IN PROGRESS", f"{ROOT}.93.1").status_code == 200
        assert _value(_event(watcher), "00741000") == "IN PROGRESS"
        progress = {"00741004": {"vr": "DS", "Value": [50]}}
        changes = {"00741002": {"vr": "SQ", "Value": [progress]}}
        assert _update(manager, http, uid, changes, transaction=f"{ROOT}.93.1").status_code == 200
        event = _event(watcher)
        assert _value(event, "00001002") == 3
        assert _value(event, "00741002")["00741004"]["Value"] == [50]
        reason = {"00741238": {"vr": "LT", "Value": ["not needed"]}}
        resp = http.post(f"{base}/{uid}/cancelrequest", data=json.dumps(reason), headers=JSON_TYPE)
        assert resp.status_code == 202
        event = _event(watcher)
        assert _value(event, "00001002") == 2 and _value(event, "00741238") == "not needed"
        # a subscription to one workitem starts with a report of its current state
        with _channel(manager, "ONE-ITEM") as one:
            assert http.post(f"{base}/{uid}/subscribers/ONE-ITEM").status_code == 201
            event = _event(one)
            assert (_value(event, "00001000"), _value(event, "00741000")) == (uid, "IN PROGRESS")
        assert http.delete(f"{base}/{glob}/subscribers/WATCHER").status_code == 200
        other = _create(manager, http)
        assert _state(manager, http, uid, "IN PROGRESS", f"{ROOT}.93.2").status_code == 409
        with pytest.raises(TimeoutError):  # unsubscribed: nothing about the new workitem
            watcher.recv(timeout=1)
        assert other


def test_a_suspended_global_subscription_covers_only_existing_workitems(
    manager: NodeProcess, http: requests.Session
) -> None:
    base = f"{manager.url}/dicom-web/workitems"
    glob = "1.2.840.10008.5.1.4.34.5"
    assert http.post(f"{base}/{glob}/subscribers/SUSPENDER/suspend").status_code == 404
    with _channel(manager, "SUSPENDER") as channel:
        assert http.post(f"{base}/{glob}/subscribers/SUSPENDER").status_code == 201
        before = _create(manager, http)
        assert _value(_event(channel), "00001000") == before
        assert http.post(f"{base}/{glob}/subscribers/SUSPENDER/suspend").status_code == 200
        _refused(http.post(f"{base}/{before}/subscribers/SUSPENDER/suspend"), 400, "C314")
        after = _create(manager, http)
        assert _state(manager, http, after, "IN PROGRESS", f"{ROOT}.92.1").status_code == 200
        assert _state(manager, http, before, "IN PROGRESS", f"{ROOT}.92.2").status_code == 200
        event = _event(channel)  # the existing workitem still reports; the later one does not
        assert (_value(event, "00001000"), _value(event, "00741000")) == (before, "IN PROGRESS")
        with pytest.raises(TimeoutError):
            channel.recv(timeout=1)
        assert http.delete(f"{base}/{glob}/subscribers/SUSPENDER").status_code == 200
