"""Bounded fuzzing in CI (a few seconds per target); ``bench/fuzz.py`` runs the long version.

Properties: the ingest header parse, the rule parser and the config parser either accept an
input or refuse it with their documented error type (rules and config: with FILE:LINE:COL
positions); the STOW-RS endpoint of a real node answers every mutated multipart body with a
documented status and body, never a 5xx, and stays up.
"""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.api.conftest import BOUNDARY, multipart
from tests.peers.node import NodeProcess, start_node
from tests.security import fuzzing

BOUNDED = settings(
    max_examples=150,
    deadline=None,
    derandomize=True,  # CI runs the same examples every time; bench/fuzz.py explores
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
SEEDS = fuzzing.dicom_seeds()


@BOUNDED
@given(fuzzing.mutated(SEEDS))
def test_header_parse_refuses_or_accepts(data: bytes) -> None:
    fuzzing.check_header(data)


@BOUNDED
@given(fuzzing.mutated_text(fuzzing.RULES_SEED))
def test_rule_parser_reports_positions(text: str) -> None:
    fuzzing.check_rules(text)


@BOUNDED
@given(fuzzing.mutated_text(fuzzing.CONFIG_SEED))
def test_config_parser_reports_positions(text: str) -> None:
    fuzzing.check_config(text)


def test_seeds_are_valid() -> None:
    """The mutations start from inputs each parser accepts (else the fuzzing proves little)."""
    import dicom_rules
    from node.config import parse_config
    from node.ingest.header import parse_received

    for seed in SEEDS:
        parse_received(seed)
    dicom_rules.parse(fuzzing.RULES_SEED)
    parse_config(fuzzing.CONFIG_SEED)


# ---------------------------------------------------------------- STOW-RS multipart bodies
@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NodeProcess]:
    with start_node(tmp_path_factory.mktemp("fuzz"), node={"stow_max_bytes": 1 << 20}) as peer:
        yield peer


def _bodies() -> st.SearchStrategy[bytes]:
    good, _ = multipart(SEEDS[:2])
    return fuzzing.mutated([good, good.replace(b"\r\n", b"\n")])


_CONTENT_TYPES = st.sampled_from(
    [
        f'multipart/related; type="application/dicom"; boundary="{BOUNDARY}"',
        f"multipart/related; type=application/dicom; boundary={BOUNDARY}",
        f'multipart/related; boundary="{BOUNDARY}"',
        'multipart/related; type="application/dicom"; boundary=""',
        'multipart/related; type="application/dicom"; boundary="' + "x" * 200 + '"',
        'multipart/related; type="application/dicom+xml"; boundary="b"',
        "multipart/related",
        "application/dicom",
        "text/plain; charset=utf-8",
        "multipart/related; boundary=\x7f\x80",
    ]
)
_STATUSES = {200, 202, 400, 409, 413, 415}


@settings(
    max_examples=60,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(body=_bodies(), content_type=_CONTENT_TYPES)
def test_stow_multipart_never_5xx(node: NodeProcess, body: bytes, content_type: str) -> None:
    try:
        resp = httpx.post(
            f"{node.url}/dicom-web/studies",
            content=body,
            headers={
                b"Content-Type": content_type.encode("latin-1"),  # raw bytes, as a client may
                b"Accept": b"application/dicom+json",
            },
            timeout=30,
        )
    except httpx.RemoteProtocolError:
        assert node.proc is not None and node.proc.poll() is None, node.log_text()[-3000:]
        return
    assert resp.status_code in _STATUSES, (resp.status_code, resp.text[:500])
    if resp.status_code in (200, 202, 409):
        assert resp.headers["content-type"].startswith("application/dicom+json")
        out = resp.json()
        assert "00081199" in out or "00081198" in out
    else:
        assert resp.headers["content-type"].startswith("application/problem+json")
        problem = resp.json()
        assert problem["status"] == resp.status_code and problem["detail"]


def test_node_survived_the_stow_fuzzing(node: NodeProcess) -> None:
    assert httpx.get(f"{node.url}/api/health", timeout=60).json()["status"] == "ok"
    assert node.proc is not None and node.proc.poll() is None
    assert b'"level": "error"' not in node.log.read_bytes(), node.log_text()[-3000:]
