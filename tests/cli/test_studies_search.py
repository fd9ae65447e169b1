"""``ainode studies list`` with filters (issue 22 §1) on a real index, in-process (typer)."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from node.cli import app
from node.store.index import Index
from tests.store.test_study_search import PATIENTS, _store


def test_list_filters_json_and_audit(tmp_path: Path) -> None:
    index = Index(tmp_path / "data" / "index.sqlite")
    uids = _store(tmp_path, index)
    index.close()
    cfg = tmp_path / "ainode.yaml"
    cfg.write_text(f"node:\n  data_dir: {tmp_path / 'data'}\n", encoding="utf-8")
    runner = CliRunner()

    def run(*args: str) -> list[str]:
        r = runner.invoke(app, ["studies", "list", "--config", str(cfg), "--json", *args])
        assert r.exit_code == 0, r.output
        return [row["study_uid"] for row in json.loads(r.output)]

    assert run() == uids[::-1]
    assert run("--patient-id", "P-1") == [uids[2], uids[0]]
    assert run("--since", "2024-01-01", "--until", "2024-02-28") == [uids[1], uids[0]]
    assert run("--modality", "cr") == [uids[3]]
    assert run("--sort", "study_date", "--asc", "--limit", "2") == [uids[3], uids[0]]
    table = runner.invoke(app, ["studies", "list", "--config", str(cfg), "--accession", "ACC-2"])
    assert table.exit_code == 0 and "Roe^Richard" in table.output and "1 of 1" in table.output
    bad = runner.invoke(app, ["studies", "list", "--config", str(cfg), "--since", "2024-99-01"])
    assert bad.exit_code != 0 and "YYYY-MM-DD" in bad.output
    shown = runner.invoke(app, ["studies", "show", uids[1], "--config", str(cfg), "--json"])
    assert shown.exit_code == 0 and json.loads(shown.output)["patient_id"] == "P-2"
    audit = (tmp_path / "data" / "audit.log").read_text(encoding="utf-8")
    records = [json.loads(line) for line in audit.splitlines()]
    assert all(r["event"] == "phi.viewed" and r["actor"].startswith("cli:") for r in records)
    assert len(records) == 7 and records[1]["filters"] == ["patient_id"]
    assert records[-1]["study_uid"] == uids[1] and records[-1]["purpose"] == "ainode studies show"
    for pid, name, acc, *_ in PATIENTS:
        assert pid not in audit and name not in audit and acc not in audit
