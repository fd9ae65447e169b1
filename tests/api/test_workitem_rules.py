"""A routing rule schedules a UPS workitem (issue 23 §2, ``then: {workitem: ...}``), on a real
node process: a CT study arrives by STOW-RS, completes, and the worklist holds a SCHEDULED
workitem for its series, which an external performer can claim and complete over UPS-RS."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pydicom
import pytest
import requests
import websockets.sync.client
from dicomweb_client.session_utils import create_session

from node.samples import write_ct_series
from node.store.ups import UpsState
from tests.api.conftest import multipart
from tests.api.test_workitems import OPERATOR, _auth, _check_shape, _state, _update, _value
from tests.api.upsdata import PERFORMED
from tests.peers.node import start_node
from tests.util import wait_until

RULES = """\
version: 1
rules:
  - name: lung-ai
    when: {Modality: CT}
    then:
      workitem: {code: LUNG-AI, meaning: Lung nodule detection, station: AINODE-2, priority: HIGH}
"""


@pytest.mark.slow  # a node process and a study routed
def test_a_rule_schedules_a_workitem_an_external_performer_completes(tmp_path: Path) -> None:
    (tmp_path / "rules.yaml").write_text(RULES)
    yy, xx = np.mgrid[-16:16, -16:16]
    disk = np.where(yy**2 + xx**2 < 144, 40.0, -1000.0)
    files = write_ct_series(np.stack([disk] * 3), spacing=(1, 1, 1), out_dir=tmp_path / "ct")
    first = pydicom.dcmread(files[0])
    study_uid, series_uid = str(first.StudyInstanceUID), str(first.SeriesInstanceUID)
    with (
        start_node(
            tmp_path / "n",
            node={"ae_title": "AINODE-1"},
            auth=_auth(tmp_path),
            rules=str(tmp_path / "rules.yaml"),
            study={"stable_seconds": 3600},
        ) as node,
        create_session() as http,
    ):
        http.headers["Authorization"] = f"Bearer {OPERATOR}"
        base = f"{node.url}/dicom-web/workitems"
        glob = "1.2.840.10008.5.1.4.34.5"
        assert http.post(f"{base}/{glob}/subscribers/PERFORMER").status_code == 201
        ws_url = node.url.replace("http://", "ws://") + "/dicom-web/subscribers/PERFORMER"
        headers = {"Authorization": f"Bearer {OPERATOR}"}
        with websockets.sync.client.connect(ws_url, additional_headers=headers) as channel:
            body, hdrs = multipart([p.read_bytes() for p in files])
            assert http.post(f"{node.url}/dicom-web/studies", data=body, headers=hdrs).ok
            done = http.post(f"{node.url}/api/studies/{study_uid}/complete", timeout=120)
            assert done.status_code == 200, done.text
            event = json.loads(channel.recv(timeout=60))
        found = http.get(base, params={"ScheduledWorkitemCodeSequence.CodeValue": "LUNG-AI"})
        assert found.status_code == 200, found.text
        [ds] = found.json()
        uid = _value(ds, "00080018")
        assert (_value(event, "00001000"), _value(event, "00741000")) == (uid, "SCHEDULED")
        _check_shape(ds, UpsState.SCHEDULED)
        assert _value(ds, "00741200") == "HIGH"
        assert _value(ds, "00741202") == "AINODE-1"  # Worklist Label: the node's AE title
        assert _value(ds, "00741204") == "lung-ai: Lung nodule detection"
        assert _value(ds["00404025"]["Value"][0], "00080100") == "AINODE-2"
        assert _value(ds, "00100020") == str(first.PatientID)
        [given] = ds["00404021"]["Value"]
        assert (_value(given, "0020000D"), _value(given, "0020000E")) == (study_uid, series_uid)
        sops = sorted(_value(r, "00081155") for r in given["00081199"]["Value"])
        assert sops == sorted(str(pydicom.dcmread(p).SOPInstanceUID) for p in files)
        # routing the study again (a forced completion) schedules nothing new
        assert http.post(f"{node.url}/api/studies/{study_uid}/complete", timeout=120).ok
        assert len(http.get(base).json()) == 1

        # the scheduling is audited, by the node
        def audited() -> list[dict[str, object]]:
            lines = (node.data_dir / "audit.log").read_text().splitlines()
            return [r for r in map(json.loads, lines) if r.get("workitem_uid") == uid]

        wait_until(lambda: bool(audited()), timeout=10, what="workitem.created audited")
        [record] = audited()
        assert (record["event"], record["actor"], record["rule"]) == (
            "workitem.created",
            "node",
            "lung-ai",
        )
        # an external performer claims and completes it
        txn = "1.2.826.0.1.3680043.10.543.2301.1"
        assert _state(node, http, uid, "IN PROGRESS", txn).status_code == 200
        assert _update(node, http, uid, PERFORMED, transaction=txn).status_code == 200
        assert _state(node, http, uid, "COMPLETED", txn).status_code == 200
        got = http.get(f"{base}/{uid}")
        assert _value(got.json()[0], "00741000") == "COMPLETED"
        assert isinstance(http, requests.Session)
