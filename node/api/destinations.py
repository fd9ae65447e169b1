"""``/api/destinations``: configured destinations, their outbox counts, and a test ("echo").

The echo checks that the destination answers, without sending anything: C-ECHO (PS3.7 9.1.5)
for ``dimse``, an HTTP GET for ``dicomweb`` (``/studies?limit=1``, QIDO-RS PS3.18 10.6) and
``orthanc`` (``/system``), and a create/delete of a probe file for ``folder``.
"""

from __future__ import annotations

import os
import ssl
import tempfile
import time
from typing import Annotated, Any

import httpx
from fastapi import APIRouter, Depends, Request

from node.api.auditing import audit
from node.api.deps import NodeView, get_node
from node.config import (
    DicomwebDestination,
    DimseDestination,
    FolderDestination,
    OrthancDestination,
)
from node.errors import NotFoundError

__all__ = ["router"]

router = APIRouter(tags=["destinations"])

_SECRET_KEYS = {"password", "token"}


def _public(dest: Any) -> dict[str, Any]:
    data: dict[str, Any] = dest.model_dump(mode="json")
    return {k: ("***" if k in _SECRET_KEYS and v else v) for k, v in data.items()}


@router.get("/api/destinations")
def list_destinations(node: Annotated[NodeView, Depends(get_node)]) -> dict[str, Any]:
    """Each destination's settings (secrets masked) and its outbox rows per state."""
    counts = node.outbox.counts()
    return {
        "destinations": [
            {"name": name, **_public(dest), "outbox": counts.get(name, {})}
            for name, dest in sorted(node.config.destinations.items())
        ]
    }


def _echo_dimse(dest: DimseDestination, calling: str, timeout: float) -> tuple[bool, str]:
    from pynetdicom import AE
    from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]

    ae = AE(ae_title=dest.calling_ae_title or calling)
    ae.add_requested_context(Verification)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = timeout
    assoc = ae.associate(dest.host, dest.port, ae_title=dest.ae_title)
    if not assoc.is_established:
        why = "rejected" if assoc.is_rejected else "no answer"
        return False, f"no association with {dest.host}:{dest.port} ({why})"
    try:
        status = assoc.send_c_echo()
    finally:
        assoc.release()
    code = int(getattr(status, "Status", -1)) if status else -1
    if code == 0:
        return True, "C-ECHO success"
    return False, f"C-ECHO status 0x{code:04X}" if code >= 0 else "C-ECHO: no response"


def _echo_http(
    url: str,
    *,
    auth: httpx.Auth | None,
    headers: dict[str, str],
    verify: bool | ssl.SSLContext,
    timeout: float,
) -> tuple[bool, str]:
    try:
        r = httpx.get(url, auth=auth, headers=headers, verify=verify, timeout=timeout)
    except httpx.HTTPError as exc:
        return False, f"GET {url}: {type(exc).__name__}: {exc}"
    return r.status_code < 400, f"GET {url}: HTTP {r.status_code}"


def _verify(dest: DicomwebDestination | OrthancDestination) -> bool | ssl.SSLContext:
    """TLS verification as the destination's sender does it: its ``ca`` bundle, on or off."""
    if dest.verify_tls and dest.ca is not None:
        try:
            return ssl.create_default_context(cafile=str(dest.ca))
        except (OSError, ValueError):
            return True  # the GET then fails with the certificate error the sender would see
    return dest.verify_tls


def _echo_folder(dest: FolderDestination) -> tuple[bool, str]:
    try:
        dest.path.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".ainode-probe-", dir=dest.path)
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        return False, f"folder {dest.path} is not writable: {exc}"
    return True, f"folder {dest.path} is writable"


@router.post("/api/destinations/{name}/echo")
def echo_destination(
    name: str, request: Request, node: Annotated[NodeView, Depends(get_node)]
) -> dict[str, Any]:
    """Test a destination: ``{"name", "ok", "detail", "seconds"}`` (200 either way).

    Raises
    ------
    NotFoundError
        No destination of that name in the config (404 problem).
    """
    dest = node.config.destinations.get(name)
    if dest is None:
        raise NotFoundError(
            f"no destination '{name}'; configured: {sorted(node.config.destinations)}"
        )
    timeout = 10.0
    start = time.monotonic()
    if isinstance(dest, DimseDestination):
        ok, detail = _echo_dimse(dest, node.config.node.ae_title, timeout)
    elif isinstance(dest, DicomwebDestination):
        headers: dict[str, str] = {"Accept": "application/dicom+json"}
        auth: httpx.Auth | None = None
        if dest.auth == "basic" and dest.username is not None:
            auth = httpx.BasicAuth(dest.username, dest.password or "")
        elif dest.auth == "bearer" and dest.token:
            headers["Authorization"] = f"Bearer {dest.token}"
        url = dest.url.rstrip("/") + "/studies?limit=1"
        ok, detail = _echo_http(
            url, auth=auth, headers=headers, verify=_verify(dest), timeout=timeout
        )
    elif isinstance(dest, OrthancDestination):
        basic = (
            httpx.BasicAuth(dest.username, dest.password or "")
            if dest.username is not None
            else None
        )
        ok, detail = _echo_http(
            dest.url.rstrip("/") + "/system",
            auth=basic,
            headers={},
            verify=_verify(dest),
            timeout=timeout,
        )
    else:
        ok, detail = _echo_folder(dest)
    audit(request, "destination.echo", destination=name, ok=ok)
    return {
        "name": name,
        "type": dest.type,
        "ok": ok,
        "detail": detail,
        "seconds": round(time.monotonic() - start, 3),
    }
