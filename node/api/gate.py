"""Authentication before anything else reads the request (ASGI middleware).

FastAPI reads and decodes a request body before it runs a route's dependencies: a malformed JSON
body answers 422 even when the caller sent no credentials, and the answer tells an anonymous
caller something about the route.  :class:`AuthGate` runs first instead: it finds the route the
request is for, and for every protected route (the API routes behind
:func:`node.api.auth.authorize`, the console pages behind ``node.api.console.session``) it
resolves the caller and checks the role of :func:`node.api.auth.required_role` before the body is
read.  Without valid credentials an API route answers 401 (problem JSON, ``WWW-Authenticate:
Bearer``) and a console page redirects to the login form; a principal whose role is too low gets
403.  The routes' own dependencies still run afterwards, and reuse the principal found here.

Which routes are protected is read from the application itself (each route's dependency tree),
so a new route is covered by the same rule as its router.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

from fastapi import HTTPException, Request
from fastapi.responses import RedirectResponse, Response
from fastapi.routing import iter_route_contexts
from starlette.types import ASGIApp, Receive, Scope, Send

from node.api.auth import Authenticator, Principal, authorize, required_role

__all__ = ["AuthGate", "GuardedRoute", "guarded_routes"]

log = logging.getLogger(__name__)

Guard = Literal["api", "console"]


@dataclass(frozen=True, slots=True)
class GuardedRoute:
    """A route that needs credentials: its path template, methods and which face it belongs to."""

    path: str
    methods: frozenset[str]
    guard: Guard
    regex: re.Pattern[str]


def _calls(dependant: Any) -> set[Callable[..., Any]]:
    found: set[Callable[..., Any]] = set()
    if dependant is None:
        return found
    call = getattr(dependant, "call", None)
    if call is not None:
        found.add(call)
    for sub in getattr(dependant, "dependencies", ()):
        found |= _calls(sub)
    return found


def guarded_routes(app: Any) -> list[tuple[GuardedRoute | None, re.Pattern[str], frozenset[str]]]:
    """Every route of ``app`` in matching order: ``(guard or None, path regex, methods)``.

    A route is guarded when its dependency tree holds ``authorize`` (API) or the console's
    ``session``; the others (health, metrics, the OpenAPI page, the login form) are public.
    """
    from node.api.console import session  # the console imports this package's auth module

    out: list[tuple[GuardedRoute | None, re.Pattern[str], frozenset[str]]] = []
    for route in iter_route_contexts(app.routes):
        regex = getattr(route, "path_regex", None)
        methods = frozenset(getattr(route, "methods", None) or ())
        if regex is None:
            continue
        calls = _calls(getattr(route, "dependant", None))
        guard: Guard | None = (
            "api" if authorize in calls else "console" if session in calls else None
        )
        entry = GuardedRoute(str(route.path), methods, guard, regex) if guard is not None else None
        out.append((entry, regex, methods))
    return out


class AuthGate:
    """ASGI middleware: authenticate and authorize before the route reads the request.

    Parameters
    ----------
    app:
        The wrapped ASGI application (Starlette's middleware stack passes it).
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self._table: list[tuple[GuardedRoute | None, re.Pattern[str], frozenset[str]]] | None = None

    def _route(self, root: Any, method: str, path: str) -> GuardedRoute | None:
        if self._table is None:
            self._table = guarded_routes(root)
        fallback: GuardedRoute | None = None
        for entry, regex, methods in self._table:
            if not regex.match(path):
                continue
            if not methods or method in methods or (method == "HEAD" and "GET" in methods):
                return entry
            # same path, other method: Starlette answers 405; still guard it like its siblings
            fallback = fallback or entry
        return fallback

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        root = scope.get("app")
        route = self._route(root, scope["method"], scope["path"]) if root is not None else None
        if route is None:
            await self.app(scope, receive, send)
            return
        request = Request(scope)
        refusal = self._check(request, route)
        if refusal is not None:
            await refusal(scope, receive, send)
            return
        await self.app(scope, receive, send)

    def _check(self, request: Request, route: GuardedRoute) -> Response | None:
        from node.api.console import SESSION_COOKIE, forbidden_page
        from node.api.problems import problem_response

        authenticator: Authenticator = request.app.state.auth
        cookie = SESSION_COOKIE if route.guard == "console" else None
        try:
            principal = authenticator.resolve(request, cookie_name=cookie)
        except HTTPException as exc:  # 429: too many bad tokens from this client
            return problem_response(request, exc)
        if principal is None:
            if route.guard == "console":
                return RedirectResponse("/console/login", status_code=303)
            log.info("http.unauthorized", extra={"path": request.url.path})
            return problem_response(
                request,
                HTTPException(
                    401,
                    "this node requires 'Authorization: Bearer <token>' "
                    "(config auth.tokens / auth.token)",
                    headers={"WWW-Authenticate": 'Bearer realm="ainode"'},
                ),
            )
        needed = required_role(request.method, route.path)
        request.state.principal = principal
        if not principal.role.allows(needed):
            log.info(
                "http.forbidden",
                extra={"path": route.path, "role": principal.role.value, "needed": needed.value},
            )
            if route.guard == "console":
                return forbidden_page(request, principal, needed)
            return problem_response(request, _forbidden(principal, needed))
        return None


def _forbidden(principal: Principal, needed: Any) -> HTTPException:
    return HTTPException(
        403, f"{principal.actor} has role {principal.role.value}; this needs {needed.value}"
    )
