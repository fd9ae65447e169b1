"""Paths and small readers shared by the deployment-kit tests (tests/deploy)."""

from __future__ import annotations

import re
import shutil
import sys
from pathlib import Path
from typing import Any

from ruamel.yaml import YAML

from node.config import Config, load_config

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"
SYSTEMD = DEPLOY / "systemd"
COMPOSE = DEPLOY / "compose"
KUBERNETES = DEPLOY / "kubernetes"
DOCKER = DEPLOY / "docker"
REDIS_CONF = DEPLOY / "redis" / "ainode-redis.conf"
SCHEMAS = Path(__file__).resolve().parent / "schemas"

#: Every ainode config file the kits ship, by setup.
AINODE_CONFIGS = {
    "systemd-single-box": SYSTEMD / "single-box" / "ainode.yaml",
    "systemd-cluster-node": SYSTEMD / "cluster" / "ainode.yaml",
    "systemd-cluster-worker": SYSTEMD / "cluster" / "worker.yaml",
    "docker-default": DOCKER / "ainode.yaml",
    "compose": COMPOSE / "ainode.yaml",
    "kubernetes": KUBERNETES / "config" / "ainode.yaml",
}


def config(name: str) -> Config:
    """One of AINODE_CONFIGS, loaded by the node's own loader."""
    return load_config(AINODE_CONFIGS[name])


def load_yaml(path: Path) -> Any:
    """A single-document YAML file (merge keys resolved), as plain dicts and lists."""
    return YAML(typ="safe", pure=True).load(path.read_text(encoding="utf-8"))


def load_yaml_all(path: Path) -> list[Any]:
    """Every non-empty document of a multi-document YAML file."""
    docs = YAML(typ="safe", pure=True).load_all(path.read_text(encoding="utf-8"))
    return [d for d in docs if d]


def tool(name: str) -> str | None:
    """An executable on PATH or installed next to this Python (pip-installed tools)."""
    found = shutil.which(name)
    if found is not None:
        return found
    local = Path(sys.executable).parent / name
    return str(local) if local.is_file() else None


def parse_unit(text: str) -> dict[str, dict[str, list[str]]]:
    """A systemd unit file as section -> key -> every value given (systemd.syntax(7)).

    Keys may repeat (``SystemCallFilter=`` twice), so values are lists; an empty assignment
    is kept as ``""``.  Comments (``#``, ``;``) and backslash continuations are handled.
    """
    sections: dict[str, dict[str, list[str]]] = {}
    current: dict[str, list[str]] | None = None
    pending = ""
    for raw in text.splitlines():
        line = pending + raw.strip()
        pending = ""
        if line.endswith("\\"):
            pending = line[:-1] + " "
            continue
        if not line or line[0] in "#;":
            continue
        header = re.fullmatch(r"\[([A-Za-z]+)\]", line)
        if header:
            current = sections.setdefault(header.group(1), {})
            continue
        key, sep, value = line.partition("=")
        if not sep or current is None:
            raise ValueError(f"not a key=value line outside a section: {raw!r}")
        current.setdefault(key.strip(), []).append(value.strip())
    return sections


def seconds(value: str) -> float:
    """A systemd time span ('960', '15min', '1h 30s') in seconds (systemd.time(7))."""
    units = {"": 1, "s": 1, "sec": 1, "m": 60, "min": 60, "h": 3600, "hr": 3600, "ms": 0.001}
    total = 0.0
    for number, unit in re.findall(r"(\d+(?:\.\d+)?)\s*([a-z]*)", value):
        total += float(number) * units[unit]
    return total
