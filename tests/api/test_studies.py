from __future__ import annotations

from pathlib import Path

import numpy as np
import pydicom
import pytest

from node.samples import write_ct_series, write_projection
from tests.api.conftest import RunningNode, multipart


@pytest.fixture
def three_studies(running: RunningNode, tmp_path: Path) -> list[str]:
    """Three studies stored through STOW-RS: CT (2 series of 3 + 2), DX, CT (1)."""
    a = write_ct_series(np.zeros((3, 8, 8)), spacing=(1, 1, 1), out_dir=tmp_path / "a1")
    study_a = str(pydicom.dcmread(a[0]).StudyInstanceUID)
    a += write_ct_series(
        np.zeros((2, 8, 8)), spacing=(1, 1, 1), out_dir=tmp_path / "a2", study_uid=study_a
    )
    b = [write_projection(np.zeros((16, 16)), out_dir=tmp_path / "b")]
    c = write_ct_series(np.zeros((1, 8, 8)), spacing=(1, 1, 1), out_dir=tmp_path / "c")
    uids = []
    for files in (a, b, c):
        body, headers = multipart([p.read_bytes() for p in files])
        assert running.http.post("/dicom-web/studies", content=body, headers=headers).is_success
        uids.append(str(pydicom.dcmread(files[0]).StudyInstanceUID))
    return uids


def test_list_pages_newest_first(running: RunningNode, three_studies: list[str]) -> None:
    first = running.http.get("/api/studies", params={"limit": 2}).json()
    assert [s["study_uid"] for s in first["studies"]] == three_studies[::-1][:2]
    assert first["limit"] == 2 and first["offset"] == 0
    assert first["next"] is not None
    second = running.http.get(first["next"]).json()
    assert [s["study_uid"] for s in second["studies"]] == [three_studies[0]]
    assert second["next"] is None
    row = second["studies"][0]
    assert row["instance_count"] == 5 and row["series_count"] == 2
    assert row["state"] == "open" and row["completed_at"] is None
    assert row["first_received"].endswith("+00:00")
    assert row["url"] == f"/api/studies/{three_studies[0]}"


def test_show_study_has_series_and_events(running: RunningNode, three_studies: list[str]) -> None:
    detail = running.http.get(f"/api/studies/{three_studies[0]}").json()
    assert sorted(s["instance_count"] for s in detail["series"]) == [2, 3]
    assert {s["modality"] for s in detail["series"]} == {"CT"}
    assert {s["body_part"] for s in detail["series"]} == {"CHEST"}
    kinds = [e["kind"] for e in detail["events"]]
    assert kinds.count("stored") == 5
    assert detail["event_count"] == len(kinds)
    latest = running.http.get(f"/api/studies/{three_studies[0]}", params={"events": 2}).json()
    assert latest["events"] == detail["events"][-2:]
    assert latest["event_count"] == detail["event_count"]
    dx = running.http.get(f"/api/studies/{three_studies[1]}").json()
    assert [s["modality"] for s in dx["series"]] == ["DX"]
    # patient data only for roles in console.phi_roles: an open node's caller is an admin
    # (tests/api/test_studies_search.py: masked for a viewer)
    shown = running.http.get(f"/api/studies/{three_studies[0]}").json()
    assert shown["phi"] == "shown" and shown["patient_name"] == "DEMO^CHEST PHANTOM"


def test_force_completion(running: RunningNode, three_studies: list[str]) -> None:
    uid = three_studies[1]
    resp = running.http.post(f"/api/studies/{uid}/complete")
    assert resp.status_code == 200
    body = resp.json()
    assert body["changed"] is True
    assert body["state"] == "complete" and body["generation"] == 1
    assert body["completed_at"] is not None
    assert [e["kind"] for e in body["events"]][-1] == "study-completed"
    again = running.http.post(f"/api/studies/{uid}/complete").json()
    assert again["changed"] is False and again["generation"] == 1
    listed = running.http.get("/api/studies").json()["studies"]
    others = {s["study_uid"]: s["state"] for s in listed}
    assert others == {three_studies[0]: "open", uid: "complete", three_studies[2]: "open"}
