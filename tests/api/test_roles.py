"""Users, roles and machine tokens over real HTTP: who may read, operate and administer.

Users have argon2id hashes made by ``ainode users hash-password`` (run in-process with typer's
CliRunner); machine tokens come from a file and from an environment variable.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Literal

import httpx
import pytest
from argon2 import PasswordHasher
from typer.testing import CliRunner

from node.api.auth import Role, required_role
from node.cli import app as cli_app
from node.config import AuthConfig, TokenConfig, UserConfig, parse_config
from node.errors import ConfigError
from tests.api.conftest import multipart, start_node
from tests.api.opsnode import OpsNode, start_ops_node

PASSWORDS = {"vera": "viewer-pass-1", "otto": "operator-pass-2", "ada": "admin-pass-3"}
ROLES: dict[str, Literal["viewer", "operator", "admin"]] = {
    "vera": "viewer",
    "otto": "operator",
    "ada": "admin",
}
PACS_TOKEN = "pacs-machine-token-0123456789"
MONITOR_TOKEN = "monitor-token-abcdef"
LEGACY = "legacy-admin-token"


def hash_with_cli(password: str) -> str:
    result = CliRunner().invoke(cli_app, ["users", "hash-password"], input=password + "\n")
    assert result.exit_code == 0, result.output
    digest = result.output.strip()
    assert digest.startswith("$argon2id$") and password not in result.output
    return digest


@pytest.fixture(scope="module")
def monitor_env() -> Iterator[str]:
    mp = pytest.MonkeyPatch()
    mp.setenv("AINODE_TEST_MONITOR_TOKEN", MONITOR_TOKEN)
    yield "AINODE_TEST_MONITOR_TOKEN"
    mp.undo()


@pytest.fixture(scope="module")
def auth(tmp_path_factory: pytest.TempPathFactory, monitor_env: str) -> AuthConfig:
    secrets_dir = tmp_path_factory.mktemp("secrets")
    (secrets_dir / "pacs.token").write_text(PACS_TOKEN + "\n")
    return AuthConfig(
        token=LEGACY,
        users={
            n: UserConfig(password_hash=hash_with_cli(p), role=ROLES[n])
            for n, p in PASSWORDS.items()
        },
        tokens={
            "pacs": TokenConfig(token_file=secrets_dir / "pacs.token", role="operator"),
            "monitor": TokenConfig(token_env=monitor_env, role="viewer"),
        },
        login_max_failures=3,
    )


@pytest.fixture(scope="module")
def ops(tmp_path_factory: pytest.TempPathFactory, auth: AuthConfig) -> Iterator[OpsNode]:
    yield from start_ops_node(tmp_path_factory.mktemp("roles"), auth=auth)


def _bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def test_hash_password_cli_output_verifies() -> None:
    digest = hash_with_cli("correct horse battery")
    assert PasswordHasher().verify(digest, "correct horse battery")
    short = CliRunner().invoke(cli_app, ["users", "hash-password"], input="short\n")
    assert short.exit_code == 2


def test_policy_table() -> None:
    assert required_role("GET", "/api/studies/{study_uid}") is Role.VIEWER
    assert required_role("POST", "/api/jobs/{job_id}/retry") is Role.OPERATOR
    assert required_role("POST", "/dicom-web/studies") is Role.OPERATOR
    assert required_role("GET", "/dicom-web/studies") is Role.VIEWER
    assert required_role("PUT", "/api/rules") is Role.ADMIN
    assert required_role("POST", "/api/rules/dry-run") is Role.VIEWER
    assert required_role("GET", "/api/audit") is Role.ADMIN


def test_machine_tokens_have_their_roles(ops: OpsNode) -> None:
    anon = httpx.Client(base_url=str(ops.http.base_url), timeout=30)
    monitor, pacs, legacy = _bearer(MONITOR_TOKEN), _bearer(PACS_TOKEN), _bearer(LEGACY)
    rules_text = ops.rules_path.read_text(encoding="utf-8")
    with anon:
        assert anon.get("/api/studies").status_code == 401
        # viewer: reads (PHI-bearing study detail included), no writes
        assert anon.get("/api/studies", headers=monitor).status_code == 200
        assert anon.get(f"/api/studies/{ops.ct_study}", headers=monitor).status_code == 200
        r = anon.post("/api/jobs/j-none/retry", headers=monitor)
        assert r.status_code == 403
        assert r.headers["content-type"] == "application/problem+json"
        assert "token:monitor has role viewer; this needs operator" in r.json()["detail"]
        assert (
            anon.post("/api/rules/validate", json={"text": rules_text}, headers=monitor).status_code
            == 200
        )
        body, hdrs = multipart([])
        assert (
            anon.post("/dicom-web/studies", content=body, headers={**hdrs, **monitor}).status_code
            == 403
        )
        # operator: retries, STOW-RS; not rules
        assert (
            anon.post("/api/jobs/j-none/retry", headers=pacs).status_code == 404
        )  # allowed, unknown
        dead = ops.node.outbox.list(state="dead")[0]
        assert anon.post(f"/api/deliveries/{dead.id}/retry", headers=pacs).status_code == 200
        stow = anon.post("/dicom-web/studies", content=body, headers={**hdrs, **pacs})
        assert stow.status_code not in (401, 403)
        r = anon.put("/api/rules", json={"text": rules_text}, headers=pacs)
        assert r.status_code == 403
        assert anon.get("/api/audit", headers=pacs).status_code == 403
        # DICOMweb answers carry patient data: only the roles of console.phi_roles, audited
        r = anon.get("/dicom-web/studies", headers=monitor)
        assert r.status_code == 403 and "console.phi_roles" in r.json()["detail"]
        series = ops.node.index.get_study(ops.ct_study).series[0].series_uid  # type: ignore[union-attr]
        meta = f"/dicom-web/studies/{ops.ct_study}/series/{series}/metadata"
        assert anon.get(meta, headers=monitor).status_code == 403
        assert anon.get("/dicom-web/studies", headers=pacs).status_code == 200
        assert anon.get(meta, headers=pacs).status_code == 200
        # the single token of earlier versions is an admin
        assert anon.put("/api/rules", json={"text": rules_text}, headers=legacy).status_code == 200
        records = anon.get("/api/audit", headers=legacy).json()["records"]
    actors = {(r["event"], r["actor"]) for r in records}
    dicomweb_views = {
        r["purpose"] for r in records if r["event"] == "phi.viewed" and r["actor"] == "token:pacs"
    }
    assert dicomweb_views >= {
        "GET /dicom-web/studies",
        "GET /dicom-web/.../series/{uid}/metadata",
    }, dicomweb_views
    assert not any(r["event"] == "phi.viewed" and r["actor"] == "token:monitor" for r in records)
    assert ("delivery.retry", "token:pacs") in actors
    assert ("rules.changed", "token:token") in actors
    # no secret ever reaches the audit trail
    text = (ops.data_dir / "audit.log").read_text(encoding="utf-8")
    for secret in (PACS_TOKEN, MONITOR_TOKEN, LEGACY, *PASSWORDS.values()):
        assert secret not in text


def _console(ops: OpsNode) -> httpx.Client:
    return httpx.Client(base_url=str(ops.http.base_url), follow_redirects=False, timeout=30)


def _login_csrf(c: httpx.Client) -> str:
    """The login form's token (GET sets the pre-session cookie the token is bound to)."""
    m = re.search(r'name="csrf" value="([0-9a-f]{64})"', c.get("/console/login").text)
    assert m is not None
    return m.group(1)


def _login(c: httpx.Client, user: str, password: str) -> httpx.Response:
    return c.post(
        "/console/login",
        data={"user": user, "password": password, "csrf": _login_csrf(c)},
        headers={"Accept": "text/html"},
    )


def _csrf(c: httpx.Client) -> str:
    m = re.search(r'name="csrf" value="([0-9a-f]{64})"', c.get("/console/rules").text)
    assert m is not None
    return m.group(1)


def test_console_users_and_roles(ops: OpsNode) -> None:
    with _console(ops) as c:
        bad = _login(c, "vera", "nope")
        assert bad.status_code == 401 and "wrong user name or password" in bad.text
        assert "ainode_session" not in bad.headers.get("set-cookie", "")  # no session
        ok = _login(c, "vera", PASSWORDS["vera"])
        assert ok.status_code == 303 and "httponly" in ok.headers["set-cookie"].lower()
        page = c.get(f"/console/studies/{ops.ct_study}")
        assert (
            page.status_code == 200 and 'id="whoami"' in page.text and "vera · viewer" in page.text
        )
        assert 'class="retry"' not in page.text  # no retry buttons for a viewer
        csrf = _csrf(c)
        text = ops.rules_path.read_text(encoding="utf-8")
        saved = c.post("/console/rules", data={"csrf": csrf, "text": text, "action": "save"})
        assert saved.status_code == 403
        assert "user:vera has role <b>viewer</b>; this action needs <b>admin</b>" in saved.text
        checked = c.post("/console/rules", data={"csrf": csrf, "text": text, "action": "validate"})
        assert checked.status_code == 200 and "valid: 2 rule(s)" in checked.text
        dead = ops.node.outbox.list()[0]
        r = c.post(f"/console/deliveries/{dead.id}/retry", data={"csrf": csrf})
        assert r.status_code == 403
    with _console(ops) as c:
        assert _login(c, "otto", PASSWORDS["otto"]).status_code == 303
        csrf = _csrf(c)
        row = ops.node.outbox.list()[0]
        r = c.post(f"/console/deliveries/{row.id}/retry", data={"csrf": csrf})
        assert r.status_code == 303
        text = ops.rules_path.read_text(encoding="utf-8")
        assert (
            c.post(
                "/console/rules", data={"csrf": csrf, "text": text, "action": "save"}
            ).status_code
            == 403
        )
    with _console(ops) as c:
        assert _login(c, "ada", PASSWORDS["ada"]).status_code == 303
        csrf = _csrf(c)
        text = ops.rules_path.read_text(encoding="utf-8")
        r = c.post("/console/rules", data={"csrf": csrf, "text": text, "action": "save"})
        assert r.status_code == 200 and "saved and active" in r.text
    with _console(ops) as c:  # a machine token logs in with an empty user name
        assert _login(c, "", PACS_TOKEN).status_code == 303
        assert "pacs · operator" in c.get("/console/studies").text
    records = ops.http.get("/api/audit", headers=_bearer(LEGACY), params={"limit": 1000}).json()[
        "records"
    ]
    logins = [
        (r["event"], r["actor"], r.get("user"), r["outcome"])
        for r in records
        if r["event"].startswith("login")
    ]
    assert ("login", "user:vera", "vera", "success") in logins
    assert ("login", "user:ada", "ada", "success") in logins
    assert ("login.failed", "anonymous", "vera", "failure") in logins
    assert any(r["event"] == "access.denied" and r["actor"] == "user:vera" for r in records)


def test_login_is_rate_limited_per_client_and_user(ops: OpsNode) -> None:
    with _console(ops) as c:
        for _ in range(3):  # login_max_failures = 3
            assert _login(c, "otto", "wrong").status_code == 401
        blocked = c.post(
            "/console/login",
            data={"user": "otto", "password": PASSWORDS["otto"], "csrf": _login_csrf(c)},
        )
        assert blocked.status_code == 429
        assert blocked.headers["content-type"] == "application/problem+json"
        assert int(blocked.headers["retry-after"]) >= 1
        page = _login(c, "otto", PASSWORDS["otto"])  # a browser gets the page, still refused
        assert page.status_code == 429 and "too many failed attempts" in page.text
        # another user from the same client is not blocked
        assert _login(c, "ada", PASSWORDS["ada"]).status_code == 303
    metrics = ops.http.get("/metrics").text
    m = re.search(r"^ainode_login_failures_total (\S+)$", metrics, re.M)
    assert m is not None and float(m.group(1)) >= 5


def test_bad_bearer_tokens_are_rate_limited(tmp_path: Path) -> None:
    node = start_node(
        tmp_path / "data", auth=AuthConfig(token="t0ken-for-limits", login_max_failures=2)
    )
    try:
        url = f"http://127.0.0.1:{node.http_port}/api/studies"
        assert [
            httpx.get(url, headers=_bearer("guess"), timeout=60).status_code for _ in range(2)
        ] == [
            401,
            401,
        ]
        assert httpx.get(url, headers=_bearer("t0ken-for-limits"), timeout=60).status_code == 429
    finally:
        node.stop()


def test_token_sources_are_checked(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AINODE_UNSET_TOKEN", raising=False)
    auth = AuthConfig(tokens={"x": TokenConfig(token_env="AINODE_UNSET_TOKEN")})
    with pytest.raises(ConfigError, match="auth.tokens.x.token_env: environment variable"):
        start_node(tmp_path / "a", auth=auth)
    empty = tmp_path / "empty.token"
    empty.write_text("\n")
    with pytest.raises(ConfigError, match="the token is empty"):
        start_node(tmp_path / "b", auth=AuthConfig(tokens={"y": TokenConfig(token_file=empty)}))
    with pytest.raises(ConfigError, match="exactly one of token_file or token_env"):
        parse_config("auth:\n  tokens:\n    z: {role: admin}\n")
    with pytest.raises(ConfigError, match="password_hash"):
        parse_config("auth:\n  users:\n    bob: {password_hash: plain-text, role: admin}\n")
    with pytest.raises(ConfigError, match="role"):
        parse_config("auth:\n  users:\n    bob: {password_hash: $argon2id$x, role: root}\n")


class _Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


def test_sessions_expire_and_follow_the_config() -> None:
    from node.api.auth import Authenticator, LoginLimiter, Principal

    clock = _Clock()
    digest = PasswordHasher(time_cost=1, memory_cost=1024).hash("pw-123456")
    auth = AuthConfig(
        users={"bob": UserConfig(password_hash=digest, role="operator")}, session_hours=1
    )
    a = Authenticator(auth, clock=clock)
    bob = a.check_password("bob", "pw-123456")
    assert bob == Principal("bob", Role.OPERATOR, "user")
    assert a.check_password("bob", "wrong") is None
    assert a.check_password("nobody", "pw-123456") is None
    cookie = a.issue_session(bob)
    assert a.from_session(cookie) == bob
    payload, _, mac = cookie.partition(".")
    assert a.from_session(f"{payload}.{'0' * len(mac)}") is None  # forged signature
    assert a.from_session("garbage") is None
    clock.now += 3601
    assert a.from_session(cookie) is None  # expired
    # another process (restart) has another secret: old cookies are void
    assert Authenticator(auth, clock=clock).from_session(a.issue_session(bob)) is None
    # the role comes from the config of the running node, not from the cookie
    demoted = Authenticator(
        AuthConfig(users={"bob": UserConfig(password_hash=digest, role="viewer")}), clock=clock
    )
    demoted.secret = a.secret
    assert demoted.from_session(a.issue_session(bob)) == Principal("bob", Role.VIEWER, "user")
    assert digest.startswith("$argon2id$")

    limiter = LoginLimiter(2, 60.0, clock=clock)
    limiter.failed("k")
    assert limiter.retry_after("k") == 0
    limiter.failed("k")
    assert limiter.retry_after("k") == pytest.approx(60.0)
    clock.now += 30
    assert limiter.retry_after("k") == pytest.approx(30.0)
    assert limiter.retry_after("other") == 0
    clock.now += 31
    assert limiter.retry_after("k") == 0
    limiter.failed("k")
    limiter.succeeded("k")
    assert limiter.retry_after("k") == 0


def test_client_token_for_local_cli(tmp_path: Path) -> None:
    from node.api.auth import client_token

    assert client_token(AuthConfig()) is None
    assert client_token(AuthConfig(token="legacy")) == "legacy"
    viewer = tmp_path / "viewer.token"
    viewer.write_text("v-token\n")
    operator = tmp_path / "operator.token"
    operator.write_text("o-token\n")
    tokens = {
        "a-viewer": TokenConfig(token_file=viewer, role="viewer"),
        "b-operator": TokenConfig(token_file=operator, role="operator"),
    }
    assert client_token(AuthConfig(tokens=tokens)) == "o-token"
    assert client_token(AuthConfig(tokens={"a-viewer": tokens["a-viewer"]})) is None


def test_login_form_is_bound_to_its_pre_session_cookie(ops: OpsNode) -> None:
    """Login CSRF: a post without the form's cookie, or with another browser's token, is refused
    before the password is checked, and does not count towards the failure limit."""
    with _console(ops) as attacker:
        forged = _login_csrf(attacker)  # a token the attacker can get for their own cookie
    with _console(ops) as victim:
        no_cookie = victim.post(
            "/console/login", data={"user": "ada", "password": PASSWORDS["ada"], "csrf": forged}
        )
        assert no_cookie.status_code == 403
        assert no_cookie.headers["content-type"] == "application/problem+json"
        victim.get("/console/login")  # the victim's own cookie, the attacker's token
        crossed = victim.post(
            "/console/login",
            data={"user": "ada", "password": PASSWORDS["ada"], "csrf": forged},
            headers={"Accept": "text/html"},
        )
        assert crossed.status_code == 403 and "stale" in crossed.text
        assert "ainode_session" not in crossed.headers.get("set-cookie", "")
        for _ in range(5):  # refused forms are not failures: no lock-out by forged posts
            victim.post("/console/login", data={"user": "ada", "password": "x", "csrf": forged})
        assert _login(victim, "ada", PASSWORDS["ada"]).status_code == 303
