"""Connections to the node's peers, shared by pull (sources) and delivery (destinations).

HTTP sessions and DICOMweb clients for DICOMweb sources and destinations, and TLS contexts for
DICOM over TLS (PS3.15 B.1).

HTTPS certificate verification is as configured.

``requests`` lets the ``REQUESTS_CA_BUNDLE`` / ``CURL_CA_BUNDLE`` environment variables override a
session's ``verify`` (psf/requests#3829), so on a host that sets them a destination's ``ca`` or
``verify_tls: false`` would silently not apply.  ``TlsSession`` keeps the configured choice; with
neither set, the environment (or certifi) decides as usual.
"""

from __future__ import annotations

import ssl
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import requests
from dicomweb_client.api import DICOMwebClient

from node.config import DicomwebDestination, DicomwebSource, TlsConfig, UpsRsSource

__all__ = [
    "TlsSession",
    "make_client",
    "make_session",
    "ssl_context",
    "tls_reason",
    "verify_setting",
]


def verify_setting(*, verify_tls: bool, ca: Path | None) -> bool | str:
    """``requests``' ``verify``: False, the CA bundle path, or True (the default trust)."""
    if not verify_tls:
        return False
    return str(ca) if ca is not None else True


class TlsSession(requests.Session):
    """A ``requests`` session whose ``verify`` is not overridden by the environment."""

    def merge_environment_settings(
        self, url: Any, proxies: Any, stream: Any, verify: Any, cert: Any
    ) -> dict[str, Any]:
        settings: Mapping[str, Any] = super().merge_environment_settings(
            url, proxies, stream, verify, cert
        )
        out = dict(settings)
        if verify is None and self.verify is not True:  # a configured CA or "off" wins
            out["verify"] = self.verify
        return out


def tls_reason(exc: Exception) -> str:
    """What went wrong in a TLS handshake, with what to do about an untrusted certificate."""
    text = str(exc)
    if "CERTIFICATE_VERIFY_FAILED" in text:
        why = text.split("certificate verify failed:", 1)[-1].split("(_ssl")[0].strip(" ')\"")
        return (
            f"the server's certificate is not trusted ({why or 'verify failed'}); set 'ca' to "
            "the PEM bundle of the CA that signed it (or verify_tls: false on a test bench)"
        )
    return text[:300]


def make_session(config: DicomwebDestination | DicomwebSource | UpsRsSource) -> requests.Session:
    """A ``requests`` session with the configured authentication and TLS verification."""
    session = TlsSession()
    if config.auth == "basic":
        session.auth = requests.auth.HTTPBasicAuth(config.username or "", config.password or "")
    elif config.auth == "bearer":
        session.headers["Authorization"] = f"Bearer {config.token or ''}"
    session.verify = verify_setting(verify_tls=config.verify_tls, ca=config.ca)
    return session


def make_client(
    config: DicomwebDestination | DicomwebSource | UpsRsSource,
    session: requests.Session | None = None,
) -> DICOMwebClient:
    """A dicomweb-client for ``config.url`` that leaves retrying to the caller."""
    client = DICOMwebClient(url=config.url.rstrip("/"), session=session or make_session(config))
    client.set_http_retry_params(retry=False)
    return client


def ssl_context(
    tls: TlsConfig, *, purpose: ssl.Purpose = ssl.Purpose.SERVER_AUTH
) -> ssl.SSLContext:
    """A TLS context for a DICOM client (PS3.15 B.1): verifies the peer against ``tls.ca``.

    A client certificate is presented when ``cert`` and ``key`` are set.
    """
    ctx = ssl.create_default_context(purpose, cafile=str(tls.ca) if tls.ca else None)
    if tls.cert is not None and tls.key is not None:
        ctx.load_cert_chain(str(tls.cert), str(tls.key))
    return ctx
