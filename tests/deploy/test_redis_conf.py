"""The shipped Redis persistence config, loaded by a real Debian redis-server."""

from __future__ import annotations

import os
import signal
import subprocess
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from tests.deploy.kits import COMPOSE, KUBERNETES, REDIS_CONF, load_yaml, load_yaml_all, tool
from tests.util import free_port, wait_until


def _cli(port: int, *args: str, stdin: str | None = None) -> str:
    cli = tool("redis-cli")
    assert cli is not None
    out = subprocess.run(
        [cli, "-h", "127.0.0.1", "-p", str(port), "--raw", *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=10,
        check=True,
    )
    return out.stdout.strip()


def _answers(port: int) -> bool:
    try:
        return _cli(port, "PING") == "PONG"
    except subprocess.CalledProcessError:
        return False


def _server() -> str:
    server = tool("redis-server")
    if server is None:
        pytest.fail("redis-server is not installed (deploy/install.sh installs it)")
    return server


@contextmanager
def _running(argv: list[str], port: int, data_dir: Path) -> Iterator[subprocess.Popen[bytes]]:
    """redis-server started with ``argv`` (plus a log file); stopped on exit."""
    log = data_dir / "redis.log"
    proc = subprocess.Popen([*argv, "--logfile", str(log)], env={**os.environ, "TCP_NODELAY": "1"})
    try:
        wait_until(lambda: proc.poll() is not None or _answers(port), 10, "redis-server up")
        assert proc.poll() is None, log.read_text(errors="replace")
        yield proc
    finally:
        if proc.poll() is None:
            proc.terminate()
            proc.wait(timeout=10)


@contextmanager
def _redis(data_dir: Path, *extra: str) -> Iterator[tuple[subprocess.Popen[bytes], int]]:
    """The shipped config on loopback, a free port, ``data_dir``, no RDB snapshots."""
    port = free_port()
    argv = [_server(), str(REDIS_CONF), "--port", str(port), "--bind", "127.0.0.1"]
    with _running([*argv, "--dir", str(data_dir), "--save", "", *extra], port, data_dir) as proc:
        yield proc, port


def test_redis_loads_the_config_with_aof_always(tmp_path: Path) -> None:
    with _redis(tmp_path) as (_, port):
        for key, want in {
            "appendonly": "yes",
            "appendfsync": "always",
            "maxmemory-policy": "noeviction",
            "aof-load-truncated": "yes",
            "no-appendfsync-on-rewrite": "no",
        }.items():
            assert _cli(port, "CONFIG", "GET", key).splitlines() == [key, want]


def _kill_9_after_50_pushes(data_dir: Path, *extra: str) -> str:
    """Push 50 jobs, kill -9 Redis, restart it on the same folder: the list length then."""
    with _redis(data_dir, *extra) as (proc, port):
        pushes = "".join(f"LPUSH celery job-{i}\n" for i in range(50))
        _cli(port, stdin=pushes)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
    with _redis(data_dir, *extra) as (_, port):
        return _cli(port, "LLEN", "celery")


def test_queued_jobs_survive_kill_9(tmp_path: Path) -> None:
    # No RDB snapshot (--save ""), no clean shutdown: only the AOF can bring the list back.
    assert _kill_9_after_50_pushes(tmp_path) == "50"


def test_without_aof_the_same_kill_loses_the_jobs(tmp_path: Path) -> None:
    # the control: the test above would catch a config that does not persist
    assert _kill_9_after_50_pushes(tmp_path, "--appendonly", "no") == "0"


def _container_argv(argv: list[str], data_dir: Path, port: int) -> list[str]:
    """A container's redis-server command line, runnable here: the shipped config file, a
    temporary --dir, loopback instead of 0.0.0.0, a free port.  Everything else unchanged."""
    assert argv[0] == "redis-server" and argv[1].endswith(".conf")
    out = [_server(), str(REDIS_CONF), *argv[2:]]
    out[out.index("--dir") + 1] = str(data_dir)
    assert out[out.index("--bind") + 1] == "0.0.0.0"  # reachable from the other containers
    out[out.index("--bind") + 1] = "127.0.0.1"
    return [*out, "--port", str(port)]


def _compose_argv() -> list[str]:
    command = load_yaml(COMPOSE / "docker-compose.yml")["services"]["redis"]["command"]
    return [str(part) for part in command]


def _kubernetes_argv() -> list[str]:
    docs = load_yaml_all(KUBERNETES / "redis.yaml")
    (sts,) = [d for d in docs if d["kind"] == "StatefulSet"]
    (container,) = sts["spec"]["template"]["spec"]["containers"]
    return [*container["command"], *container["args"]]


@pytest.mark.parametrize("argv", [_compose_argv, _kubernetes_argv], ids=["compose", "kubernetes"])
def test_container_command_lines_start_redis_with_aof(
    tmp_path: Path, argv: Callable[[], list[str]]
) -> None:
    port = free_port()
    with _running(_container_argv(argv(), tmp_path, port), port, tmp_path):
        assert _cli(port, "CONFIG", "GET", "appendfsync").splitlines() == ["appendfsync", "always"]
        assert _cli(port, "CONFIG", "GET", "protected-mode").splitlines()[1] == "no"
        assert Path(_cli(port, "CONFIG", "GET", "dir").splitlines()[1]) == tmp_path


def test_kubernetes_copy_is_identical() -> None:
    # kustomize may not load files outside its folder, so the ConfigMap source is a copy
    assert (KUBERNETES / "config" / "redis.conf").read_bytes() == REDIS_CONF.read_bytes()
