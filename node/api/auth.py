"""Bearer-token authentication of the HTTP API (config ``auth.token`` / ``auth.token_file``).

No token configured: the API is open (the node listens on loopback by default).  With a token,
every route except ``GET /api/health`` needs ``Authorization: Bearer <token>``; anything else is
a 401 problem with ``WWW-Authenticate: Bearer`` (RFC 6750 section 3).
"""

from __future__ import annotations

import hmac
import logging

from fastapi import HTTPException, Request

from node.config import AuthConfig
from node.errors import ConfigError

__all__ = ["configured_token", "require_token"]

log = logging.getLogger(__name__)


def configured_token(auth: AuthConfig) -> str | None:
    """The API token from ``auth.token``, else the first line of ``auth.token_file``, else None.

    Raises
    ------
    ConfigError
        ``auth.token_file`` cannot be read or is empty.
    """
    if auth.token:
        return auth.token
    if auth.token_file is None:
        return None
    try:
        token = auth.token_file.read_text(encoding="utf-8").strip().splitlines()
    except OSError as exc:
        raise ConfigError([f"auth.token_file: cannot read {auth.token_file}: {exc}"]) from exc
    if not token or not token[0].strip():
        raise ConfigError([f"auth.token_file: {auth.token_file} is empty"])
    return token[0].strip()


def require_token(request: Request) -> None:
    """FastAPI dependency: refuse the request unless it carries the configured bearer token."""
    expected: str | None = request.app.state.api_token
    if expected is None:
        return
    scheme, _, given = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() == "bearer" and hmac.compare_digest(given.strip(), expected):
        return
    log.info("http.unauthorized", extra={"path": request.url.path})
    raise HTTPException(
        401,
        "this node requires 'Authorization: Bearer <token>' (config auth.token)",
        headers={"WWW-Authenticate": 'Bearer realm="ainode"'},
    )
