"""The kits' health checks and stop timeouts against a real ``ainode serve``.

Every kit probes ``GET /api/health`` without a token (systemd has none, Docker HEALTHCHECK,
Compose healthcheck, Kubernetes probes) while the shipped configs turn API authentication on,
and every kit gives the node a stop timeout of 60 s.  Here the node runs with a shipped config,
changed only where this machine needs it (loopback, free ports, a temporary data folder and
token file, the embedded engine), and both claims are checked.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from ruamel.yaml import YAML

from tests.deploy.kits import AINODE_CONFIGS, REPO, SYSTEMD, parse_unit, seconds
from tests.util import free_port, wait_until

TOKEN = "probe-test-token"


def _runnable_copy(name: str, work: Path) -> tuple[Path, int]:
    yaml = YAML(typ="rt")
    data = yaml.load(AINODE_CONFIGS[name].read_text(encoding="utf-8"))
    http_port = free_port()
    data["node"].update(
        host="127.0.0.1", dicom_port=free_port(), http_port=http_port, data_dir=str(work / "data")
    )
    data["queue"] = "embedded"  # the probe and the drain are what is tested, not the engine
    (work / "token").write_text(TOKEN + "\n", encoding="utf-8")
    data["auth"]["token_file"] = str(work / "token")
    path = work / "ainode.yaml"
    with path.open("w", encoding="utf-8") as out:
        yaml.dump(data, out)
    return path, http_port


def _status(url: str, token: str | None = None) -> int:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    try:
        return httpx.get(url, headers=headers, timeout=2.0).status_code
    except httpx.HTTPError:
        return 0


@pytest.mark.slow
def test_probe_needs_no_token_and_sigterm_stops_within_the_timeout(tmp_path: Path) -> None:
    # the Kubernetes config: the strictest probes (startup, liveness, readiness) and auth on;
    # one node start is enough, the other configs are load-tested in test_configs.py
    config_path, port = _runnable_copy("kubernetes", tmp_path)
    log = (tmp_path / "serve.log").open("wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "node", "serve", "--config", str(config_path)],
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        wait_until(
            lambda: proc.poll() is not None or _status(f"{base}/api/health") == 200,
            timeout=90,
            what="ainode serve answering /api/health",
        )
        assert proc.poll() is None, (tmp_path / "serve.log").read_text(errors="replace")
        # what the probes do: no Authorization header, and still 200
        assert _status(f"{base}/api/health") == 200
        # ...while the rest of the API is closed without the token
        assert _status(f"{base}/api/studies") == 401
        assert _status(f"{base}/api/studies", TOKEN) == 200
        started = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(timeout=60)
        stopped_in = time.monotonic() - started
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)
        log.close()
    assert code == 0, (tmp_path / "serve.log").read_text(errors="replace")
    unit = parse_unit((SYSTEMD / "ainode.service").read_text(encoding="utf-8"))
    # a clean stop well inside the node's TimeoutStopSec / terminationGracePeriodSeconds
    assert stopped_in < seconds(unit["Service"]["TimeoutStopSec"][0]) / 2
