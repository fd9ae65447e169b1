"""The node peer: a restart whose port another process took in between comes up on new ports."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from tests.peers.node import start_node


@pytest.mark.slow
def test_restart_moves_to_fresh_ports_when_its_port_was_taken(tmp_path: Path) -> None:
    with start_node(tmp_path / "n") as node:
        node.stop()
        taken = node.dicom_port
        with socket.socket() as squatter:
            squatter.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            squatter.bind(("127.0.0.1", taken))
            squatter.listen()
            node.start()
            assert node.dicom_port != taken
            assert "Address already in use" in node.log_text()
            with socket.create_connection(("127.0.0.1", node.dicom_port), timeout=5):
                pass
