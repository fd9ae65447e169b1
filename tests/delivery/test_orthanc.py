"""Delivery into a real Orthanc by DIMSE, STOW-RS and REST; outage and restart; kill -9."""

from __future__ import annotations

import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
from io import BytesIO
from pathlib import Path
from typing import Any

import httpx
import pydicom
import pytest

from node.config import (
    DeliveryConfig,
    DicomwebDestination,
    DimseDestination,
    OrthancDestination,
)
from node.delivery import Outbox
from node.delivery.orthanc import has_labels
from node.types import DeliveryState
from tests.delivery.conftest import SimClock
from tests.delivery.storescp import start_storescp
from tests.peers.orthanc import OrthancPeer, start_orthanc
from tests.util import free_port, wait_until

ROOT = Path(__file__).resolve().parents[2]


def _dests(peer: OrthancPeer) -> dict[str, Any]:
    http = peer.url
    return {
        "pacs": DimseDestination(host="127.0.0.1", port=peer.dicom_port, ae_title=peer.aet),
        "web": DicomwebDestination(type="dicomweb", url=f"{http}/dicom-web"),
        "rest": OrthancDestination(type="orthanc", url=http),
    }


def _series_in_orthanc(url: str) -> dict[str, set[str]]:
    """Series Instance UID -> SOP Instance UIDs stored in the Orthanc at ``url``."""
    out: dict[str, set[str]] = {}
    for sid in httpx.get(f"{url}/series", timeout=30).json():
        s = httpx.get(f"{url}/series/{sid}", timeout=30).json()
        uid = s["MainDicomTags"]["SeriesInstanceUID"]
        for iid in s["Instances"]:
            tags = httpx.get(f"{url}/instances/{iid}", timeout=30).json()["MainDicomTags"]
            out.setdefault(uid, set()).add(tags["SOPInstanceUID"])
    return out


def _uids(paths: list[Path]) -> tuple[str, set[str]]:
    headers = [pydicom.dcmread(p, stop_before_pixels=True) for p in paths]
    series = {str(h.SeriesInstanceUID) for h in headers}
    assert len(series) == 1
    return series.pop(), {str(h.SOPInstanceUID) for h in headers}


def test_dimse_stow_rest_all_arrive_in_the_right_series(
    tmp_path: Path,
    clock: SimClock,
    orthanc: OrthancPeer,
    chest_ct: list[Path],
    seg_file: Path,
    sr_file: Path,
    corpus: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    liver = sorted((corpus / "ct" / "abdomen-liver-ct-ge-lightspeed-3sl").glob("*.dcm"))
    dests = _dests(orthanc)
    # labels need Orthanc >= 1.12; this 1.10 refuses them and the upload must still count
    dests["rest"] = dests["rest"].model_copy(update={"labels": ["ai-result"]})
    box = Outbox(tmp_path / "index.sqlite", dests, clock=clock)
    box.enqueue_many(chest_ct, destinations=["pacs"], job_id="j-dimse")
    box.enqueue_many([seg_file, sr_file], destinations=["web"], job_id="j-stow")
    box.enqueue_many(liver, destinations=["rest"], job_id="j-rest")
    box.run_once()
    assert box.counts() == {
        "pacs": {"delivered": 30},
        "web": {"delivered": 2},
        "rest": {"delivered": 3},
    }
    stored = _series_in_orthanc(orthanc.url)
    for group in (chest_ct, [seg_file], [sr_file], liver):
        series_uid, sops = _uids(group)
        assert stored[series_uid] == sops
    assert len(orthanc.instances()) == 35
    assert [r.message for r in caplog.records].count("orthanc.labels_unsupported") == 1
    # a second round (same UIDs, e.g. a retried job) keeps exactly one copy each
    for row in box.list():
        box.retry(row.id)
    box.run_once()
    assert len(orthanc.instances()) == 35
    box.close()


def test_stow_basic_auth_wrong_then_right_password(
    tmp_path: Path, clock: SimClock, chest_ct: list[Path]
) -> None:
    with start_orthanc(tmp_path / "o", users={"ai": "s3cret"}) as peer:
        base = peer.url
        url = f"{base}/dicom-web"
        bad = DicomwebDestination(
            type="dicomweb", url=url, auth="basic", username="ai", password="wrong"
        )
        good = bad.model_copy(update={"password": "s3cret"})
        box = Outbox(tmp_path / "index.sqlite", {"bad": bad, "good": good}, clock=clock)
        box.enqueue_many(chest_ct[:3], destinations=["bad", "good"], job_id="j")
        box.run_once()
        assert box.counts() == {"bad": {"pending": 3}, "good": {"delivered": 3}}
        assert "HTTP 401" in (box.list(destination="bad")[0].last_error or "")
        r = httpx.get(f"{base}/instances", auth=("ai", "s3cret"), timeout=30)
        assert len(r.json()) == 3
        box.close()


BEARER_FILTER = """
function IncomingHttpRequestFilter(method, uri, ip, username, httpHeaders)
  return httpHeaders['authorization'] == 'Bearer t0ken'
end
"""


def test_stow_bearer_token(tmp_path: Path, clock: SimClock, chest_ct: list[Path]) -> None:
    with start_orthanc(tmp_path / "o", lua=BEARER_FILTER) as peer:
        url = f"{peer.url}/dicom-web"
        good = DicomwebDestination(type="dicomweb", url=url, auth="bearer", token="t0ken")
        bad = good.model_copy(update={"token": "stolen"})
        box = Outbox(tmp_path / "index.sqlite", {"good": good, "bad": bad}, clock=clock)
        box.enqueue_many(chest_ct[:2], destinations=["good", "bad"], job_id="j")
        box.run_once()
        assert box.counts() == {"good": {"delivered": 2}, "bad": {"pending": 2}}
        assert "HTTP 403" in (box.list(destination="bad")[0].last_error or "")
        r = httpx.get(
            f"{peer.url}/instances", headers={"Authorization": "Bearer t0ken"}, timeout=60
        )
        assert len(r.json()) == 2
        box.close()


@pytest.mark.slow
def test_orthanc_down_then_restarted_everything_arrives_once(
    tmp_path: Path, clock: SimClock, chest_ct: list[Path], seg_file: Path, sr_file: Path
) -> None:
    http_port, dicom_port = free_port(), free_port()
    workdir = tmp_path / "orthanc"
    with start_orthanc(workdir, http_port=http_port, dicom_port=dicom_port) as peer:
        dests = _dests(peer)
    # Orthanc is stopped now; results keep coming
    box = Outbox(tmp_path / "index.sqlite", dests, clock=clock, rng=random.Random(5))
    box.enqueue_many(chest_ct[:10], destinations=["pacs"], job_id="j1")
    box.enqueue_many(chest_ct[10:20], destinations=["web"], job_id="j2")
    box.enqueue_many(chest_ct[20:], destinations=["rest"], job_id="j3")
    box.enqueue_many([seg_file, sr_file], destinations=["pacs", "web", "rest"], job_id="j4")
    for _ in range(2):  # simulated rounds of back-off
        box.run_once()
        clock.advance(DeliveryConfig().backoff_max_seconds)
    assert {r.state for r in box.list()} == {DeliveryState.PENDING}
    assert all(r.attempts >= 1 for r in box.list())
    with start_orthanc(workdir, http_port=http_port, dicom_port=dicom_port) as peer:
        clock.advance(DeliveryConfig().backoff_max_seconds)
        box.run_once()
        assert {r.state for r in box.list()} == {DeliveryState.DELIVERED}
        assert len(peer.instances()) == 32
        stored = _series_in_orthanc(peer.url)
        series_uid, sops = _uids(chest_ct)
        assert stored[series_uid] == sops
    box.close()


RUNNER = """
import sys, json, time, pathlib
from node.config import DimseDestination, DeliveryConfig
from node.delivery import Outbox
from node.delivery.orthanc import has_labels
cfg = json.loads(pathlib.Path(sys.argv[1]).read_text())
dests = {"pacs": DimseDestination(**cfg["dest"])}
box = Outbox(pathlib.Path(cfg["db"]), dests, policy=DeliveryConfig(batch_size=1), poll_seconds=0.1)
if cfg.get("enqueue"):
    box.enqueue_many([pathlib.Path(p) for p in cfg["files"]], destinations=["pacs"], job_id="j")
    print("enqueued", flush=True)
box.start()
while box.counts().get("pacs", {}).get("pending", 0):
    time.sleep(0.05)
print("done", flush=True)
box.close()
"""


@pytest.mark.slow
def test_kill_9_with_deliveries_pending_then_restart_completes(
    tmp_path: Path, orthanc: OrthancPeer, chest_ct: list[Path]
) -> None:
    db = tmp_path / "data" / "index.sqlite"
    cfg = {
        "db": str(db),
        "dest": {"host": "127.0.0.1", "port": orthanc.dicom_port, "ae_title": orthanc.aet},
        "files": [str(p) for p in chest_ct],
        "enqueue": True,
    }
    cfg_path = tmp_path / "cfg.json"
    cfg_path.write_text(json.dumps(cfg))
    script = tmp_path / "runner.py"
    script.write_text(RUNNER)
    env = dict(os.environ, PYTHONPATH=str(ROOT))

    def delivered() -> int:
        if not db.exists():
            return 0
        conn = sqlite3.connect(db, timeout=10)
        try:
            return int(
                conn.execute("SELECT COUNT(*) FROM outbox WHERE state='delivered'").fetchone()[0]
            )
        except sqlite3.OperationalError:
            return 0
        finally:
            conn.close()

    proc = subprocess.Popen([sys.executable, str(script), str(cfg_path)], env=env)
    try:
        wait_until(lambda: delivered() >= 3, timeout=60, what="first deliveries")
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)
    before = delivered()
    assert before < 30, "the run finished before the kill; nothing pending to recover"
    cfg["enqueue"] = False
    cfg_path.write_text(json.dumps(cfg))
    out = subprocess.run(
        [sys.executable, str(script), str(cfg_path)],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    conn = sqlite3.connect(db)
    rows = conn.execute("SELECT sop_uid, state FROM outbox").fetchall()
    conn.close()
    assert len(rows) == 30 and {s for _, s in rows} == {"delivered"}
    assert len({u for u, _ in rows}) == 30
    assert len(orthanc.instances()) == 30
    series_uid, sops = _uids(chest_ct)
    assert _series_in_orthanc(orthanc.url)[series_uid] == sops


def test_orthanc_and_storescp_as_two_dimse_destinations(
    tmp_path: Path, orthanc: OrthancPeer, chest_ct: list[Path]
) -> None:
    """Real worker threads, real time: the same series to two DIMSE peers at once."""
    with start_storescp(tmp_path / "scp") as scp:
        dests = {
            "pacs": DimseDestination(host="127.0.0.1", port=orthanc.dicom_port, ae_title="ORTHANC"),
            "second": DimseDestination(host="127.0.0.1", port=scp.port, ae_title=scp.aet),
        }
        box = Outbox(tmp_path / "index.sqlite", dests, poll_seconds=0.1)
        box.start()
        try:
            box.enqueue_many(chest_ct, destinations=["pacs", "second"], job_id="j")
            want = {"pacs": {"delivered": 30}, "second": {"delivered": 30}}
            wait_until(lambda: box.counts() == want, timeout=120, what="both delivered")
        finally:
            box.close()
        assert len(orthanc.instances()) == 30
        assert len(scp.files()) == 30


def test_compressed_originals_go_unchanged_when_the_peer_accepts_them(
    tmp_path: Path, clock: SimClock, orthanc: OrthancPeer, corpus: Path
) -> None:
    folder = corpus / "transfer-syntax" / "ge-ct-slice-15-syntaxes"
    names = [
        "CTImage.dcm_JPEG2000LosslessOnlyTransferSyntax_1.2.840.10008.1.2.4.90.dcm",
        "CTImage.dcm_JPEGLSLosslessTransferSyntax_1.2.840.10008.1.2.4.80.dcm",
        "CTImage.dcm_RLELosslessTransferSyntax_1.2.840.10008.1.2.5.dcm",
    ]
    pacs = _dests(orthanc)["pacs"]
    dests = {f"pacs{i}": pacs for i in range(len(names))}  # the files share one SOP UID
    box = Outbox(tmp_path / "index.sqlite", dests, clock=clock)
    for i, name in enumerate(names):
        src = folder / name
        ts = str(pydicom.dcmread(src, stop_before_pixels=True).file_meta.TransferSyntaxUID)
        (rid,) = box.enqueue(src, destinations=[f"pacs{i}"], job_id=name)
        box.run_once()
        row = box.get(rid)
        assert row.state is DeliveryState.DELIVERED and row.sent_transfer_syntax_uid == ts
        (iid,) = orthanc.instances()
        stored = httpx.get(f"{orthanc.url}/instances/{iid}/file", timeout=30).content
        assert str(pydicom.dcmread(BytesIO(stored)).file_meta.TransferSyntaxUID) == ts
        httpx.delete(f"{orthanc.url}/instances/{iid}", timeout=30).raise_for_status()
    box.close()


def test_has_labels_reads_the_orthanc_version() -> None:
    assert has_labels("1.10.1") is False
    assert has_labels("1.12.0") is True
    assert has_labels("2.0.1") is True
    assert has_labels("mainline-20240101") is True
    assert has_labels("") is None


def test_orthanc_metadata_on_every_instance_and_labels_noted_as_unsupported(
    tmp_path: Path,
    clock: SimClock,
    chest_ct: list[Path],
    seg_file: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    declared = {"UserMetadata": {"AiModel": 1024, "AiNode": 1025}}
    with start_orthanc(tmp_path / "o", extra=declared) as peer:
        rest = OrthancDestination(
            type="orthanc",
            url=peer.url,
            metadata={"AiModel": "nodule-v1", "AiNode": "ainode test"},
            labels=["ai-result"],
        )
        undeclared = OrthancDestination(type="orthanc", url=peer.url, metadata={"Nope": "x"})
        box = Outbox(tmp_path / "index.sqlite", {"rest": rest, "odd": undeclared}, clock=clock)
        box.enqueue_many(chest_ct[:5], destinations=["rest"], job_id="j")
        box.enqueue(seg_file, destinations=["odd"], job_id="j")
        box.run_once()
        box.enqueue_many(chest_ct[5:8], destinations=["rest"], job_id="j2")  # a second batch
        box.run_once()
        assert box.counts() == {"rest": {"delivered": 8}, "odd": {"delivered": 1}}
        _, sent = _uids(chest_ct[:8])
        seen = set()
        for iid in peer.instances():
            meta = peer.get(f"/instances/{iid}/metadata?expand")
            assert isinstance(meta, dict)
            sop = httpx.get(f"{peer.url}/instances/{iid}", timeout=30).json()["MainDicomTags"]
            if sop["SOPInstanceUID"] in sent:
                assert meta["AiModel"] == "nodule-v1" and meta["AiNode"] == "ainode test"
                seen.add(sop["SOPInstanceUID"])
            else:
                assert "AiModel" not in meta and "Nope" not in meta
        assert seen == sent
        for row in box.list(destination="rest"):
            assert row.last_error == (
                "labels not attached: Orthanc 1.10.1 has no labels "
                "(they need Orthanc 1.12 or later)"
            )
        (odd,) = box.list(destination="odd")
        assert odd.state is DeliveryState.DELIVERED
        assert "metadata 'Nope' not attached: Orthanc answered HTTP 404" in (odd.last_error or "")
        assert "UserMetadata" in (odd.last_error or "")
        events = [r.message for r in caplog.records]
        assert events.count("orthanc.labels_unsupported") == 1
        assert events.count("orthanc.metadata_refused") == 1
        box.close()
