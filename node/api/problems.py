"""RFC 9457 problem details: the one translation of errors into HTTP responses.

Every ``AinodeError`` becomes ``application/problem+json`` with its class's ``http_status`` and
``type`` slug; every ``HTTPException`` (404 route, 405, 413, 415...) and request validation error
too, so clients see one error format from every endpoint.
"""

from __future__ import annotations

import http
import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from node.errors import AinodeError, WorkitemError

__all__ = [
    "PROBLEM_MEDIA_TYPE",
    "PROBLEM_RESPONSES",
    "install_problem_handler",
    "problem_response",
    "problem_type",
    "warning_header",
]

log = logging.getLogger(__name__)

PROBLEM_MEDIA_TYPE = "application/problem+json"

_PROBLEM_SCHEMA: dict[str, Any] = {
    "type": "object",
    "title": "Problem",
    "description": "RFC 9457 problem details",
    "required": ["type", "title", "status", "detail"],
    "properties": {
        "type": {"type": "string"},
        "title": {"type": "string"},
        "status": {"type": "integer"},
        "detail": {"type": "string"},
        "instance": {"type": "string"},
        "errors": {"type": "array", "items": {"type": "object"}},
    },
}

#: OpenAPI ``responses`` of every route: any 4xx/5xx is problem JSON (declaring "4XX" also
#: stops FastAPI from documenting its own application/json 422 body, which ainode never sends).
PROBLEM_RESPONSES: dict[int | str, dict[str, Any]] = {
    "4XX": {
        "description": "Client error (RFC 9457 problem details)",
        "content": {PROBLEM_MEDIA_TYPE: {"schema": _PROBLEM_SCHEMA}},
    },
    "5XX": {
        "description": "Server error (RFC 9457 problem details)",
        "content": {PROBLEM_MEDIA_TYPE: {"schema": _PROBLEM_SCHEMA}},
    },
}


def problem_type(slug: str) -> str:
    """The problem ``type`` URI of an ainode error slug (RFC 9457 section 3.1.1)."""
    return f"urn:ainode:problem:{slug}"


def warning_header(dicom_status: int, text: str) -> str:
    """An RFC 9111 ``Warning`` value (code 299) carrying a PS3.4 status, as PS3.18 section 11
    answers UPS-RS refusals and warnings: ``299 ainode "C302: the workitem is ..."``."""
    clean = "".join(c if " " <= c <= "~" and c not in '"\\' else "?" for c in text)
    return f'299 ainode "{dicom_status:04X}: {clean}"'


def _title(status: int) -> str:
    try:
        return http.HTTPStatus(status).phrase
    except ValueError:
        return "Error"


def problem_response(request: Request, exc: Exception) -> JSONResponse:
    """Turn ``exc`` into a problem+json response (RFC 9457 section 3).

    Parameters
    ----------
    request:
        The request that failed; its path becomes ``instance``.
    exc:
        An ``AinodeError`` (status and type from its class), an ``HTTPException``
        (``type`` is ``about:blank``, ``title`` the status phrase), a ``RequestValidationError``
        (422) or anything else (500, logged once, detail hidden).

    Returns
    -------
    JSONResponse
        With media type ``application/problem+json``.
    """
    headers: dict[str, str] | None = None
    extra: dict[str, Any] = {}
    if isinstance(exc, AinodeError):
        status, type_, detail = exc.http_status, problem_type(exc.type), str(exc)
        title = type(exc).__name__.removesuffix("Error") or "Ainode"
        title = _title(status) if title == "Ainode" else _split_camel(title)
        if isinstance(exc, WorkitemError):
            extra["dicom_status"] = f"{exc.dicom_status:04X}"
            headers = {"Warning": warning_header(exc.dicom_status, detail)}
    elif isinstance(exc, StarletteHTTPException):
        status, type_, title = exc.status_code, "about:blank", _title(exc.status_code)
        detail = exc.detail if isinstance(exc.detail, str) else title
        headers = dict(exc.headers) if exc.headers else None
    elif isinstance(exc, RequestValidationError):
        status, type_, title = 422, problem_type("invalid-request"), _title(422)
        errors = exc.errors()
        detail = "; ".join(
            f"{'.'.join(str(p) for p in e.get('loc', ()))}: {e.get('msg', '')}" for e in errors
        )
        extra["errors"] = [
            {"loc": [str(p) for p in e.get("loc", ())], "msg": str(e.get("msg", ""))}
            for e in errors
        ]
    else:
        log.error(
            "http.unhandled_error",
            extra={"path": request.url.path, "error_type": type(exc).__name__},
            exc_info=exc,
        )
        status, type_, title = 500, problem_type("internal"), _title(500)
        detail = "internal error; see the node's log"
    body = {
        "type": type_,
        "title": title,
        "status": status,
        "detail": detail,
        "instance": request.url.path,
        **extra,
    }
    return JSONResponse(body, status_code=status, headers=headers, media_type=PROBLEM_MEDIA_TYPE)


def _split_camel(name: str) -> str:
    words: list[str] = []
    for ch in name:
        if ch.isupper() and words:
            words.append(" ")
        words.append(ch.lower() if words else ch)
    return "".join(words)


async def _handler(request: Request, exc: Exception) -> JSONResponse:
    return problem_response(request, exc)


class _UnexpectedErrors:
    """ASGI middleware: an exception no handler took becomes a logged 500 problem.

    Starlette's own last-resort handler re-raises after answering, which makes the server drop
    the keep-alive connection; this answers and keeps the connection usable.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def tracking_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, receive, tracking_send)
        except Exception as exc:
            if started:  # too late for a problem response: let the server close the stream
                raise
            await problem_response(Request(scope), exc)(scope, receive, send)


def install_problem_handler(app: FastAPI) -> None:
    """Register the one problem handler for ainode errors, HTTP errors and everything else."""
    for exc_class in (AinodeError, StarletteHTTPException, RequestValidationError):
        app.add_exception_handler(exc_class, _handler)
    app.add_middleware(_UnexpectedErrors)
