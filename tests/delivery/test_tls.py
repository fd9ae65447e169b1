"""DIMSE delivery over TLS (PS3.15 B.1) to dcmtk storescp, with client certificates."""

from __future__ import annotations

from pathlib import Path

from node.config import DimseDestination, TlsConfig
from node.delivery import Outbox
from node.types import DeliveryState
from tests.delivery.conftest import SimClock
from tests.delivery.pki import make_pki
from tests.delivery.storescp import start_storescp


def test_tls_with_client_certificate_and_wrong_ca(
    tmp_path: Path, clock: SimClock, chest_ct: list[Path]
) -> None:
    good = make_pki(tmp_path / "pki", "good")
    other = make_pki(tmp_path / "other", "other")
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
