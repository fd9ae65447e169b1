"""The node config of the priors tests and benchmark: one Orthanc as the archive, reachable as
three sources (``move``: C-MOVE, ``get``: C-GET, ``web``: QIDO-RS + WADO-RS)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from node.config import Config
from tests.peers.orthanc import OrthancPeer


def priors_config(
    tmp: Path,
    *,
    node_port: int,
    rules: Path,
    orthanc: OrthancPeer,
    priors: dict[str, Any],
    **extra: Any,
) -> Config:
    """A node (AE ``AINODE`` on ``node_port``, data under ``tmp/data``, studies completed only
    by hand) pulling priors from ``orthanc``; ``extra`` adds sources (``sources=...``) and
    other top-level sections."""
    dimse = {"host": "127.0.0.1", "port": orthanc.dicom_port, "ae_title": "ORTHANC"}
    sources = {
        "move": {"type": "dimse", **dimse},
        "get": {"type": "dimse", "method": "c-get", **dimse},
        "web": {"type": "dicomweb", "url": orthanc.dicomweb_url},
        **extra.pop("sources", {}),
    }
    return Config.model_validate(
        {
            "node": {
                "ae_title": "AINODE",
                "dicom_port": node_port,
                "http_port": 0,
                "data_dir": str(tmp / "data"),
                "min_free_bytes": 0,
            },
            "study": {"stable_seconds": 3600},
            "rules": str(rules),
            "sources": sources,
            "priors": priors,
            "inference": {"max_attempts": 1},
            **extra,
        }
    )
