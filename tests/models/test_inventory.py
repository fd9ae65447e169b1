"""Model identity (hashes, Device UID), usage from a real job store, routes from a rule set."""

from __future__ import annotations

import hashlib
import sys
import time
from pathlib import Path

import pytest
import torch

import dicom_rules
from node.errors import ModelError
from node.jobs.store import JobStore
from node.models.identity import device_uid, identify, stamp, weights_sha256
from node.models.inventory import inventory_rows, routes_by_model, usage_by_model
from node.models.registry import discover
from node.types import Job, Prediction
from tests.models.builders import (
    Threshold3d,
    write_body_model,
    write_entry_point_package,
    write_torchscript,
)


def test_device_uid_is_a_stable_2_25_uid_per_name_version_weights() -> None:
    uid = device_uid("m", "1.0", "ab" * 32)
    assert uid == device_uid("m", "1.0", "ab" * 32)
    assert uid.startswith("2.25.") and len(uid) <= 64 and uid[5:].isdigit()
    others = {device_uid("m", "1.1", "ab" * 32), device_uid("n", "1.0", "ab" * 32)}
    others.add(device_uid("m", "1.0", "cd" * 32))
    assert uid not in others and len(others) == 3


def test_identity_hashes_every_file_and_follows_the_weights(tmp_path: Path) -> None:
    sidecar = write_body_model(tmp_path / "a")
    one = identify(name="tiny-body", version="1.2", source="torchscript", location=str(sidecar))
    assert set(one.files) == {"tiny-body.yaml", "tiny-body.ts", "tiny-body.md"}
    for rel, digest in one.files.items():
        assert digest == hashlib.sha256((tmp_path / "a" / rel).read_bytes()).hexdigest()
    assert one.weights_sha256 == weights_sha256({"tiny-body.ts": one.files["tiny-body.ts"]})
    # an edited card changes a hash but not the weights, so not the device
    (tmp_path / "a" / "tiny-body.md").write_text("# new card\n")
    two = identify(name="tiny-body", version="1.2", source="torchscript", location=str(sidecar))
    assert two.files["tiny-body.md"] != one.files["tiny-body.md"]
    assert two.device_uid == one.device_uid
    # retrained weights: a different device
    retrained = Threshold3d()
    with torch.no_grad():
        retrained.conv.weight.mul_(2.0)
    write_torchscript(tmp_path / "a", "tiny-body", retrained, sidecar.read_text())
    three = identify(name="tiny-body", version="1.2", source="torchscript", location=str(sidecar))
    assert three.device_uid != one.device_uid


def test_registry_sets_device_uid_and_stamp_carries_it(tmp_path: Path) -> None:
    sidecar = write_body_model(tmp_path / "m")
    registry = discover([tmp_path / "m"], device="cpu", builtins=False, entry_points=False)
    model = registry.get("tiny-body")
    expected = identify(
        name="tiny-body", version="1.2", source="torchscript", location=str(sidecar)
    )
    assert model.info.device_uid == expected.device_uid
    bare = Prediction(model_name="tiny-body", model_version="1.2", task="x", is_demo=False)
    assert stamp(bare, model.info).device_uid == expected.device_uid
    own = Prediction("tiny-body", "1.2", "x", False, device_uid="2.25.1")
    assert stamp(own, model.info).device_uid == "2.25.1"  # a model's own UID is kept


def test_builtins_have_device_uids_from_their_assets() -> None:
    registry = discover([], device="cpu", entry_points=False)
    rows = inventory_rows(registry.entries(), device="cpu")
    seg = next(r for r in rows if r["name"] == "lung-nodule-seg")
    assert seg["status"] == "described" and "not loaded" in seg["checked"]
    assert "weights.pt" in seg["files"] and seg["device_uid"].startswith("2.25.")
    assert len({r["device_uid"] for r in rows}) == len(rows)


def _job(n: int, model: str) -> Job:
    return Job(
        job_id=f"job-{n}", study_uid=f"1.2.{n}", series_uids=("1.2.3",), model=model, rule="r"
    )


def test_usage_from_a_real_job_store(tmp_path: Path) -> None:
    store = JobStore(tmp_path / "index.sqlite")
    store.submit([_job(1, "seg"), _job(2, "seg"), _job(3, "seg"), _job(4, "cls")], max_attempts=2)
    for _ in range(3):
        job = store.claim("w")
        assert job is not None
        store.finish(job.job_id, ok=job.job_id != "job-3", reason=None)
    job = store.claim("w")  # job-3 again (second attempt), fails for good -> dead
    assert job is not None and job.job_id == "job-3"
    store.finish(job.job_id, ok=False, reason="boom")
    job = store.claim("w")
    assert job is not None and job.job_id == "job-4"
    store.finish(job.job_id, ok=True)
    usage = usage_by_model(lambda since: store.model_runs(since=since))
    seg = usage["seg"]["24h"]
    assert seg["runs"] == 4 and seg["failures"] == 2
    assert seg["p50_seconds"] is not None and seg["p95_seconds"] >= seg["p50_seconds"] >= 0
    assert usage["seg"]["30d"] == seg and usage["cls"]["24h"]["runs"] == 1
    later = usage_by_model(
        lambda since: store.model_runs(since=since), now=time.time() + 2 * 86_400
    )
    assert later["seg"]["24h"]["runs"] == 0 and later["seg"]["30d"]["runs"] == 4


def test_routes_by_model() -> None:
    rules = dicom_rules.parse(
        "version: 1\nrules:\n"
        "  - {name: a, when: {Modality: CT}, then: {model: seg}}\n"
        "  - {name: b, when: {Modality: CT}, then: [{model: seg}, {model: det}]}\n"
    )
    assert routes_by_model(rules) == {"seg": ["a", "b"], "det": ["b"]}


def test_unreadable_model_files_are_a_model_error(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="cannot hash"):
        identify(name="x", version="1", source="torchscript", location=str(tmp_path / "no.yaml"))


def test_entry_point_identity_from_its_distribution(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    site = tmp_path / "site"
    write_entry_point_package(site)
    dist = site / "ainode_test_models-0.1.dist-info"
    (dist / "RECORD").write_text(
        "ainode_test_models/__init__.py,,\nainode_test_models-0.1.dist-info/METADATA,,\n"
        "ainode_test_models-0.1.dist-info/RECORD,,\n"
    )
    monkeypatch.syspath_prepend(str(site))
    try:
        registry = discover([], device="cpu", builtins=False)
        model = registry.get("mean-intensity")
        [entry] = [e for e in registry.entries() if e.name == "mean-intensity"]
        assert entry.info is not None
        one = identify(
            name=entry.name, version="2.0", source="entry-point", location=entry.location
        )
        source = site / "ainode_test_models" / "__init__.py"
        assert one.files["ainode_test_models/__init__.py"] == (
            hashlib.sha256(source.read_bytes()).hexdigest()
        )
        assert "RECORD" not in " ".join(one.files) and model.info.device_uid == one.device_uid
        source.write_text(source.read_text() + "\n# retrained\n")
        two = identify(
            name=entry.name, version="2.0", source="entry-point", location=entry.location
        )
        assert two.device_uid != one.device_uid
    finally:
        sys.modules.pop("ainode_test_models", None)
