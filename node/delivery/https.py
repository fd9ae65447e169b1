"""HTTPS for the DICOMweb and Orthanc clients: certificate verification as configured.

``requests`` lets the ``REQUESTS_CA_BUNDLE`` / ``CURL_CA_BUNDLE`` environment variables override a
session's ``verify`` (psf/requests#3829), so on a host that sets them a destination's ``ca`` or
``verify_tls: false`` would silently not apply.  ``TlsSession`` keeps the configured choice; with
neither set, the environment (or certifi) decides as usual.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import requests

__all__ = ["TlsSession", "tls_reason", "verify_setting"]


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
