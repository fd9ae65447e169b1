"""ainode as a UPS Task Performer (issue 23 section 1) against ainode as Task Manager.

Two (for the race, three) real node processes: the manager holds the input study and the
workitems (UPS-RS, ``/dicom-web/workitems``); the performer has a ``ups-rs`` source pointing at
it, fetches the input with WADO-RS, forwards it by its rules back to the manager (STOW-RS) and
completes the workitem with the Output Information Sequence; an input that cannot be fetched
is cancelled with its reason.  What the manager holds is read back over HTTP and checked with
pydicom and the final-state requirements of PS3.4 Table CC.2.5-3 (``check_final``).
"""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pydicom
import pytest
import requests
from dicomweb_client.session_utils import create_session

from node.config import UpsRsSource
from node.ingest.performer import Performer
from node.ingest.ups_datasets import output_information
from node.store.performed import PerformedState, PerformedStore
from node.store.ups import UpsState, check_final
from tests.api.upsdata import workitem
from tests.conftest import CORPUS
from tests.peers.node import NodeProcess, start_node
from tests.util import free_port, wait_until

pytestmark = pytest.mark.slow

TOKEN = "ups-performer-token"
ROOT = "1.2.826.0.1.3680043.10.543.23.9"
CHEST = "ct/chest-ct-siemens-sensation10-b40f-30sl"
JSON_TYPE = {"Content-Type": "application/dicom+json"}
_counter = iter(range(1, 1_000_000))


def _new_uid() -> str:
    return f"{ROOT}.{next(_counter)}.{threading.get_ident() % 1000}"


def _rules(tmp: Path, text: str) -> str:
    path = tmp / "rules.yaml"
    path.write_text(text)
    return str(path)


@pytest.fixture(scope="module")
def inputs() -> list[Path]:
    return sorted((CORPUS / CHEST).glob("*.dcm"))[:3]


@pytest.fixture(scope="module")
def manager(tmp_path_factory: pytest.TempPathFactory, inputs: list[Path]) -> Iterator[NodeProcess]:
    tmp = tmp_path_factory.mktemp("manager")
    (tmp / "token").write_text(TOKEN + "\n")
    rules = "version: 1\nrules:\n  - name: hold\n    then: ignore\n"
    with start_node(
        tmp,
        auth={"tokens": {"ris": {"token_file": str(tmp / "token"), "role": "operator"}}},
        rules=_rules(tmp, rules),
        study={"stable_seconds": 3600},
    ) as node:
        send = [sys.executable, "-m", "node", "send", "--to", f"127.0.0.1:{node.dicom_port}"]
        subprocess.run([*send, *map(str, inputs)], check=True, capture_output=True, timeout=120)
        yield node


def _performer_config(tmp: Path, manager: NodeProcess) -> dict[str, Any]:
    rules = "version: 1\nrules:\n  - name: back\n    then: {send_to: archive}\n"
    base = f"{manager.url}/dicom-web"
    return {
        "rules": _rules(tmp, rules),
        "study": {"stable_seconds": 3600},
        "sources": {
            "ris": {
                "type": "ups-rs",
                "url": base,
                "auth": "bearer",
                "token": TOKEN,
                "codes": ["LUNG-AI"],
                "station": "AINODE-1",
                "poll_seconds": 0.3,
                "result_timeout_seconds": 120,
            }
        },
        "destinations": {
            "archive": {"type": "dicomweb", "url": base, "auth": "bearer", "token": TOKEN}
        },
    }


@pytest.fixture(scope="module")
def performer(
    tmp_path_factory: pytest.TempPathFactory, manager: NodeProcess
) -> Iterator[NodeProcess]:
    tmp = tmp_path_factory.mktemp("performer")
    with start_node(tmp, **_performer_config(tmp, manager)) as node:
        yield node


@pytest.fixture
def http() -> Iterator[requests.Session]:
    with create_session() as session:
        session.headers["Authorization"] = f"Bearer {TOKEN}"
        yield session


def _study_uid(inputs: list[Path]) -> str:
    return str(pydicom.dcmread(inputs[0], stop_before_pixels=True).StudyInstanceUID)


def _schedule(manager: NodeProcess, http: requests.Session, study_uid: str, **changes: Any) -> str:
    uid = _new_uid()
    item = {
        "0020000D": {"vr": "UI", "Value": [study_uid]},
        "0040E025": {
            "vr": "SQ",
            "Value": [
                {
                    "00081190": {
                        "vr": "UR",
                        "Value": [f"{manager.url}/dicom-web/studies/{study_uid}"],
                    }
                }
            ],
        },
    }
    body = workitem(
        t00404021={"vr": "SQ", "Value": [item]},
        t0020000D={"vr": "UI", "Value": [study_uid]},
        **changes,
    )
    resp = http.post(
        f"{manager.url}/dicom-web/workitems",
        params={"workitem": uid},
        data=json.dumps([body]),
        headers=JSON_TYPE,
    )
    assert resp.status_code == 201, resp.text
    return uid


def _get(manager: NodeProcess, http: requests.Session, uid: str) -> dict[str, Any]:
    resp = http.get(f"{manager.url}/dicom-web/workitems/{uid}")
    assert resp.status_code == 200, resp.text
    item: dict[str, Any] = resp.json()[0]
    return item


def _wait_final(manager: NodeProcess, http: requests.Session, uid: str) -> dict[str, Any]:
    final = ("COMPLETED", "CANCELED")
    wait_until(
        lambda: _get(manager, http, uid)["00741000"]["Value"][0] in final,
        timeout=120,
        what=f"workitem {uid} final",
    )
    return _get(manager, http, uid)


def _performed(node: NodeProcess) -> dict[str, tuple[str, str | None]]:
    with sqlite3.connect(node.data_dir / "index.sqlite") as conn:
        rows = conn.execute("SELECT uid, state, reason FROM performed_workitems").fetchall()
    return {str(uid): (str(state), reason) for uid, state, reason in rows}


def _recorded(node: NodeProcess, uid: str) -> tuple[str, str | None]:
    """The performer's final record of ``uid`` (written once the manager has answered, so a
    moment after the manager shows the final state)."""
    final = ("completed", "canceled", "lost")
    wait_until(
        lambda: _performed(node).get(uid, ("",))[0] in final,
        timeout=30,
        what=f"performer's record of {uid}",
    )
    return _performed(node)[uid]


def test_workitem_is_claimed_fetched_forwarded_and_completed(
    manager: NodeProcess, performer: NodeProcess, http: requests.Session, inputs: list[Path]
) -> None:
    study_uid = _study_uid(inputs)
    uid = _schedule(manager, http, study_uid)
    ds = _wait_final(manager, http, uid)
    assert ds["00741000"]["Value"] == ["COMPLETED"], ds
    assert check_final(ds, UpsState.COMPLETED) == []
    parsed = pydicom.Dataset.from_json(ds)
    performed = parsed.UnifiedProcedureStepPerformedProcedureSequence[0]
    assert performed.PerformedWorkitemCodeSequence[0].CodeValue == "LUNG-AI"
    assert performed.PerformedStationNameCodeSequence[0].CodeValue == "AINODE-1"
    assert (
        performed.PerformedProcedureStepEndDateTime >= performed.PerformedProcedureStepStartDateTime
    )
    # every forwarded instance, by UID, with where it went (the manager's WADO-RS)
    outputs = [pydicom.Dataset.from_json(i) for i in output_information(ds)]
    got = {
        (str(o.SeriesInstanceUID), str(ref.ReferencedSOPInstanceUID))
        for o in outputs
        for ref in o.ReferencedSOPSequence
    }
    want = set()
    for f in inputs:
        src = pydicom.dcmread(f, stop_before_pixels=True)
        want.add((str(src.SeriesInstanceUID), str(src.SOPInstanceUID)))
    assert got == want
    for o in outputs:
        assert o.TypeOfInstances == "DICOM"
        assert o.StudyInstanceUID == study_uid
        url = o.WADORSRetrievalSequence[0].RetrieveURL
        assert url == f"{manager.url}/dicom-web/studies/{study_uid}/series/{o.SeriesInstanceUID}"
        assert http.get(url + "/metadata").status_code == 200
    assert _recorded(performer, uid) == ("completed", None)
    # progress was reported as it went; the last report before completion stays
    progress = parsed.ProcedureStepProgressInformationSequence[0]
    assert progress.ProcedureStepProgress == 90
    assert progress.ProcedureStepProgressDescription == "results delivered; completing"
    # the performer's Transaction UID never leaves it: the manager does not return it
    assert "00081195" not in ds


def test_unfetchable_input_is_canceled_with_its_reason(
    manager: NodeProcess, performer: NodeProcess, http: requests.Session
) -> None:
    missing = _new_uid()
    uid = _schedule(manager, http, missing)
    ds = _wait_final(manager, http, uid)
    assert ds["00741000"]["Value"] == ["CANCELED"], ds
    assert check_final(ds, UpsState.CANCELED) == []
    progress = pydicom.Dataset.from_json(ds).ProcedureStepProgressInformationSequence[0]
    assert missing in progress.ReasonForCancellation
    assert "could not be fetched" in progress.ReasonForCancellation
    assert "404" in progress.ReasonForCancellation  # the manager's answer, passed on
    code = progress.ProcedureStepDiscontinuationReasonCodeSequence[0]
    assert (code.CodeValue, code.CodingSchemeDesignator) == ("110523", "DCM")
    state, reason = _recorded(performer, uid)
    assert state == "canceled" and reason == progress.ReasonForCancellation


def test_workitem_of_other_code_or_station_is_left_alone(
    manager: NodeProcess, performer: NodeProcess, http: requests.Session, inputs: list[Path]
) -> None:
    other_station = {
        "vr": "SQ",
        "Value": [{"00080100": {"vr": "SH", "Value": ["AINODE-9"]}}],
    }
    other_code = {"vr": "SQ", "Value": [{"00080100": {"vr": "SH", "Value": ["BRAIN-AI"]}}]}
    study_uid = _study_uid(inputs)
    left = [
        _schedule(manager, http, study_uid, t00404025=other_station),
        _schedule(manager, http, study_uid, t00404018=other_code),
    ]
    # a workitem for this performer, scheduled after them, is done: they were seen and skipped
    mine = _schedule(manager, http, study_uid)
    assert _wait_final(manager, http, mine)["00741000"]["Value"] == ["COMPLETED"]
    for uid in left:
        assert _get(manager, http, uid)["00741000"]["Value"] == ["SCHEDULED"]
        assert uid not in _performed(performer)


def test_a_claimed_workitem_is_not_claimed_again(
    manager: NodeProcess, http: requests.Session, inputs: list[Path], tmp_path: Path
) -> None:
    """A second performer asking for a workitem another one holds gets 409 and keeps off it."""
    uid = _schedule(manager, http, _study_uid(inputs), t00404018={"vr": "SQ", "Value": []})
    txn = "1.2.826.0.1.3680043.10.543.23.99.1"
    body = [
        {
            "00741000": {"vr": "CS", "Value": ["IN PROGRESS"]},
            "00081195": {"vr": "UI", "Value": [txn]},
        }
    ]
    resp = http.put(
        f"{manager.url}/dicom-web/workitems/{uid}/state", data=json.dumps(body), headers=JSON_TYPE
    )
    assert resp.status_code == 200, resp.text
    source = UpsRsSource(type="ups-rs", url=f"{manager.url}/dicom-web", auth="bearer", token=TOKEN)
    store = PerformedStore(tmp_path / "index.sqlite")
    other = Performer(
        "ris",
        source,
        store=store,
        sink=_NoSink(),
        sources={},
        node_ae_title="OTHER",
        on_study_pulled=lambda _: True,
        study_outcome=lambda _: None,
    )
    assert other.claim(uid) is None
    record = store.get(source="ris", uid=uid)
    assert record.state is PerformedState.LOST
    assert record.reason is not None and "409" in record.reason and "C302" in record.reason
    assert _get(manager, http, uid)["00741000"]["Value"] == ["IN PROGRESS"]


class _NoSink:
    def store(self, data: bytes, *, calling_aet: str | None, source: str) -> object:
        raise AssertionError("nothing is fetched by a performer that lost the claim")


def test_two_performers_never_both_claim_one_workitem(
    manager: NodeProcess,
    performer: NodeProcess,
    http: requests.Session,
    inputs: list[Path],
    tmp_path: Path,
) -> None:
    study_uid = _study_uid(inputs)
    with start_node(tmp_path, **_performer_config(tmp_path, manager)) as second:
        uids = [_schedule(manager, http, study_uid) for _ in range(4)]
        for uid in uids:
            assert _wait_final(manager, http, uid)["00741000"]["Value"] == ["COMPLETED"]
        wait_until(
            lambda: all(
                "completed"
                in (_performed(performer).get(u, ("",))[0], _performed(second).get(u, ("",))[0])
                for u in uids
            ),
            timeout=30,
            what="performers' records",
        )
        a, b = _performed(performer), _performed(second)
    done_a = {u for u in uids if a.get(u, ("",))[0] == "completed"}
    done_b = {u for u in uids if b.get(u, ("",))[0] == "completed"}
    assert done_a | done_b == set(uids)
    assert not done_a & done_b
    # whoever tried and lost a claim recorded why
    for table in (a, b):
        for u in uids:
            if u in table and table[u][0] == "lost":
                assert "409" in (table[u][1] or "")


def test_performer_killed_mid_task_finishes_the_workitem_after_restart(
    manager: NodeProcess, http: requests.Session, inputs: list[Path], tmp_path: Path
) -> None:
    """kill -9 while the workitem waits for its delivery (the destination is down): the
    restarted performer resumes it with the Transaction UID stored in its index."""
    cfg = _performer_config(tmp_path, manager)
    cfg["sources"]["ris"]["codes"] = ["KILL-AI"]  # the module's performer keeps off
    cfg["destinations"]["archive"]["url"] = f"http://127.0.0.1:{free_port()}/dicom-web"
    cfg["delivery"] = {"backoff_base_seconds": 0.2, "backoff_max_seconds": 0.5}
    code = {
        "vr": "SQ",
        "Value": [
            {
                "00080100": {"vr": "SH", "Value": ["KILL-AI"]},
                "00080102": {"vr": "SH", "Value": ["99AINODE"]},
                "00080104": {"vr": "LO", "Value": ["kill test"]},
            }
        ],
    }
    with start_node(tmp_path, **cfg) as node:
        uid = _schedule(manager, http, _study_uid(inputs), t00404018=code)
        wait_until(
            lambda: (
                _performed(node).get(uid, ("",))[0] == "in-progress"
                and _get(manager, http, uid)["00741000"]["Value"] == ["IN PROGRESS"]
            ),
            timeout=60,
            what="workitem claimed",
        )
        node.kill()
        assert _get(manager, http, uid)["00741000"]["Value"] == ["IN PROGRESS"]
        config = json.loads(node.config_path.read_text())
        config["destinations"]["archive"]["url"] = f"{manager.url}/dicom-web"
        node.config_path.write_text(json.dumps(config))
        node.start()
        ds = _wait_final(manager, http, uid)
        assert ds["00741000"]["Value"] == ["COMPLETED"], ds
        assert output_information(ds), "the resumed workitem lists its outputs"
        assert _recorded(node, uid)[0] == "completed"
        assert '"event": "workitem.resumed"' in node.log_text()


def test_event_channel_triggers_the_claim_and_a_cancel_request_is_honoured(
    manager: NodeProcess, http: requests.Session, inputs: list[Path], tmp_path: Path
) -> None:
    """With a poll interval of 10 minutes only the event channel can start the work; the
    delivery is down so the workitem waits IN PROGRESS until the manager's cancel request."""
    cfg = _performer_config(tmp_path, manager)
    cfg["node"] = {"ae_title": "AI-EVENTS"}
    cfg["sources"]["ris"].update(codes=["EVT-AI"], poll_seconds=600)
    cfg["destinations"]["archive"]["url"] = f"http://127.0.0.1:{free_port()}/dicom-web"
    code = {"vr": "SQ", "Value": [{"00080100": {"vr": "SH", "Value": ["EVT-AI"]}}]}
    with start_node(tmp_path, **cfg) as node:
        wait_until(
            lambda: '"event": "performer.events_connected"' in node.log_text(),
            timeout=60,
            what="event channel open",
        )
        uid = _schedule(manager, http, _study_uid(inputs), t00404018=code)
        wait_until(
            lambda: (
                _performed(node).get(uid, ("",))[0] == "in-progress"
                and _get(manager, http, uid)["00741000"]["Value"] == ["IN PROGRESS"]
            ),
            timeout=60,
            what="workitem claimed on its State Report",
        )
        resp = http.post(
            f"{manager.url}/dicom-web/workitems/{uid}/cancelrequest",
            data=json.dumps([{"00741238": {"vr": "LT", "Value": ["ordered twice"]}}]),
            headers=JSON_TYPE,
        )
        assert resp.status_code == 202, resp.text
        ds = _wait_final(manager, http, uid)
        assert ds["00741000"]["Value"] == ["CANCELED"], ds
        progress = pydicom.Dataset.from_json(ds).ProcedureStepProgressInformationSequence[0]
        assert progress.ReasonForCancellation == "canceled on the manager's request: ordered twice"
        assert _recorded(node, uid) == ("canceled", progress.ReasonForCancellation)


def test_a_study_no_rule_acts_on_is_canceled_not_completed_empty(
    manager: NodeProcess, http: requests.Session, inputs: list[Path], tmp_path: Path
) -> None:
    cfg = _performer_config(tmp_path, manager)
    cfg["rules"] = _rules(tmp_path, "version: 1\nrules:\n  - name: none\n    then: ignore\n")
    cfg["sources"]["ris"]["codes"] = ["IDLE-AI"]
    code = {"vr": "SQ", "Value": [{"00080100": {"vr": "SH", "Value": ["IDLE-AI"]}}]}
    with start_node(tmp_path, **cfg) as node:
        uid = _schedule(manager, http, _study_uid(inputs), t00404018=code)
        ds = _wait_final(manager, http, uid)
        assert ds["00741000"]["Value"] == ["CANCELED"], ds
        reason = pydicom.Dataset.from_json(ds).ProcedureStepProgressInformationSequence[0]
        assert reason.ReasonForCancellation == (
            f"study {_study_uid(inputs)}: no rule of this node ran a model on it or sent it"
            " anywhere"
        )
        assert _recorded(node, uid)[0] == "canceled"


def test_a_workitem_a_rule_schedules_is_performed_by_another_node(
    inputs: list[Path], tmp_path: Path
) -> None:
    """Node A's rule schedules a workitem with where to fetch its input (``node.public_url``);
    node B, a performer, claims it, fetches the series from the Retrieve URL A wrote and
    completes it: the whole hand-over with nothing but the workitem between them."""
    (tmp_path / "token").write_text(TOKEN + "\n")
    port = free_port()
    scheduling = (
        "version: 1\nrules:\n  - name: lung-ai\n    when: {Modality: CT}\n"
        "    then:\n      workitem: {code: LUNG-AI, meaning: Lung AI, station: AINODE-1}\n"
    )
    with (
        start_node(
            tmp_path / "a",
            node={"http_port": port, "public_url": f"http://127.0.0.1:{port}/"},
            auth={"tokens": {"ris": {"token_file": str(tmp_path / "token"), "role": "operator"}}},
            rules=_rules(tmp_path, scheduling),
            study={"stable_seconds": 3600},
        ) as node_a,
        create_session() as http,
    ):
        http.headers["Authorization"] = f"Bearer {TOKEN}"
        send = [sys.executable, "-m", "node", "send", "--to", f"127.0.0.1:{node_a.dicom_port}"]
        subprocess.run([*send, *map(str, inputs)], check=True, capture_output=True, timeout=120)
        study_uid = _study_uid(inputs)
        done = http.post(f"{node_a.url}/api/studies/{study_uid}/complete", timeout=120)
        assert done.status_code == 200, done.text
        listed: list[dict[str, Any]] = []

        def scheduled_one() -> bool:
            listed[:] = http.get(f"{node_a.url}/dicom-web/workitems", timeout=60).json()
            return bool(listed)

        wait_until(scheduled_one, timeout=60, what="the rule's workitem scheduled")
        [scheduled] = listed
        uid = scheduled["00080018"]["Value"][0]
        source = pydicom.Dataset.from_json(scheduled).InputInformationSequence[0]
        series_uid = str(pydicom.dcmread(inputs[0], stop_before_pixels=True).SeriesInstanceUID)
        assert source.TypeOfInstances == "DICOM"
        assert source.DICOMRetrievalSequence[0].RetrieveAETitle == "AINODE"
        url = source.WADORSRetrievalSequence[0].RetrieveURL
        assert url == f"{node_a.url}/dicom-web/studies/{study_uid}/series/{series_uid}"
        assert http.get(url + "/metadata", timeout=60).status_code == 200

        (tmp_path / "b").mkdir()
        cfg = _performer_config(tmp_path / "b", node_a)
        with start_node(tmp_path / "b", **cfg) as node_b:
            ds = _wait_final(node_a, http, uid)
            assert ds["00741000"]["Value"] == ["COMPLETED"], ds
            assert check_final(ds, UpsState.COMPLETED) == []
            assert _recorded(node_b, uid) == ("completed", None)
        outputs = [pydicom.Dataset.from_json(i) for i in output_information(ds)]
        sent = {
            str(ref.ReferencedSOPInstanceUID) for o in outputs for ref in o.ReferencedSOPSequence
        }
        assert sent == {
            str(pydicom.dcmread(f, stop_before_pixels=True).SOPInstanceUID) for f in inputs
        }
