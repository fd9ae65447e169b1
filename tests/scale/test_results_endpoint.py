"""The node's worker callbacks in process (real node, real Redis, the real pipeline run here in
place of a worker): results are recorded and delivered once however often they arrive, the gate
refuses foreign objects, and finished jobs are not started again."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest

from node.app import Node
from node.config import parse_config
from node.jobs.celery_app import job_from_message
from node.jobs.pipeline import run_series
from node.samples.writers import write_ct_series
from tests.models.builders import write_body_model
from tests.peers.redis import start_redis
from tests.util import wait_until

TOKEN = "cb-token"


@pytest.fixture
def node(tmp_path: Path) -> Iterator[tuple[Node, httpx.Client, Path]]:
    models = tmp_path / "models"
    write_body_model(models, name="tiny-body", roi="[8, 32, 32]")
    (tmp_path / "rules.yaml").write_text(
        "version: 1\nrules:\n  - name: ct\n    when: {Modality: CT}\n"
        "    then: {model: tiny-body, deliver: [archive]}\n"
    )
    (tmp_path / "archive").mkdir()
    with start_redis(tmp_path / "redis") as redis:
        cfg = parse_config(
            f"queue: {redis.url}\n"
            "node: {data_dir: data, dicom_port: 0, http_port: 0, min_free_bytes: 0}\n"
            "study: {stable_seconds: 3600}\n"
            f"rules: rules.yaml\nmodels: [models]\nauth: {{token: {TOKEN}}}\n"
            "destinations: {archive: {type: folder, path: archive}}\n"
            "delivery: {backoff_base_seconds: 0.2}\n",
            base_dir=tmp_path,
        )
        n = Node(cfg)
        n.start()
        try:
            headers = {"Authorization": f"Bearer {TOKEN}"}
            with httpx.Client(
                base_url=f"http://127.0.0.1:{n.http_port}", headers=headers, timeout=60
            ) as http:
                yield n, http, tmp_path
        finally:
            n.stop()


def _study(node: Node, tmp: Path, seed: int) -> str:
    hu = np.random.default_rng(seed).integers(-1000, 400, size=(8, 32, 32)).astype(np.float32)
    files = write_ct_series(hu, spacing=(2.5, 1.0, 1.0), out_dir=tmp / f"in{seed}")
    for f in files:
        stored = node.spool.store(f.read_bytes(), calling_aet=None, source="stow")
    node.tracker.complete(stored.instance.study_uid)
    wait_until(lambda: len(node.jobs.list_jobs()) >= seed, timeout=30, what="job routed")
    return stored.instance.study_uid


def _multipart(parts: list[tuple[str, bytes]]) -> tuple[bytes, str]:
    b = secrets.token_hex(8)
    body = (
        b"".join(f"--{b}\r\nContent-Type: {t}\r\n\r\n".encode() + d + b"\r\n" for t, d in parts)
        + f"--{b}--\r\n".encode()
    )
    return body, f'multipart/related; type="application/dicom"; boundary={b}'


def _run_locally(node: Node, begun: dict, tmp: Path) -> list[bytes]:  # type: ignore[type-arg]
    job = job_from_message(begun["job"])
    paths = [node.config.node.data_dir / i["path"] for i in begun["instances"]]
    out = run_series(
        job,
        paths,
        context={"model_paths": [str(tmp / "models")], "device": "cpu"},
        out_dir=tmp / "scratch" / job.job_id,
        relative_to=tmp / "scratch",
    )
    return [(tmp / "scratch" / o.path).read_bytes() for o in out["objects"]]


def test_results_recorded_and_delivered_once(node: tuple[Node, httpx.Client, Path]) -> None:
    n, http, tmp = node
    _study(n, tmp, 1)
    (rec,) = n.jobs.list_jobs()
    job_id = rec.job.job_id
    begun = http.post(f"/api/jobs/{job_id}/begin", json={"worker": "w1/cpu"})
    assert begun.status_code == 200
    assert n.jobs.get(job_id).worker == "w1/cpu"
    objects = _run_locally(n, begun.json(), tmp)
    body, media = _multipart(
        [("application/json", b'{"worker": "w1/cpu", "outputs": {"device": "cpu"}}')]
        + [("application/dicom", d) for d in objects]
    )
    for _ in range(3):  # a redelivered job uploads the same results again
        resp = http.post(
            f"/api/jobs/{job_id}/results", content=body, headers={"Content-Type": media}
        )
        assert resp.status_code == 200 and resp.json()["state"] == "succeeded"
    done = n.jobs.get(job_id)
    assert done.outputs["worker"] == "w1/cpu" and len(done.outputs["objects"]) == len(objects)
    assert [e["state"] for e in n.jobs.events(job_id)].count("succeeded") == 1
    wait_until(
        lambda: len(list((tmp / "archive").rglob("*.dcm"))) == len(objects),
        timeout=60,
        what="delivered",
    )
    rows = n.outbox.list(job_id=job_id)
    assert len(rows) == len(objects)
    assert len({r.sop_uid for r in rows}) == len(objects)
    # a finished job is not started again (the redelivered message is dropped)
    again = http.post(f"/api/jobs/{job_id}/begin", json={"worker": "w2/cpu"})
    assert again.status_code == 409


def test_gate_refuses_objects_of_another_study(node: tuple[Node, httpx.Client, Path]) -> None:
    n, http, tmp = node
    _study(n, tmp, 1)
    _study(n, tmp, 2)
    first, second = sorted(n.jobs.list_jobs(), key=lambda r: r.created_at)
    b1 = http.post(f"/api/jobs/{first.job.job_id}/begin", json={"worker": "w"}).json()
    b2 = http.post(f"/api/jobs/{second.job.job_id}/begin", json={"worker": "w"}).json()
    foreign = _run_locally(n, b2, tmp)
    body, media = _multipart([("application/dicom", d) for d in foreign])
    resp = http.post(
        f"/api/jobs/{first.job.job_id}/results", content=body, headers={"Content-Type": media}
    )
    assert resp.status_code == 200 and resp.json()["state"] == "queued"  # failed, will retry
    assert "results refused" in (n.jobs.get(first.job.job_id).reason or "")
    assert not list((tmp / "archive").rglob("*.dcm"))
    assert b1["job"]["job_id"] == first.job.job_id


def test_fail_callback_requeues_then_kills(node: tuple[Node, httpx.Client, Path]) -> None:
    n, http, tmp = node
    _study(n, tmp, 1)
    (rec,) = n.jobs.list_jobs()
    states = []
    for _ in range(rec.max_attempts):
        assert (
            http.post(f"/api/jobs/{rec.job.job_id}/begin", json={"worker": "w"}).status_code == 200
        )
        resp = http.post(f"/api/jobs/{rec.job.job_id}/fail", json={"worker": "w", "reason": "oom"})
        states.append(resp.json()["state"])
    assert states == ["queued"] * (rec.max_attempts - 1) + ["dead"]
    assert n.jobs.get(rec.job.job_id).reason == "on w: oom"
