"""The console in a real headless browser (Debian chromium driven by playwright-core).

Logs in with the token, reads a study's routing explanation, edits a rule with an error and sees
the inline message, dry-runs, saves, retries a dead delivery and opens the model cards.
Screenshots go to ``docs/images/`` when ``AINODE_SCREENSHOTS=1``, else to a temporary folder.
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.api.opsnode import OpsNode, start_ops_node
from tests.conftest import require_tool

TOKEN = "console-test-token"
HERE = Path(__file__).parent
CACHE = Path(os.environ.get("AINODE_CHECKERS_CACHE", Path.home() / ".cache/ainode-checkers"))
MODULES = CACHE / "node" / "node_modules"


@pytest.fixture(scope="module")
def ops(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OpsNode]:
    yield from start_ops_node(tmp_path_factory.mktemp("console"), token=TOKEN)


@pytest.mark.slow
def test_console_in_headless_chromium(ops: OpsNode, tmp_path: Path) -> None:
    node_js = require_tool("node")
    require_tool("chromium")
    if not (MODULES / "playwright-core").is_dir():
        pytest.fail(
            f"playwright-core is missing under {MODULES}; run ../shared/tools/install-checkers"
        )
    shots = (
        HERE.parents[1] / "docs" / "images"
        if os.environ.get("AINODE_SCREENSHOTS") == "1"
        else tmp_path / "shots"
    )
    shots.mkdir(parents=True, exist_ok=True)
    base = str(ops.http.base_url).rstrip("/")
    proc = subprocess.run(
        [
            node_js,
            str(HERE / "drive.js"),
            base,
            TOKEN,
            ops.ct_study,
            ops.dx_study,
            str(shots),
            str(tmp_path / "profile"),
        ],
        env={**os.environ, "NODE_PATH": str(MODULES)},
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])

    assert out["redirected_to"] == "/console/login"
    assert out["wrong_token"] == "wrong token"
    assert set(out["studies"]) == {ops.ct_study, ops.dx_study}

    verdicts = {row[0]: (row[1], row[2]) for row in out["verdicts"]}
    assert verdicts["chest-ct-archive"][0] == "matched"
    assert verdicts["dx-to-silent"] == ("not matched", "Modality equals 'DX': seen 'CT'")
    assert "forward originals to archive" in out["routing_text"]

    assert len(out["inline_errors"]) == 1
    assert out["inline_errors"][0].startswith("line 7, column 5: unknown key 'wehn'")
    assert out["bad_line"] == ["    wehn: {Modality: DX}"]

    assert "dx-to-archive" not in out["dry_run"]  # rule names are unchanged
    assert "dx-to-silent: forward to archive" in out["dry_run"]
    assert out["saved_message"].startswith("saved and active")
    assert "+    then: {send_to: archive}" in out["diff"]
    assert out["changes"] == 1
    assert "send_to: archive" in ops.rules_path.read_text(encoding="utf-8").split("dx-to-silent")[1]

    assert out["delivery_before"] == "dead"
    assert out["delivery_after"] == "pending"  # the silent peer holds the new attempt
    assert out["after_url"] == f"/console/studies/{ops.dx_study}"

    assert any("lung-nodule-seg" in m and "demo" in m for m in out["models"])
    for name in ("studies", "study", "rules-error", "rules-saved", "delivery-retry", "models"):
        assert (shots / f"console-{name}.png").stat().st_size > 5000

    events = [r["event"] for r in ops.http.get("/api/audit").json()["records"]]
    assert {"login", "login.failed", "rules.changed", "delivery.retry"} <= set(events)
