"""Every ainode config the kits ship loads with the node's own loader, and says what it means."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlsplit

import pytest

from node.config import load_config
from tests.deploy.kits import AINODE_CONFIGS, DEPLOY, KUBERNETES, config, load_yaml_all

#: YAML files under deploy/ that are not ainode configs, and what they are instead.
OTHER_YAML = {
    DEPLOY / "ainode.example.yaml": "the annotated reference config (tests/test_config.py)",
    DEPLOY / "rules.example.yaml": "routing rules",
    DEPLOY / "compose" / "docker-compose.yml": "compose file",
}


def test_every_yaml_under_deploy_is_accounted_for() -> None:
    # a new config file cannot escape the loader test below by not being listed
    known = set(AINODE_CONFIGS.values()) | set(OTHER_YAML)
    for path in sorted(DEPLOY.rglob("*.y*ml")):
        if path.parent == KUBERNETES:
            docs = load_yaml_all(path)
            assert docs and all("apiVersion" in d for d in docs), f"{path}: not Kubernetes objects"
            continue
        assert path in known, f"{path.relative_to(DEPLOY)}: add it to AINODE_CONFIGS or OTHER_YAML"


@pytest.mark.parametrize("name", sorted(AINODE_CONFIGS))
def test_config_loads(name: str) -> None:
    cfg = load_config(AINODE_CONFIGS[name])
    assert cfg.node.host == "0.0.0.0" or name == "systemd-cluster-worker"
    assert cfg.node.data_dir.is_absolute()


@pytest.mark.parametrize(
    "name", sorted(set(AINODE_CONFIGS) - {"systemd-single-box", "docker-default"})
)
def test_distributed_setups_use_a_redis_queue(name: str) -> None:
    url = urlsplit(config(name).queue)
    assert url.scheme == "redis"
    assert url.hostname
    assert url.port == 6379
    assert url.path.lstrip("/").isdigit()  # the database number


@pytest.mark.parametrize("name", ["systemd-single-box", "docker-default"])
def test_single_box_setups_use_the_embedded_engine(name: str) -> None:
    assert config(name).queue == "embedded"


def test_config_errors_are_reported_with_the_file(tmp_path: Path) -> None:
    # the loader really validates these files: a misspelt key in a copy is refused
    from node.errors import ConfigError

    broken = tmp_path / "ainode.yaml"
    text = AINODE_CONFIGS["kubernetes"].read_text(encoding="utf-8")
    broken.write_text(text.replace("job_timeout_seconds", "job_timeout_secs"), encoding="utf-8")
    with pytest.raises(ConfigError, match="unknown key 'inference.job_timeout_secs'"):
        load_config(broken)


def test_ports_are_the_documented_defaults() -> None:
    for name in AINODE_CONFIGS:
        cfg = config(name)
        assert (cfg.node.dicom_port, cfg.node.http_port) == (11112, 8080), name
