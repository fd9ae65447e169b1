"""Who is calling, and what they may do: principals, roles and the HTTP access policy.

One place resolves a request into a ``Principal`` (:meth:`Authenticator.resolve`): a bearer
token (``Authorization: Bearer``, RFC 6750) or a console session cookie.  An OIDC login would
be one more branch there, mapping its claims to a role.

Roles are ordered: ``viewer`` (every page and read API, PHI-bearing study pages included)
< ``reviewer`` (plus feedback on results: accept / reject / modify) < ``operator``
(retry/cancel jobs and deliveries, force completion, pull, echo, STOW-RS) < ``admin`` (rule
changes, the audit trail).  :func:`required_role` is the policy table.

Credentials (config ``auth``):

- ``users``: local users with an argon2id ``password_hash`` (``ainode users hash-password``);
- ``tokens``: machine tokens, each read from ``token_file`` or ``token_env`` with a role;
- ``token`` / ``token_file``: the single token of earlier versions, an ``admin`` token.

With none of them configured the node is *open*: every request acts as an anonymous admin
(the default listener is loopback, for the demo).  Secrets are never logged; failed logins and
bad bearer tokens are counted per client and user, and ``login_max_failures`` failures within
``login_window_seconds`` answer 429 until the window has passed.
"""

from __future__ import annotations

import base64
import enum
import functools
import hashlib
import hmac
import json
import logging
import os
import secrets
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError
from fastapi import HTTPException, Request

from node.config import AuthConfig
from node.errors import ConfigError

__all__ = [
    "Authenticator",
    "LoginLimiter",
    "Principal",
    "Role",
    "authorize",
    "client_token",
    "configured_tokens",
    "hash_password",
    "required_role",
]

log = logging.getLogger(__name__)


class Role(enum.Enum):
    """What a principal may do; each role includes the ones before it."""

    VIEWER = "viewer"
    REVIEWER = "reviewer"
    OPERATOR = "operator"
    ADMIN = "admin"

    def allows(self, needed: Role) -> bool:
        """True when this role includes ``needed``."""
        return _RANK[self] >= _RANK[needed]


_RANK = {Role.VIEWER: 0, Role.REVIEWER: 1, Role.OPERATOR: 2, Role.ADMIN: 3}


@dataclass(frozen=True, slots=True)
class Principal:
    """An authenticated caller: ``kind`` is ``user``, ``token`` or ``open`` (no auth configured)."""

    name: str
    role: Role
    kind: str

    @property
    def actor(self) -> str:
        """The audit log's ``actor``: ``user:alice``, ``token:pacs`` or ``anonymous``."""
        return "anonymous" if self.kind == "open" else f"{self.kind}:{self.name}"


OPEN = Principal("anonymous", Role.ADMIN, "open")

#: Requests that need more (or less) than the default: reads = viewer, writes = operator.
_POLICY: dict[tuple[str, str], Role] = {
    ("PUT", "/api/rules"): Role.ADMIN,
    ("POST", "/api/rules/validate"): Role.VIEWER,
    ("POST", "/api/rules/dry-run"): Role.VIEWER,
    # replay reads the stored headers of every study in a window (seconds of CPU for 10,000):
    # operator, like other node-wide work; its output holds UIDs and dates, no patient data
    ("POST", "/api/rules/replay"): Role.OPERATOR,
    ("POST", "/console/rules/replay"): Role.OPERATOR,
    ("GET", "/api/audit"): Role.ADMIN,
    ("POST", "/console/logout"): Role.VIEWER,
    # radiologist feedback on results (accept / reject / modify): reviewer, not operator
    ("POST", "/api/feedback"): Role.REVIEWER,
    ("POST", "/console/jobs/{job_id}/feedback"): Role.REVIEWER,
    # retracting a result set (IOCM rejection note, REST delete): operator
    ("POST", "/api/results/retract"): Role.OPERATOR,
    ("POST", "/console/studies/{study_uid}/retract"): Role.OPERATOR,
    # the rule editor's form checks (viewer) or saves (admin: checked by the page per action)
    ("POST", "/console/rules"): Role.VIEWER,
}


def required_role(method: str, route_path: str) -> Role:
    """The role a request needs: the ``_POLICY`` entry, else viewer to read, operator to write.

    Parameters
    ----------
    method:
        HTTP method (``GET``, ``POST``...).
    route_path:
        The route's path template (``/api/jobs/{job_id}/retry``), not the concrete URL.
    """
    role = _POLICY.get((method.upper(), route_path))
    if role is not None:
        return role
    return Role.VIEWER if method.upper() in ("GET", "HEAD", "OPTIONS") else Role.OPERATOR


def hash_password(password: str) -> str:
    """An argon2id hash (RFC 9106, argon2-cffi's default parameters) for ``auth.users``."""
    return PasswordHasher().hash(password)


def _read_secret(source: str, read: Callable[[], str | None]) -> str:
    try:
        text = read()
    except OSError as exc:
        raise ConfigError([f"{source}: cannot read: {exc.strerror}"]) from exc
    lines = (text or "").strip().splitlines()
    if not lines or not lines[0].strip():
        raise ConfigError([f"{source}: the token is empty"])
    return lines[0].strip()


def configured_tokens(auth: AuthConfig) -> list[tuple[str, str, Role]]:
    """``(name, secret, role)`` of every configured token, secrets read from files/environment.

    The single ``auth.token`` / ``auth.token_file`` is named ``token`` and is an admin.

    Raises
    ------
    ConfigError
        A token file cannot be read, an environment variable is unset, or a token is empty.
    """
    out: list[tuple[str, str, Role]] = []
    if auth.token:
        out.append(("token", auth.token.strip(), Role.ADMIN))
    elif auth.token_file is not None:
        path = auth.token_file
        out.append(("token", _read_secret(f"auth.token_file ({path})", path.read_text), Role.ADMIN))
    for name, tok in sorted(auth.tokens.items()):
        where = f"auth.tokens.{name}"
        if tok.token_file is not None:
            source = f"{where}.token_file ({tok.token_file})"
            secret = _read_secret(source, tok.token_file.read_text)
        else:
            env = str(tok.token_env)
            if env not in os.environ:
                raise ConfigError([f"{where}.token_env: environment variable {env} is not set"])
            secret = _read_secret(f"{where}.token_env ({env})", functools.partial(os.getenv, env))
        out.append((name, secret, Role(tok.role)))
    return out


def client_token(auth: AuthConfig) -> str | None:
    """The bearer token a local CLI command should send to its node (None: the node is open).

    The single ``auth.token`` / ``auth.token_file`` if set, else the first (by name) machine
    token with at least the ``operator`` role.

    Raises
    ------
    ConfigError
        That token cannot be read.
    """
    for _, secret, role in configured_tokens(auth):
        if role.allows(Role.OPERATOR):
            return secret
    return None


class LoginLimiter:
    """Failed attempts per key (client address + user name) in a sliding window.

    Parameters
    ----------
    max_failures:
        Failures allowed within ``window_seconds``; the next attempt is refused.
    window_seconds:
        Length of the window.
    clock:
        Monotonic seconds (injectable for tests).
    """

    _MAX_KEYS = 10_000

    def __init__(
        self,
        max_failures: int,
        window_seconds: float,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.max_failures = max_failures
        self.window_seconds = window_seconds
        self._clock = clock
        self._failures: dict[str, deque[float]] = {}
        self._lock = threading.Lock()

    def _recent(self, key: str, now: float) -> deque[float]:
        times = self._failures.get(key)
        if times is None:
            return deque()
        while times and now - times[0] > self.window_seconds:
            times.popleft()
        if not times:
            del self._failures[key]
        return times

    def retry_after(self, key: str) -> float:
        """Seconds until ``key`` may try again (0 = now)."""
        with self._lock:
            now = self._clock()
            times = self._recent(key, now)
            if len(times) < self.max_failures:
                return 0.0
            return max(0.0, self.window_seconds - (now - times[0]))

    def failed(self, key: str) -> None:
        """Count one failure of ``key``."""
        with self._lock:
            now = self._clock()
            if key not in self._failures and len(self._failures) >= self._MAX_KEYS:
                self._failures.pop(next(iter(self._failures)))  # oldest key first
            self._failures.setdefault(key, deque()).append(now)

    def succeeded(self, key: str) -> None:
        """Forget the failures of ``key``."""
        with self._lock:
            self._failures.pop(key, None)


class Authenticator:
    """Checks tokens, passwords and session cookies against the ``auth`` config.

    Parameters
    ----------
    auth:
        The ``auth`` section.
    clock:
        Wall-clock seconds for session expiry (injectable for tests).

    Raises
    ------
    ConfigError
        A configured token cannot be read.
    """

    def __init__(self, auth: AuthConfig, *, clock: Callable[[], float] = time.time) -> None:
        self._tokens = [(n, s.encode(), r) for n, s, r in configured_tokens(auth)]
        self._users = {name: (u.password_hash, Role(u.role)) for name, u in auth.users.items()}
        self._session_seconds = auth.session_hours * 3600
        self._clock = clock
        self._hasher = PasswordHasher()
        self._dummy_hash: str | None = None
        #: Signs session cookies and CSRF fields; sessions end when the process restarts.
        self.secret = secrets.token_bytes(32)
        self.limiter = LoginLimiter(auth.login_max_failures, auth.login_window_seconds)

    @property
    def is_open(self) -> bool:
        """No users and no tokens: everyone is an anonymous admin."""
        return not self._tokens and not self._users

    @property
    def has_users(self) -> bool:
        """Local users are configured (the login form asks for a user name)."""
        return bool(self._users)

    # ------------------------------------------------------------------ credentials
    def from_token(self, given: str) -> Principal | None:
        """The principal of a machine token, or None (every token is compared, in constant time)."""
        found: Principal | None = None
        raw = given.strip().encode()
        for name, secret, role in self._tokens:
            if hmac.compare_digest(raw, secret) and found is None:
                found = Principal(name, role, "token")
        return found

    def check_password(self, user: str, password: str) -> Principal | None:
        """The principal of a local user whose password matches, else None.

        Unknown users cost one argon2 verification too, so timing does not reveal user names.
        """
        entry = self._users.get(user)
        if entry is None:
            if self._dummy_hash is None:
                self._dummy_hash = self._hasher.hash(secrets.token_hex(16))
            stored = self._dummy_hash
        else:
            stored = entry[0]
        try:
            self._hasher.verify(stored, password)
        except (VerifyMismatchError, VerificationError, InvalidHashError):
            return None
        return None if entry is None else Principal(user, entry[1], "user")

    def _current(self, kind: str, name: str) -> Principal | None:
        """The principal ``kind:name`` as configured now (role changes apply at once)."""
        if kind == "user" and name in self._users:
            return Principal(name, self._users[name][1], "user")
        if kind == "token":
            for n, _, role in self._tokens:
                if n == name:
                    return Principal(n, role, "token")
        return None

    # ------------------------------------------------------------------ sessions
    def sign(self, message: str) -> str:
        """HMAC-SHA256 of ``message`` with this process's secret (hex)."""
        return hmac.new(self.secret, message.encode(), hashlib.sha256).hexdigest()

    def issue_session(self, principal: Principal) -> str:
        """A session cookie value: ``base64(json{kind,name,issued}).hmac``."""
        body = json.dumps({"k": principal.kind, "n": principal.name, "t": int(self._clock())})
        payload = base64.urlsafe_b64encode(body.encode()).decode().rstrip("=")
        return f"{payload}.{self.sign('session:' + payload)}"

    @property
    def session_seconds(self) -> float:
        """How long a console session lasts."""
        return self._session_seconds

    def from_session(self, cookie: str) -> Principal | None:
        """The principal of a valid, unexpired session cookie, else None."""
        payload, _, mac = cookie.partition(".")
        if not payload or not mac:
            return None
        if not hmac.compare_digest(mac, self.sign("session:" + payload)):
            return None
        try:
            data: dict[str, Any] = json.loads(
                base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4))
            )
            issued, kind, name = float(data["t"]), str(data["k"]), str(data["n"])
        except (ValueError, KeyError, TypeError):
            return None
        if self._clock() - issued > self._session_seconds:
            return None
        return self._current(kind, name)

    # ------------------------------------------------------------------ the one place
    def resolve(self, request: Request, *, cookie_name: str | None = None) -> Principal | None:
        """Who sent ``request``: bearer token, else session cookie, else None.

        An OIDC integration adds its branch here (validated ID token -> ``Principal``).

        Raises
        ------
        HTTPException
            429 when this client sent too many bad bearer tokens recently.
        """
        if self.is_open:
            return OPEN
        scheme, _, given = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() == "bearer" and given.strip():
            key = f"{client_of(request)}|<bearer>"
            wait = self.limiter.retry_after(key)
            if wait > 0:
                raise too_many(wait)
            principal = self.from_token(given)
            if principal is None:
                self.limiter.failed(key)
                log.info("http.bad_token", extra={"path": request.url.path})
            return principal
        if cookie_name is not None:
            cookie = request.cookies.get(cookie_name)
            if cookie:
                return self.from_session(cookie)
        return None


def client_of(request: Request) -> str:
    """The peer address of ``request`` (``-`` when unknown)."""
    return request.client.host if request.client else "-"


def too_many(wait: float) -> HTTPException:
    """A 429 (RFC 6585) telling the client how long to wait."""
    seconds = max(1, int(wait + 0.999))
    return HTTPException(
        429,
        f"too many failed attempts from this client; try again in {seconds} s",
        headers={"Retry-After": str(seconds)},
    )


def authorize(request: Request) -> Principal:
    """FastAPI dependency of every API route but health/metrics: resolve, then check the role.

    Raises
    ------
    HTTPException
        401 (with ``WWW-Authenticate: Bearer``) without valid credentials; 403 when the
        principal's role is below ``required_role`` for this route.
    """
    principal: Principal | None = getattr(request.state, "principal", None)
    if principal is None:  # node.api.gate.AuthGate resolves it first; direct use resolves here
        authenticator: Authenticator = request.app.state.auth
        principal = authenticator.resolve(request)
    if principal is None:
        log.info("http.unauthorized", extra={"path": request.url.path})
        raise HTTPException(
            401,
            "this node requires 'Authorization: Bearer <token>' (config auth.tokens / auth.token)",
            headers={"WWW-Authenticate": 'Bearer realm="ainode"'},
        )
    route = request.scope.get("route")
    path = getattr(route, "path", request.url.path)
    needed = required_role(request.method, path)
    if not principal.role.allows(needed):
        log.info(
            "http.forbidden",
            extra={"path": path, "role": principal.role.value, "needed": needed.value},
        )
        raise HTTPException(
            403, f"{principal.actor} has role {principal.role.value}; this needs {needed.value}"
        )
    request.state.principal = principal
    return principal
