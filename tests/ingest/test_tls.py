"""DICOM TLS on a second port (PS3.15 B.9): storescu/echoscu ``+tls`` with client certificates."""

from __future__ import annotations

import socket
from pathlib import Path

from tests.peers.dcmtk import TlsFiles, echoscu, make_pki, storescu
from tests.peers.node import start_node
from tests.util import free_port


def test_tls_port_with_client_certificates(tmp_path: Path, corpus: Path) -> None:
    server, client = make_pki(tmp_path / "pki")
    tls_port = free_port()
    tls = {
        "port": tls_port,
        "cert": str(server.cert),
        "key": str(server.key),
        "ca": str(server.ca),
        "require_client_cert": True,
    }
    with start_node(tmp_path / "n", node={"tls": tls}) as node:
        r = echoscu(tls_port, tls=client)
        assert r.returncode == 0, r.stdout + r.stderr
        f = corpus / "mr/single-slices/MR_small.dcm"
        run = storescu(tls_port, [f], tls=client)
        assert run.acknowledged == [f], run.output
        # plain DICOM on the TLS port fails; the plain port still works
        assert echoscu(tls_port, timeout=10).returncode != 0
        assert echoscu(node.dicom_port).returncode == 0
        # a client certificate from another CA is refused
        _, stranger = make_pki(tmp_path / "other")
        foreign = TlsFiles(server.ca, stranger.cert, stranger.key)
        assert echoscu(tls_port, tls=foreign, timeout=10).returncode != 0
        assert echoscu(tls_port, tls=client).returncode == 0
        # a client that connects and stays silent does not hold up the others
        with socket.create_connection(("127.0.0.1", tls_port), timeout=5):
            r = echoscu(tls_port, tls=client, timeout=15)
            assert r.returncode == 0, r.stdout + r.stderr
