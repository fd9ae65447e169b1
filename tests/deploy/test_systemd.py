"""The systemd units: systemd's own verifier and security analyser, plus the keys we rely on."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

from tests.deploy.kits import SYSTEMD, config, parse_unit, seconds, tool

UNITS = ["ainode.service", "ainode-worker@.service"]
INSTALLED_BINARY = "/opt/ainode/.venv/bin/ainode"  # deploy/install.sh makes .venv in /opt/ainode


def _analyze() -> str:
    path = tool("systemd-analyze")
    if path is None:
        pytest.skip("systemd-analyze is not installed; test_hardening_keys checks the units")
    return path


def _staged(tmp_path: Path, name: str, text: str) -> Path:
    """A copy of a unit whose ExecStart binary exists here (verify checks it is executable)."""
    true = tool("true")
    assert true is not None
    assert INSTALLED_BINARY in text
    path = tmp_path / name
    path.write_text(text.replace(INSTALLED_BINARY, true), encoding="utf-8")
    return path


def _verify(path: Path) -> str:
    """systemd-analyze verify: its complaints about the unit (it exits 0 on many of them)."""
    proc = subprocess.run(
        [_analyze(), "verify", path.name],
        cwd=path.parent,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    complaints = (proc.stdout + proc.stderr).strip()
    return complaints if complaints or proc.returncode == 0 else f"exit {proc.returncode}"


@pytest.mark.parametrize("name", UNITS)
def test_systemd_analyze_verify_is_silent(tmp_path: Path, name: str) -> None:
    text = (SYSTEMD / name).read_text(encoding="utf-8")
    assert _verify(_staged(tmp_path, name, text)) == ""


def test_verify_reports_a_misplaced_key(tmp_path: Path) -> None:
    # the check above can fail: a key in the wrong section is reported and caught
    text = (SYSTEMD / "ainode.service").read_text(encoding="utf-8")
    text = text.replace("[Service]\n", "[Service]\nStartLimitIntervalSec=60\nProtectSystm=strict\n")
    complaints = _verify(_staged(tmp_path, "ainode.service", text))
    assert "Unknown key 'StartLimitIntervalSec'" in complaints
    assert "Unknown key 'ProtectSystm'" in complaints


@pytest.mark.parametrize("name", UNITS)
def test_security_exposure_is_low(tmp_path: Path, name: str) -> None:
    text = (SYSTEMD / name).read_text(encoding="utf-8")
    staged = _staged(tmp_path, name, text)
    proc = subprocess.run(
        [_analyze(), "security", "--offline=yes", "--threshold=25", staged.name],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    found = re.search(r"Overall exposure level for \S+: (\d+\.\d+)", proc.stdout)
    assert found, proc.stdout + proc.stderr
    # 0 = fully sandboxed, 10 = none; systemd calls <= 2.x "OK"
    assert float(found.group(1)) <= 2.5, proc.stdout
    assert proc.returncode == 0, proc.stdout + proc.stderr


@pytest.mark.parametrize("name", UNITS)
def test_hardening_keys(name: str) -> None:
    unit = parse_unit((SYSTEMD / name).read_text(encoding="utf-8"))
    svc = unit["Service"]
    one = {key: values[-1] for key, values in svc.items()}
    assert one["User"] == "ainode" or one.get("DynamicUser") == "yes"
    for key, want in {
        "NoNewPrivileges": "yes",
        "ProtectSystem": "strict",
        "ProtectHome": "yes",
        "PrivateTmp": "yes",
        "CapabilityBoundingSet": "",
        "AmbientCapabilities": "",
        "Restart": "on-failure",
        "RestrictNamespaces": "yes",
        "LockPersonality": "yes",
    }.items():
        assert one.get(key) == want, f"{name}: {key}={one.get(key)!r}, want {want!r}"
    assert "@system-service" in svc["SystemCallFilter"]
    families = one["RestrictAddressFamilies"].split()
    assert {"AF_UNIX", "AF_INET", "AF_INET6"} <= set(families)
    assert "AF_PACKET" not in families
    assert one["MemoryMax"].endswith("G")
    assert one["ReadWritePaths"]
    assert "StartLimitIntervalSec" in unit["Unit"]  # [Service] ignores it (with a warning)


def test_node_unit_runs_serve_on_the_config_data_dir() -> None:
    svc = parse_unit((SYSTEMD / "ainode.service").read_text(encoding="utf-8"))["Service"]
    assert svc["ExecStart"] == [f"{INSTALLED_BINARY} serve --config /etc/ainode/ainode.yaml"]
    for setup in ("systemd-single-box", "systemd-cluster-node"):
        data_dir = config(setup).node.data_dir
        assert str(data_dir) in svc["ReadWritePaths"], setup
        assert data_dir == Path("/var/lib") / svc["StateDirectory"][0]
    # node.stop() joins its threads with 10 s deadlines: a minute is a drain, not a guess
    assert 30 <= seconds(svc["TimeoutStopSec"][0]) <= 120


def test_worker_unit_drains_the_longest_job() -> None:
    svc = parse_unit((SYSTEMD / "ainode-worker@.service").read_text(encoding="utf-8"))["Service"]
    (exec_start,) = svc["ExecStart"]
    assert exec_start.startswith(
        f"{INSTALLED_BINARY} worker --config /etc/ainode/ainode.yaml --device %i"
    )
    worker, node = config("systemd-cluster-worker"), config("systemd-cluster-node")
    assert worker.inference.job_timeout_seconds == node.inference.job_timeout_seconds
    stop = seconds(svc["TimeoutStopSec"][0])
    assert stop >= worker.inference.job_timeout_seconds + 30
    assert svc["KillMode"] == ["mixed"]  # SIGTERM to the main process: Celery's warm shutdown
    assert svc["DevicePolicy"] == ["closed"]  # only the NVIDIA devices below get through
    assert any(v.startswith("char-nvidia") for v in svc["DeviceAllow"])


def test_sysusers_creates_the_unit_user() -> None:
    lines = [
        line.split()
        for line in (SYSTEMD / "ainode.sysusers.conf").read_text(encoding="utf-8").splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert [(f[0], f[1]) for f in lines] == [("u", "ainode")]


@pytest.mark.parametrize(
    ("span", "want"), [("960", 960.0), ("15min", 900.0), ("1h 30s", 3630.0), ("5 s", 5.0)]
)
def test_time_span_reader(span: str, want: float) -> None:
    assert seconds(span) == want
