"""``ainode feedback list`` reads the verdicts stored in the node's index."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from node.cli import app
from node.store.feedback import FeedbackStore
from tests.cli.test_models_cli import ainode
from tests.models.builders import write_body_model


def test_feedback_list_filters_and_prints_json(tmp_path: Path) -> None:
    cfg = tmp_path / "ainode.yaml"
    cfg.write_text("node: {data_dir: data}\n")
    store = FeedbackStore(tmp_path / "data" / "index.sqlite")
    common = {"actor": "user:rita", "job_id": "j-1", "model": "m", "device_uid": None}
    first = store.add(
        **common, study_uid="1.2.1", model_version="1", sop_uid="2.25.1", verdict="accept"
    )
    second = store.add(
        **common,
        study_uid="1.2.2",
        model_version="2",
        sop_uid="2.25.2",
        finding_id="nodule 1",
        verdict="reject",
        comment="not a nodule",
    )
    runner = CliRunner()
    out = runner.invoke(app, ["feedback", "list", "--config", str(cfg), "--json"])
    assert out.exit_code == 0, out.output
    assert json.loads(out.output) == [second.to_json(), first.to_json()]
    out = runner.invoke(app, ["feedback", "list", "-c", str(cfg), "--json", "--study", "1.2.1"])
    assert [r["id"] for r in json.loads(out.output)] == [first.id]
    out = runner.invoke(app, ["feedback", "list", "-c", str(cfg), "--json", "--verdict", "reject"])
    assert [r["id"] for r in json.loads(out.output)] == [second.id]
    table = runner.invoke(app, ["feedback", "list", "-c", str(cfg)], env={"COLUMNS": "200"})
    assert table.exit_code == 0 and "nodule 1" in table.output
    assert "not a nodule" not in table.output  # comments only in the JSON
    bad = runner.invoke(app, ["feedback", "list", "-c", str(cfg), "--verdict", "maybe"])
    assert bad.exit_code == 2 and "--verdict must be one of" in bad.output
    assert store.counts() == {("m", "1"): {"accept": 1}, ("m", "2"): {"reject": 1}}


def test_models_list_json_shows_acceptance_per_version(tmp_path: Path) -> None:
    write_body_model(tmp_path / "models")  # tiny-body, version 1.2
    (tmp_path / "ainode.yaml").write_text("node: {data_dir: data}\nmodels: [models]\n")
    store = FeedbackStore(tmp_path / "data" / "index.sqlite")
    for version, verdict in [
        ("1.2", "accept"),
        ("1.2", "reject"),
        ("1.2", "accept"),
        ("0.9", "modify"),
    ]:
        store.add(
            actor="user:rita",
            study_uid="1.2.1",
            job_id="j-1",
            model="tiny-body",
            model_version=version,
            device_uid=None,
            sop_uid="2.25.1",
            verdict=verdict,
        )
    result = ainode("models", "list", "--json", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    body = {row["name"]: row for row in json.loads(result.stdout)}["tiny-body"]
    assert body["version"] == "1.2"
    this = {"accept": 2, "reject": 1, "modify": 0, "total": 3, "acceptance_rate": 0.6667}
    assert body["feedback"] == this
    older = {"accept": 0, "reject": 0, "modify": 1, "total": 1, "acceptance_rate": 0.0}
    assert body["feedback_by_version"] == {"0.9": older, "1.2": this}
