from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from node.cli import app
from node.jobs import JobStore, job_id_for
from node.types import Job


def test_jobs_list_show_retry_cancel(tmp_path: Path) -> None:
    cfg = tmp_path / "ainode.yaml"
    cfg.write_text("node: {data_dir: data}\n")
    store = JobStore(tmp_path / "data" / "index.sqlite")
    jid = job_id_for(study_uid="1.2", rule="r", model="m", input_fingerprint="x")
    store.submit([Job(job_id=jid, study_uid="1.2", series_uids=("1.2.3",), model="m", rule="r")])
    runner = CliRunner()
    out = runner.invoke(app, ["jobs", "list", "--config", str(cfg), "--json"])
    assert out.exit_code == 0, out.output
    assert [j["job_id"] for j in json.loads(out.output)] == [jid]
    out = runner.invoke(app, ["jobs", "cancel", jid, "--config", str(cfg)])
    assert out.exit_code == 0
    out = runner.invoke(app, ["jobs", "list", "--config", str(cfg), "--json", "--state", "queued"])
    assert json.loads(out.output) == []
    out = runner.invoke(app, ["jobs", "retry", jid, "--config", str(cfg)])
    assert out.exit_code == 0
    shown = json.loads(runner.invoke(app, ["jobs", "show", jid, "--config", str(cfg)]).output)
    assert shown["state"] == "queued"
    assert [e["state"] for e in shown["events"]] == ["queued", "cancelled", "queued"]
    bad = runner.invoke(app, ["jobs", "list", "--config", str(cfg), "--state", "nope"])
    assert bad.exit_code == 2
