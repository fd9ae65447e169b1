"""The distributed engine's config keys are documented and validated."""

from __future__ import annotations

from pathlib import Path

import pytest

from node.app import Node
from node.config import CeleryConfig, Config, NodeConfig, parse_config
from node.errors import ConfigError

DOCS = Path(__file__).resolve().parents[2] / "docs"


def test_every_celery_key_is_documented() -> None:
    text = (DOCS / "configuration.md").read_text() + (DOCS / "scale-out.md").read_text()
    missing = [k for k in CeleryConfig.model_fields if f"`celery.{k}`" not in text]
    assert missing == []


def test_celery_keys_parse_and_unknown_ones_fail() -> None:
    cfg = parse_config(
        "queue: redis://127.0.0.1:6379/0\n"
        "celery: {visibility_timeout_seconds: 90, stat_priority: 50, node_url: http://n:8080}\n"
    )
    assert cfg.celery.visibility_timeout_seconds == 90
    assert cfg.celery.stat_priority == 50
    with pytest.raises(ConfigError, match="celery.visibilty"):
        parse_config("celery: {visibilty_timeout_seconds: 90}\n")


def test_unknown_queue_url_is_a_config_error(tmp_path: Path) -> None:
    cfg = Config(queue="amqp://x", node=NodeConfig(data_dir=tmp_path, min_free_bytes=0))
    with pytest.raises(ConfigError, match="queue"):
        Node(cfg)
