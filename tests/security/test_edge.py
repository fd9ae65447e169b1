"""Safe defaults at the edge (issue 20 section 4): no open HTTP face on the network, DICOM
exposure shown, and calling AE titles bound to the hosts they may call from."""

from __future__ import annotations

import logging
from pathlib import Path

import httpx
import pydicom
import pytest
from pynetdicom import AE
from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]

from node.app import Node
from node.config import (
    AllowedCaller,
    AuthConfig,
    Config,
    NodeConfig,
    StudyConfig,
    TokenConfig,
    parse_config,
)
from node.edge import CallerPolicy, is_loopback_host
from node.errors import ConfigError
from tests.ingest.synthetic import write_ct_series


def _config(tmp_path: Path, *, host: str, auth: AuthConfig | None = None, **node: object) -> Config:
    return Config(
        auth=auth or AuthConfig(),
        node=NodeConfig(
            host=host,
            data_dir=tmp_path / "data",
            dicom_port=0,
            http_port=0,
            min_free_bytes=0,
            **node,  # type: ignore[arg-type]
        ),
        study=StudyConfig(stable_seconds=3600),
    )


@pytest.mark.parametrize(
    "host,loopback",
    [
        ("127.0.0.1", True),
        ("127.0.0.2", True),
        ("::1", True),
        ("localhost", True),
        ("0.0.0.0", False),
        ("::", False),
        ("", False),
        ("10.1.2.3", False),
        ("no-such-host.invalid", False),
    ],
)
def test_loopback_hosts(host: str, loopback: bool) -> None:
    assert is_loopback_host(host) is loopback


def test_open_http_on_the_network_refuses_to_start(tmp_path: Path) -> None:
    node = Node(_config(tmp_path, host="0.0.0.0"))
    with pytest.raises(ConfigError) as err:
        node.start()
    text = str(err.value)
    for key in ("node.host", "auth.users", "auth.tokens", "auth.allow_anonymous"):
        assert key in text
    assert node.http_port is None and node.dicom_port is None  # nothing was listening


def test_credentials_or_loopback_start_without_the_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    token = tmp_path / "token"
    token.write_text("a-token-for-the-edge-tests\n")
    auth = AuthConfig(tokens={"ops": TokenConfig(token_file=token, role="admin")})
    caplog.set_level(logging.WARNING, logger="node.edge")
    node = Node(
        _config(tmp_path, host="0.0.0.0", auth=auth, allowed_calling_aets=["CT1"]),
    )
    node.start()
    try:
        assert node.edge_warnings == []
    finally:
        node.stop()
    assert not [r for r in caplog.records if r.name == "node.edge"]


@pytest.mark.slow
def test_allow_anonymous_starts_and_warns_every_time(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="node.edge")
    for _ in range(2):  # a warning at every start, not once
        node = Node(_config(tmp_path, host="0.0.0.0", auth=AuthConfig(allow_anonymous=True)))
        node.start()
        try:
            assert any("anonymous admin" in w for w in node.edge_warnings)
            assert any("any calling AE title" in w for w in node.edge_warnings)
            page = httpx.get(f"http://127.0.0.1:{node.http_port}/console/dashboard", timeout=60)
            assert page.status_code == 200
            assert 'id="edge-warnings"' in page.text
            assert page.text.count('class="edge-warning"') == 2
        finally:
            node.stop()
    events = [getattr(r, "event", r.getMessage()) for r in caplog.records if r.name == "node.edge"]
    assert events.count("edge.http_anonymous") == 2
    assert events.count("edge.dicom_any_caller") == 2


def test_loopback_shows_no_exposure(tmp_path: Path) -> None:
    node = Node(_config(tmp_path, host="127.0.0.1"))
    node.start()
    try:
        assert node.edge_warnings == []
        page = httpx.get(f"http://127.0.0.1:{node.http_port}/console/dashboard", timeout=60)
        assert 'id="edge-warnings"' not in page.text
    finally:
        node.stop()


def test_allowed_calling_aets_yaml_accepts_both_forms() -> None:
    cfg = parse_config(
        """
node:
  allowed_calling_aets:
    - MODALITY1
    - {ae_title: CT1, hosts: [10.0.5.21]}
    - ae_title: PACS
      hosts: [10.0.8.0/24, pacs.example.org]
"""
    )
    entries = cfg.node.allowed_calling_aets
    assert entries[0] == "MODALITY1"
    assert entries[1] == AllowedCaller(ae_title="CT1", hosts=["10.0.5.21"])
    with pytest.raises(ConfigError, match="hosts"):
        parse_config("node:\n  allowed_calling_aets:\n    - {ae_title: CT1, hosts: []}\n")
    with pytest.raises(ConfigError, match="unknown key"):
        parse_config("node:\n  allowed_calling_aets:\n    - {ae_title: CT1, host: 10.0.0.1}\n")


def test_caller_policy() -> None:
    policy = CallerPolicy(
        [
            "ANY1",
            AllowedCaller(ae_title="CT1", hosts=["10.0.5.21", "10.9.0.0/16"]),
            AllowedCaller(ae_title="LOCAL", hosts=["localhost"]),
            AllowedCaller(ae_title="V6", hosts=["fd00::/8"]),
        ]
    )
    assert policy.allows("ANY1", "192.0.2.1")
    assert policy.allows("CT1", "10.0.5.21")
    assert policy.allows("CT1", "::ffff:10.0.5.21")  # IPv4-mapped, as a dual-stack socket sees it
    assert policy.allows("CT1", "10.9.200.1")
    assert not policy.allows("CT1", "10.0.5.22")
    assert not policy.allows("CT1", None)
    assert policy.allows("LOCAL", "127.0.0.1")
    assert not policy.allows("LOCAL", "10.0.5.21")
    assert policy.allows("V6", "fd12::1")
    assert not policy.allows("OTHER", "10.0.5.21")
    assert CallerPolicy([]).allows("WHOEVER", "203.0.113.9")


def _associate(port: int, calling: str, source: str) -> bool:
    ae = AE(ae_title=calling)
    ae.add_requested_context(Verification)
    assoc = ae.associate("127.0.0.1", port, ae_title="AINODE", bind_address=(source, 0))
    try:
        if not assoc.is_established:
            return False
        status = assoc.send_c_echo()
        return bool(status) and status.Status == 0
    finally:
        if assoc.is_established:
            assoc.release()


def test_an_allowed_ae_title_from_a_wrong_address_is_refused(tmp_path: Path) -> None:
    allowed = [
        AllowedCaller(ae_title="CT1", hosts=["127.0.0.1"]),
        AllowedCaller(ae_title="MR1", hosts=["127.0.0.2/32", "127.0.0.3"]),
        "ANYWHERE",
    ]
    node = Node(_config(tmp_path, host="127.0.0.1", allowed_calling_aets=allowed), serve_http=False)
    refused: list[dict[str, object]] = []
    node.add_association_listener(
        lambda outcome, facts: refused.append(facts) if outcome == "refused" else None
    )
    node.start()
    try:
        port = node.dicom_port
        assert port is not None
        assert _associate(port, "CT1", "127.0.0.1")
        assert not _associate(port, "CT1", "127.0.0.2")  # the right AE title, the wrong host
        assert _associate(port, "MR1", "127.0.0.2")
        assert not _associate(port, "MR1", "127.0.0.1")
        assert _associate(port, "ANYWHERE", "127.0.0.2")
        assert not _associate(port, "NOBODY", "127.0.0.1")
        # a C-STORE from the wrong host stores nothing
        src = write_ct_series(tmp_path / "src", 1)[0]
        ae = AE(ae_title="CT1")
        ds = pydicom.dcmread(src)
        ae.add_requested_context(ds.SOPClassUID, ds.file_meta.TransferSyntaxUID)
        assoc = ae.associate("127.0.0.1", port, ae_title="AINODE", bind_address=("127.0.0.2", 0))
        assert not assoc.is_established
        assert node.index.list_studies() == []
    finally:
        node.stop()
    assert [f["peer"] for f in refused if f["calling_aet"] == "CT1"] == ["127.0.0.2", "127.0.0.2"]
