"""``ainode rules replay`` on a real index (the stored studies of tests/routing/test_replay.py)."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from node.cli import app
from tests.routing.test_replay import NEW, OLD, Stored, stored  # noqa: F401 - the fixture

runner = CliRunner()


def _config(tmp_path: Path) -> Path:
    (tmp_path / "old.yaml").write_text(OLD, encoding="utf-8")
    (tmp_path / "new.yaml").write_text(NEW, encoding="utf-8")
    out = tmp_path / "out"
    config = tmp_path / "ainode.yaml"
    config.write_text(
        f"node: {{data_dir: {tmp_path}}}\n"
        f"rules: {tmp_path / 'old.yaml'}\n"
        "destinations:\n"
        + "".join(
            f"  {d}: {{type: folder, path: {out / d}}}\n" for d in ("pacs", "viewer", "archive")
        ),
        encoding="utf-8",
    )
    return config


def test_replay_json(stored: Stored, tmp_path: Path) -> None:  # noqa: F811
    config = _config(tmp_path)
    args = ["rules", "replay", "--rules", str(tmp_path / "new.yaml"), "--config", str(config)]
    result = runner.invoke(app, [*args, "--since", "7d", "--json"])
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout)
    assert out["active_rules"] == str(tmp_path / "old.yaml")
    assert {s["study_uid"] for s in out["studies"]} == {stored.chest, stored.dx}  # changed only
    chest = next(s for s in out["studies"] if s["study_uid"] == stored.chest)
    assert [a["model"] for a in chest["diff"]["models_added"]] == ["nodule-det"]
    assert out["totals"]["studies"] == 3 and out["totals"]["extra_runs"] == 0
    every = json.loads(runner.invoke(app, [*args, "--since", "60d", "--json", "--all"]).stdout)
    assert every["totals"]["studies"] == 4 and len(every["studies"]) == 4


def test_replay_table(stored: Stored, tmp_path: Path) -> None:  # noqa: F811
    config = _config(tmp_path)
    result = runner.invoke(
        app,
        ["rules", "replay", "--rules", str(tmp_path / "new.yaml"), "--config", str(config)],
    )
    assert result.exit_code == 0, result.output
    text = result.stdout
    assert f"{stored.chest}  (stored)  runs 1 -> 2" in text
    assert f"    +nodule-det on {stored.chest_series}" in text
    assert f"    lung-seg on {stored.chest_series}: deliver pacs -> pacs,viewer" in text
    assert "    newly ignored " in text and "    -cxr on " in text
    assert text.splitlines()[-2].split()[:6] == ["total", "3", "2", "3", "3", "+0"]
    assert "nothing was queued" in text.splitlines()[-1]


def test_replay_errors(stored: Stored, tmp_path: Path) -> None:  # noqa: F811
    config = _config(tmp_path)
    bad = tmp_path / "bad.yaml"
    bad.write_text("version: 1\nrules:\n  - name: a\n    then: {send_to: nowhere}\n")
    result = runner.invoke(app, ["rules", "replay", "--rules", str(bad), "--config", str(config)])
    assert result.exit_code == 2
    assert result.stderr.startswith(f"{bad}:4:21: unknown destination 'nowhere'")
    result = runner.invoke(
        app,
        [
            "rules",
            "replay",
            "--rules",
            str(tmp_path / "new.yaml"),
            "--config",
            str(config),
            "--since",
            "yesterday",
        ],
    )
    assert result.exit_code == 2 and "give a duration" in result.stderr


def test_replay_is_audited(stored: Stored, tmp_path: Path) -> None:  # noqa: F811
    """``rules.replayed`` in the node's audit log: the OS user, both files' sha256, counts."""
    import getpass
    import hashlib

    from node.audit import AuditLog

    config = _config(tmp_path)
    args = ["rules", "replay", "--rules", str(tmp_path / "new.yaml"), "--config", str(config)]
    assert runner.invoke(app, [*args, "--since", "7d", "--json"]).exit_code == 0
    log = AuditLog(tmp_path)
    try:
        (rec,) = log.list(event="rules.replayed", limit=10)
    finally:
        log.close()
    assert rec.actor == f"cli:{getpass.getuser()}" and rec.study_uid is None
    d = rec.detail
    assert d["via"] == "cli"
    assert d["rules_sha256"] == hashlib.sha256(NEW.encode("utf-8")).hexdigest()
    assert d["active_sha256"] == hashlib.sha256(OLD.encode("utf-8")).hexdigest()
    assert (d["studies"], d["changed"], d["extra_runs"]) == (3, 2, 0)
    assert stored.chest not in str(d) and stored.dx not in str(d)
