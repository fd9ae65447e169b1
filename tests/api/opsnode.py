"""A real node for the operations API tests: rule file, folder + DIMSE destinations, two studies.

Routing (``ops_rules``): CT chest is forwarded to ``archive`` (a folder), DX to ``silent`` (a
socket that accepts TCP but never answers DICOM, so sending times out and the row goes dead).
No rule runs a model, so nothing here imports torch.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import numpy as np
import pydicom

from node.app import Node
from node.config import (
    AuthConfig,
    Config,
    DeliveryConfig,
    DimseDestination,
    FolderDestination,
    NodeConfig,
    StudyConfig,
)
from node.samples import write_ct_series, write_projection
from tests.api.conftest import multipart
from tests.util import free_port, wait_until

RULES = """\
version: 1
rules:
  - name: chest-ct-archive
    when: {Modality: CT, body_part: CHEST}
    then: {send_to: archive}
  - name: dx-to-silent
    when: {Modality: DX}
    then: {send_to: silent}
"""


@dataclass
class OpsNode:
    node: Node
    http: httpx.Client
    data_dir: Path
    rules_path: Path
    archive: Path
    ct_study: str = ""
    dx_study: str = ""
    extra: dict[str, str] = field(default_factory=dict)


def silent_socket() -> socket.socket:
    """A listening socket that never accepts: TCP connects, DICOM never answers."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    sock.listen(16)
    return sock


def start_ops_node(
    tmp: Path, *, token: str | None = None, auth: AuthConfig | None = None
) -> Iterator[OpsNode]:
    """Start the node, store a CT and a DX study through STOW-RS, complete and route both."""
    silent = silent_socket()
    data_dir = tmp / "data"
    rules_path = tmp / "rules.yaml"
    rules_path.write_text(RULES, encoding="utf-8")
    archive = tmp / "archive"
    blocker = tmp / "not-a-folder"
    blocker.write_text("a file where a folder destination should be\n", encoding="utf-8")
    dicom_port = free_port()
    config = Config(
        auth=auth if auth is not None else AuthConfig(token=token),
        node=NodeConfig(data_dir=data_dir, dicom_port=dicom_port, http_port=0, min_free_bytes=0),
        study=StudyConfig(stable_seconds=3600),
        rules=rules_path,
        destinations={
            "archive": FolderDestination(type="folder", path=archive),
            "silent": DimseDestination(
                host="127.0.0.1", port=silent.getsockname()[1], ae_title="SILENT"
            ),
            "blocked": FolderDestination(type="folder", path=blocker),
            "self": DimseDestination(host="127.0.0.1", port=dicom_port, ae_title="AINODE"),
        },
        delivery=DeliveryConfig(max_attempts=1, timeout_seconds=1.5, backoff_base_seconds=0.1),
    )
    node = Node(config)
    node.start()
    token = token or config.auth.token
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    try:
        with httpx.Client(
            base_url=f"http://127.0.0.1:{node.http_port}", timeout=30, headers=headers
        ) as http:
            ops = OpsNode(node, http, data_dir, rules_path, archive)
            yy, xx = np.mgrid[-16:16, -16:16]
            disk = np.where(yy**2 + xx**2 < 144, 40.0, -1000.0)  # a water disk in air (HU)
            ct = write_ct_series(np.stack([disk] * 3), spacing=(1, 1, 1), out_dir=tmp / "ct")
            dx = [write_projection(np.abs(xx + yy).astype(float), out_dir=tmp / "dx")]
            for files in (ct, dx):
                body, hdrs = multipart([p.read_bytes() for p in files])
                r = http.post("/dicom-web/studies", content=body, headers=hdrs)
                assert r.status_code == 200, r.text
            ops.ct_study = str(pydicom.dcmread(ct[0]).StudyInstanceUID)
            ops.dx_study = str(pydicom.dcmread(dx[0]).StudyInstanceUID)
            for uid in (ops.ct_study, ops.dx_study):
                assert http.post(f"/api/studies/{uid}/complete").status_code == 200
            wait_until(
                lambda: (
                    {d.state.value for d in node.outbox.list()} <= {"delivered", "dead"}
                    and len(node.outbox.list()) == 4
                ),
                timeout=30,
                what="forwards delivered or dead",
            )
            yield ops
    finally:
        node.stop()
        silent.close()
