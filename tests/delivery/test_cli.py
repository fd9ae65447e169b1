"""``ainode deliveries list|retry`` on a real outbox, through the real CLI process."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from node.config import DeliveryConfig, FolderDestination
from node.delivery import Outbox
from node.types import DeliveryState

ROOT = Path(__file__).resolve().parents[2]


def _cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    return subprocess.run(
        [sys.executable, "-m", "node", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_list_json_and_retry(tmp_path: Path, chest_ct: list[Path]) -> None:
    blocker = tmp_path / "blocked"
    blocker.write_text("x")
    cfg = tmp_path / "ainode.yaml"
    cfg.write_text(
        "node:\n  data_dir: data\n"
        "destinations:\n  arch:\n    type: folder\n    path: blocked/arch\n"
        "delivery:\n  max_attempts: 1\n"
    )
    dest = {"arch": FolderDestination(type="folder", path=blocker / "arch")}
    box = Outbox(tmp_path / "data" / "index.sqlite", dest, policy=DeliveryConfig(max_attempts=1))
    ids = box.enqueue_many(chest_ct[:3], destinations=["arch"], job_id="job-7")
    box.run_once()
    assert {r.state for r in box.list()} == {DeliveryState.DEAD}

    out = _cli("deliveries", "list", "--json", "--config", str(cfg), cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    rows = json.loads(out.stdout)
    assert sorted(r["id"] for r in rows) == sorted(ids)
    assert {r["state"] for r in rows} == {"dead"}
    assert all("cannot create folder" in r["last_error"] for r in rows)

    text = _cli("deliveries", "list", "--state", "dead", cwd=tmp_path)  # ./ainode.yaml
    assert text.returncode == 0 and "cannot create folder" in text.stdout

    blocker.unlink()
    one = _cli("deliveries", "retry", str(ids[0]), "--config", str(cfg), cwd=tmp_path)
    assert one.returncode == 0, one.stderr
    assert box.get(ids[0]).state is DeliveryState.PENDING
    assert box.get(ids[1]).state is DeliveryState.DEAD
    rest = _cli("deliveries", "retry", "--all-dead", "--config", str(cfg), cwd=tmp_path)
    assert rest.returncode == 0 and "2 dead deliveries" in rest.stdout
    box.run_once()
    assert box.counts() == {"arch": {"delivered": 3}}
    box.close()


def test_errors_are_one_line_and_exit_2(tmp_path: Path) -> None:
    cfg = tmp_path / "ainode.yaml"
    cfg.write_text("node:\n  data_dir: data\n")
    out = _cli("deliveries", "list", "--config", str(cfg), cwd=tmp_path)
    assert out.returncode == 2 and out.stderr.startswith("ainode: error: no index at")
    bad = _cli("deliveries", "retry", cwd=tmp_path)
    assert bad.returncode == 2 and "either a delivery ID or --all-dead" in bad.stderr
    nope = _cli("pull", "--from", "pacs", "--study", "1.2.3", "--config", str(cfg), cwd=tmp_path)
    assert nope.returncode == 2 and "unknown source 'pacs'" in nope.stderr
