"""The UPS rules (``node.store.ups``) and the workitem table, without a node process.

The requirement table's tags, keywords and VRs are checked against pydicom's data dictionary
(PS3.6), its PS3.4 statuses against pynetdicom's UPS status table, and every (state, request)
pair of the state machine against PS3.4 Table CC.1.1-2 written out below.
"""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
from pydicom.datadict import dictionary_VR, keyword_for_tag
from pynetdicom.status import UNIFIED_PROCEDURE_STEP_SERVICE_CLASS_STATUS

from node.errors import NotFoundError, WorkitemError
from node.store.ups import (
    REQUIREMENTS,
    UpsState,
    check_create,
    check_final,
    matches,
    parse_search,
    transition,
)
from node.store.workitems import WorkitemStore
from tests.api.upsdata import PERFORMED, workitem

S, P, C, X = (UpsState.SCHEDULED, UpsState.IN_PROGRESS, UpsState.COMPLETED, UpsState.CANCELED)
TXN, OTHER = "1.2.3.1", "1.2.3.2"


def test_requirement_rows_match_the_dicom_dictionary() -> None:
    rows = [*REQUIREMENTS, *(item for row in REQUIREMENTS for item in row.items)]
    for row in rows:
        tag = int(row.tag, 16)
        assert keyword_for_tag(tag) == row.keyword, row
        assert dictionary_VR(tag) == row.vr, row
        for column in (row.create, row.update, row.completed, row.canceled):
            assert column in ("1", "2", "3", "-"), row
        assert bool(row.items) <= (row.vr == "SQ")


#: PS3.4 Table CC.1.1-2 as the state machine answers a Change State request:
#: (current, stored txn, requested, given txn) -> HTTP status and PS3.4 status (None: accepted).
CASES = [
    (S, None, P, TXN, 200, None),
    (S, None, P, None, 400, 0xC301),
    (S, None, C, TXN, 409, 0xC310),
    (S, None, X, TXN, 409, 0xC310),
    (S, None, S, TXN, 400, 0xC303),
    (P, TXN, P, TXN, 409, 0xC302),
    (P, TXN, P, OTHER, 409, 0xC302),
    (P, TXN, C, OTHER, 409, 0xC301),
    (P, TXN, C, None, 400, 0xC301),
    (P, TXN, X, OTHER, 409, 0xC301),
    (C, TXN, C, TXN, 200, 0xB306),
    (C, TXN, X, TXN, 409, 0xC311),
    (C, TXN, P, TXN, 409, 0xC311),
    (X, TXN, X, TXN, 200, 0xB304),
    (X, TXN, C, TXN, 409, 0xC300),
    (X, None, X, TXN, 409, 0xC300),
]


@pytest.mark.parametrize(("current", "stored", "requested", "given", "http", "dimse"), CASES)
def test_the_state_machine_follows_table_cc_1_1_2(
    current: UpsState,
    stored: str | None,
    requested: UpsState,
    given: str | None,
    http: int,
    dimse: int | None,
) -> None:
    kwargs = {
        "current": current,
        "stored_transaction": stored,
        "requested": requested,
        "transaction_uid": given,
        "dataset": workitem(),
    }
    if http == 200:
        txn, warning = transition(**kwargs)  # type: ignore[arg-type]
        assert txn == (given if current is S else stored)
        assert (warning[0] if warning else None) == dimse
        return
    with pytest.raises(WorkitemError) as caught:
        transition(**kwargs)  # type: ignore[arg-type]
    assert (caught.value.http_status, caught.value.dicom_status) == (http, dimse)
    assert dimse in UNIFIED_PROCEDURE_STEP_SERVICE_CLASS_STATUS


def test_final_states_need_their_attributes() -> None:
    ds = workitem()
    assert any("(0074,1216) is missing" in p for p in check_final(ds, C))
    by_scp = {  # what the SCP adds at creation (node.store.workitems.WorkitemStore.create)
        "00080016": {"vr": "UI", "Value": ["1.2.840.10008.5.1.4.34.6.1"]},
        "00080018": {"vr": "UI", "Value": ["1.2.3"]},
        "00741202": {"vr": "LO", "Value": ["AINODE"]},
    }
    assert check_final({**ds, **by_scp, **PERFORMED}, C) == []
    assert [p.split(" ")[0] for p in check_final({**ds, **PERFORMED}, C)] == [
        "SOPClassUID",
        "SOPInstanceUID",
        "WorklistLabel",
    ]
    assert any("(0074,1002) is missing" in p for p in check_final(ds, X))
    with pytest.raises(WorkitemError) as caught:
        transition(current=P, stored_transaction=TXN, requested=C, transaction_uid=TXN, dataset=ds)
    assert caught.value.dicom_status == 0xC304
    check_create(workitem())  # the base workitem is valid


def test_search_matching() -> None:
    ds = workitem()
    assert matches(ds, parse_search([("PatientID", "PID-*")]))
    assert matches(ds, parse_search([("00100010", "Doe^*")]))
    assert not matches(ds, parse_search([("PatientID", "PID")]))
    assert matches(ds, parse_search([("ReferencedRequestSequence.AccessionNumber", "ACC-42")]))
    assert matches(ds, parse_search([("0040A370.00080050", "ACC-4?")]))
    assert matches(ds, parse_search([("PatientID", "")]))  # universal matching
    with pytest.raises(WorkitemError, match="given twice"):
        parse_search([("PatientID", "a"), ("00100020", "b")])


def test_exactly_one_of_many_concurrent_claims_wins(tmp_path: Path) -> None:
    store = WorkitemStore(tmp_path / "index.sqlite")
    store.create("1.2.3", workitem(), worklist_label="AINODE")
    barrier = threading.Barrier(6)
    won: list[str] = []
    refused: list[int] = []

    def claim(txn: str) -> None:
        own = WorkitemStore(tmp_path / "index.sqlite")
        barrier.wait(timeout=30)
        try:
            own.change_state("1.2.3", P, transaction_uid=txn)
            won.append(txn)
        except WorkitemError as exc:
            refused.append(exc.dicom_status)

    threads = [threading.Thread(target=claim, args=(f"1.2.9.{i}",)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert len(won) == 1 and refused == [0xC302] * 5
    assert store.get("1.2.3").state is P
    with pytest.raises(NotFoundError):
        store.get("1.2.4")
