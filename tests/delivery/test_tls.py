"""DIMSE delivery over TLS (PS3.15 B.1) to dcmtk storescp, with client certificates."""

from __future__ import annotations

import subprocess
from pathlib import Path

from node.config import DimseDestination, TlsConfig
from node.delivery import Outbox
from node.types import DeliveryState
from tests.conftest import require_tool
from tests.delivery.conftest import SimClock
from tests.delivery.storescp import start_storescp


def _pki(d: Path, name: str) -> dict[str, Path]:
    """A CA and two leaf certificates (server with IP SAN 127.0.0.1, client) made by openssl."""
    openssl = require_tool("openssl")
    d.mkdir(parents=True)

    def run(*args: str) -> None:
        subprocess.run([openssl, *args], check=True, capture_output=True, cwd=d)

    key = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    run("req", "-x509", *key, "-days", "2", "-subj", f"/CN={name} CA", "-keyout", "ca.key",
        "-out", "ca.pem")  # fmt: skip
    for leaf in ("server", "client"):
        run("req", *key, "-subj", f"/CN={leaf}",
            "-keyout", f"{leaf}.key", "-out", f"{leaf}.csr")  # fmt: skip
        (d / f"{leaf}.ext").write_text(
            "subjectAltName=IP:127.0.0.1\n" if leaf == "server" else "basicConstraints=CA:FALSE\n"
        )
        run("x509", "-req", "-in", f"{leaf}.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
            "-CAcreateserial", "-days", "2", "-extfile", f"{leaf}.ext",
            "-out", f"{leaf}.pem")  # fmt: skip
    return {p.stem if p.suffix == ".pem" else p.name: p for p in d.iterdir()}


def test_tls_with_client_certificate_and_wrong_ca(
    tmp_path: Path, clock: SimClock, chest_ct: list[Path]
) -> None:
    good = _pki(tmp_path / "pki", "good")
    other = _pki(tmp_path / "other", "other")
    args = ["+tls", str(good["server.key"]), str(good["server"]), "+cf", str(good["ca"]), "-rc"]
    with start_storescp(tmp_path / "scp", args=args) as peer:
        tls = TlsConfig(ca=good["ca"], cert=good["client"], key=good["client.key"])
        dests = {
            "tls": DimseDestination(host="127.0.0.1", port=peer.port, ae_title=peer.aet, tls=tls),
            "untrusted": DimseDestination(
                host="127.0.0.1",
                port=peer.port,
                ae_title=peer.aet,
                tls=tls.model_copy(update={"ca": other["ca"]}),
            ),
        }
        box = Outbox(tmp_path / "index.sqlite", dests, clock=clock)
        box.enqueue_many(chest_ct[:3], destinations=["tls"], job_id="j")
        box.enqueue(chest_ct[3], destinations=["untrusted"], job_id="j")
        box.run_once()
        assert box.counts()["tls"] == {"delivered": 3}
        (bad,) = box.list(destination="untrusted")
        assert bad.state is DeliveryState.PENDING and "cannot be reached" in (bad.last_error or "")
        assert len(peer.files()) == 3
        box.close()
