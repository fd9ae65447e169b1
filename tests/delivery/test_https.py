"""STOW-RS delivery over HTTPS to a second, real ainode serving its HTTP API with TLS.

The receiving node's certificate is signed by a test CA made with openssl: a destination given
that CA delivers; one left with the default trust (the system's CAs) is refused with a reason
that says the certificate is not trusted and is dead-lettered; ``verify_tls: false`` delivers.
(Debian's Orthanc 1.10 crashes with SSL on, so a node is the HTTPS peer here.)
"""

from __future__ import annotations

import re
import ssl
from pathlib import Path
from typing import Any

import httpx
import pytest

from node.app import Node
from node.cli.pull import _node_answers
from node.config import (
    Config,
    DeliveryConfig,
    DicomwebDestination,
    HttpTlsConfig,
    NodeConfig,
    OrthancDestination,
    load_config,
)
from node.delivery import Outbox
from node.errors import ConfigError
from node.store.index import Index
from node.types import DeliveryState
from node.web.peers import make_session
from tests.delivery.conftest import SimClock
from tests.delivery.pki import make_pki
from tests.peers.node import start_node


def _echo(data_dir: Path, dests: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """``POST /api/destinations/{name}/echo`` of a node configured with ``dests``."""
    config = Config(
        node=NodeConfig(data_dir=data_dir, dicom_port=0, http_port=0, min_free_bytes=0),
        destinations=dests,
    )
    node = Node(config)
    node.start()
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{node.http_port}", timeout=30) as c:
            return {name: c.post(f"/api/destinations/{name}/echo").json() for name in dests}
    finally:
        node.stop()


def _stored_sops(data_dir: Path, study_uid: str) -> set[str]:
    index = Index(data_dir / "index.sqlite")
    try:
        return {i.sop_uid for i in index.study_instances(study_uid)}
    finally:
        index.close()


# verify_tls: false is asked for here; urllib3 warns about it on every request
@pytest.mark.filterwarnings("ignore::urllib3.exceptions.InsecureRequestWarning")
@pytest.mark.slow
def test_stow_over_https_trusted_ca_untrusted_and_verify_off(
    tmp_path: Path, clock: SimClock, chest_ct: list[Path]
) -> None:
    pki = make_pki(tmp_path / "pki", "test")
    http_tls = {"cert": str(pki["server"]), "key": str(pki["server.key"])}
    with start_node(tmp_path / "receiver", node={"http_tls": http_tls}) as receiver:
        url = f"https://127.0.0.1:{receiver.http_port}/dicom-web"
        # the listener speaks TLS only, with the test CA's certificate
        trust = ssl.create_default_context(cafile=str(pki["ca"]))
        assert httpx.get(f"{url[:-10]}/api/health", verify=trust, timeout=60).status_code == 200
        with pytest.raises(httpx.HTTPError):
            httpx.get(f"http://127.0.0.1:{receiver.http_port}/api/health", timeout=5)
        # the CLI reaches its node over HTTPS, trusting the node's own certificate
        assert _node_answers(load_config(receiver.config_path))
        dests = {
            "trusted": DicomwebDestination(type="dicomweb", url=url, ca=pki["ca"]),
            "untrusted": DicomwebDestination(type="dicomweb", url=url),
            "insecure": DicomwebDestination(type="dicomweb", url=url, verify_tls=False),
        }
        box = Outbox(
            tmp_path / "index.sqlite", dests, clock=clock, policy=DeliveryConfig(max_attempts=1)
        )
        box.enqueue_many(chest_ct[:3], destinations=["trusted"], job_id="j")
        box.enqueue_many(chest_ct[3:5], destinations=["insecure"], job_id="j")
        box.enqueue_many(chest_ct[5:7], destinations=["untrusted"], job_id="j")
        box.run_once()
        errors = {r.destination: r.last_error for r in box.list()}
        assert box.counts() == {
            "trusted": {"delivered": 3},
            "insecure": {"delivered": 2},
            "untrusted": {"dead": 2},
        }, errors
        for row in box.list(destination="untrusted"):
            assert row.state is DeliveryState.DEAD
            reason = row.last_error or ""
            assert "TLS handshake failed" in reason and "certificate is not trusted" in reason
            assert "set 'ca'" in reason
        delivered = {r.sop_uid for r in box.list(state=DeliveryState.DELIVERED)}
        study_uid = box.list()[0].study_uid
        assert _stored_sops(receiver.data_dir, study_uid) == delivered
        # the destination check (POST /api/destinations/{name}/echo) trusts the same CA
        # (the receiving node answers QIDO-RS itself, so a trusted handshake gets HTTP 200)
        echo = _echo(tmp_path / "echo", dests)
        assert echo["trusted"]["ok"] and "HTTP 200" in echo["trusted"]["detail"], echo
        assert echo["insecure"]["ok"] and "HTTP 200" in echo["insecure"]["detail"], echo
        assert (
            not echo["untrusted"]["ok"]
            and "CERTIFICATE_VERIFY_FAILED" in echo["untrusted"]["detail"]
        )
        # the Orthanc sender's 'ca' too (a node is no Orthanc: past the handshake it answers
        # POST /instances with an HTTP error, which is what shows the certificate was trusted)
        base = url.removesuffix("/dicom-web")
        rest = {
            "rest-ca": OrthancDestination(type="orthanc", url=base, ca=pki["ca"]),
            "rest-default": OrthancDestination(type="orthanc", url=base),
        }
        rest_box = Outbox(tmp_path / "rest.sqlite", rest, clock=clock)
        rest_box.enqueue(chest_ct[7], destinations=list(rest), job_id="j")
        rest_box.run_once()
        (with_ca,) = rest_box.list(destination="rest-ca")
        (without,) = rest_box.list(destination="rest-default")
        assert re.fullmatch(r"HTTP 40\d from Orthanc", with_ca.last_error or ""), with_ca
        assert "certificate is not trusted" in (without.last_error or ""), without
        rest_box.close()
        # once the CA is known, a retried dead row goes through
        box.close()
        fixed = dict(dests, untrusted=dests["trusted"])
        box = Outbox(tmp_path / "index.sqlite", fixed, clock=clock)
        assert box.retry_dead(destination="untrusted") == 2
        box.run_once()
        assert box.counts()["untrusted"] == {"delivered": 2}
        assert len(_stored_sops(receiver.data_dir, study_uid)) == 7
        box.close()


def test_https_listener_requiring_client_certificates(tmp_path: Path) -> None:
    pki = make_pki(tmp_path / "pki", "test")
    http_tls = {
        "cert": str(pki["server"]),
        "key": str(pki["server.key"]),
        "ca": str(pki["ca"]),
        "require_client_cert": True,
    }
    with start_node(tmp_path / "receiver", node={"http_tls": http_tls}) as receiver:
        health = f"https://127.0.0.1:{receiver.http_port}/api/health"
        ctx = ssl.create_default_context(cafile=str(pki["ca"]))
        ctx.load_cert_chain(str(pki["client"]), str(pki["client.key"]))
        assert httpx.get(health, verify=ctx, timeout=60).status_code == 200
        with pytest.raises(httpx.HTTPError):  # no client certificate: the handshake fails
            httpx.get(health, verify=ssl.create_default_context(cafile=str(pki["ca"])), timeout=5)


def test_configured_verification_beats_requests_ca_bundle_env(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """requests lets REQUESTS_CA_BUNDLE override session.verify; the configured choice wins."""
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", "/etc/ssl/certs/ca-certificates.crt")
    url = "https://127.0.0.1:1/dicom-web"
    for dest, want in (
        (
            DicomwebDestination(type="dicomweb", url=url, ca=tmp_path / "ca.pem"),
            str(tmp_path / "ca.pem"),
        ),
        (DicomwebDestination(type="dicomweb", url=url, verify_tls=False), False),
        (DicomwebDestination(type="dicomweb", url=url), "/etc/ssl/certs/ca-certificates.crt"),
    ):
        session = make_session(dest)
        got = session.merge_environment_settings(url, {}, None, None, None)["verify"]
        assert got == want
        session.close()


def test_bad_http_tls_settings_stop_the_node_with_a_config_error(tmp_path: Path) -> None:
    pki = make_pki(tmp_path / "pki", "test")
    cases = [
        (HttpTlsConfig(cert=tmp_path / "missing.pem"), "cannot load the certificate"),
        (HttpTlsConfig(cert=pki["server"], key=pki["client.key"]), "cannot load the certificate"),
        (HttpTlsConfig(key=pki["server.key"]), "cert is missing"),
        (
            HttpTlsConfig(cert=pki["server"], key=pki["server.key"], require_client_cert=True),
            "needs ca",
        ),
    ]
    for i, (http_tls, message) in enumerate(cases):
        node_cfg = NodeConfig(
            data_dir=tmp_path / f"d{i}", dicom_port=0, http_port=0, min_free_bytes=0,
            http_tls=http_tls,
        )  # fmt: skip
        node = Node(Config(node=node_cfg))
        with pytest.raises(ConfigError, match=message):
            node.start()
