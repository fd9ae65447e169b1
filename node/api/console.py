"""The operator console: server-rendered pages (Jinja2) under ``/console``.

Pages here: login, studies (auto-refreshing list), one study (series, routing explanation,
jobs, results with previews, findings, feedback forms, deliveries with a retry button), models
(cards, held-out metrics, demo badge) and destinations (outbox counts, echo).  The rule editor
is ``console_rules``; the dashboard, deliveries list and result previews are
``console_activity``; pulls with their progress are ``console_pulls``; the feedback form posts to
``node.api.feedback``.

Authentication (``node.api.auth``): when users or tokens are configured every page but the
login page needs a session cookie, obtained by posting a user name and password (or a machine
token) to ``/console/login``.  The cookie holds ``base64(kind, name, issued).HMAC`` (HttpOnly,
SameSite=Strict, ``auth.session_hours``); the role is looked up in the config on every request.
Pages need ``viewer``; feedback forms ``reviewer``; retry and echo buttons ``operator``; saving
rules ``admin`` (else a 403 page).  Forms are CSRF-safe: each carries ``csrf`` = HMAC(process
secret, session cookie), checked on every POST (with SameSite=Strict cookies as a second
layer); the login form, before any session exists, is bound the same way to a random
pre-session cookie (``LOGIN_COOKIE``).  Failed logins are rate-limited per client address and
user name and audited (never the password).
"""

from __future__ import annotations

import datetime as dt
import hmac
import json
import secrets
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import quote, urlencode

from fastapi import APIRouter, Depends, Form, HTTPException, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.templating import Jinja2Templates
from markupsafe import Markup

import dicom_rules
from node.api.auditing import audit
from node.api.auth import Authenticator, Principal, Role, client_of, too_many
from node.api.deliveries import present_delivery
from node.api.deps import NodeView, get_node
from node.api.jobs import iso, present_job
from node.api.lifecycle import lifecycle
from node.api.models import model_rows
from node.api.phi import PHI_FIELDS, audit_phi_view, mask, phi_allowed, phi_filters
from node.imaging.sop_classes import SC_CLASSES, SEG_CLASS
from node.jobs.store import COMBINE_MODEL
from node.routing.dispatch import series_inputs
from node.store.feedback import VERDICTS
from node.store.index import AI_STATUSES, SORT_KEYS, STUDY_STATES, StudyQuery

__all__ = [
    "SESSION_COOKIE",
    "Session",
    "check_csrf",
    "forbidden_page",
    "need",
    "page",
    "router",
    "session",
]

router = APIRouter(prefix="/console", include_in_schema=False)
templates = Jinja2Templates(directory=str(Path(__file__).with_name("templates")))
templates.env.filters["iso"] = lambda v: (iso(v) or "")[:19].replace("T", " ") if v else ""


def _when(epoch: float | None) -> Markup:
    """A time as ``<time class="ts">``: UTC in the page, the viewer's zone after the page's
    script ran (absolute and relative); empty for None."""
    if not epoch:
        return Markup("")
    text = iso(epoch) or ""
    return Markup('<time class="ts" datetime="{}Z">{} UTC</time>').format(
        text.replace("+00:00", ""), text[:19].replace("T", " ")
    )


templates.env.filters["when"] = _when

SESSION_COOKIE = "ainode_session"


class _LoginRequired(Exception):
    """Raised by ``session`` when the console needs a login first."""


class _Forbidden(Exception):
    """Raised by ``need`` when the signed-in principal's role is too low."""

    def __init__(self, principal: Principal, needed: Role) -> None:
        super().__init__(needed.value)
        self.principal = principal
        self.needed = needed


def _auth(request: Request) -> Authenticator:
    authenticator: Authenticator = request.app.state.auth
    return authenticator


def _csrf(request: Request) -> str:
    return _auth(request).sign("csrf:" + request.cookies.get(SESSION_COOKIE, "anonymous"))


def session(request: Request) -> Principal:
    """Dependency of every page but login: who is signed in (anyone, when the node is open)."""
    principal = _auth(request).resolve(request, cookie_name=SESSION_COOKIE)
    if principal is None:
        raise _LoginRequired
    request.state.principal = principal
    return principal


def need(request: Request, role: Role) -> None:
    """Refuse the action (403 page) unless the signed-in principal has ``role``."""
    principal: Principal = request.state.principal
    if not principal.role.allows(role):
        raise _Forbidden(principal, role)


def check_csrf(request: Request, csrf: str) -> None:
    """Refuse a form post whose ``csrf`` field does not belong to this session (403)."""
    if not hmac.compare_digest(csrf, _csrf(request)):
        raise HTTPException(403, "the form is stale or was not sent by this console; reload it")


def page(
    request: Request,
    name: str,
    *,
    status_code: int = 200,
    headers: dict[str, str] | None = None,
    **context: Any,
) -> HTMLResponse:
    principal: Principal | None = getattr(request.state, "principal", None)
    context.update(
        csrf=_csrf(request),
        has_login=not _auth(request).is_open,
        has_users=_auth(request).has_users,
        principal=principal,
        can_review=principal is not None and principal.role.allows(Role.REVIEWER),
        can_operate=principal is not None and principal.role.allows(Role.OPERATOR),
        can_admin=principal is not None and principal.role.allows(Role.ADMIN),
        node_ae=request.app.state.node.config.node.ae_title,
    )
    return templates.TemplateResponse(
        request, name, context, status_code=status_code, headers=headers
    )


Node = Annotated[NodeView, Depends(get_node)]
Session = Depends(session)


# ----------------------------------------------------------------------------------- login
#: Pre-session cookie of the login form (login CSRF): a random nonce set with the form; the
#: form's ``csrf`` field is HMAC(process secret, nonce).  SameSite=Strict keeps a cross-site
#: page from sending the cookie, so it cannot post a valid login form (and cannot lock users
#: out through the failure limiter either: a refused form does not count as a failure).
LOGIN_COOKIE = "ainode_login"


def _login_csrf(request: Request, nonce: str) -> str:
    return _auth(request).sign("login:" + nonce)


def _login_form(
    request: Request, *, status_code: int = 200, headers: dict[str, str] | None = None, **ctx: Any
) -> HTMLResponse:
    """The login page with a fresh (or the browser's current) pre-session nonce."""
    nonce = request.cookies.get(LOGIN_COOKIE) or secrets.token_urlsafe(24)
    response = page(
        request,
        "login.html",
        status_code=status_code,
        headers=headers,
        login_csrf=_login_csrf(request, nonce),
        **ctx,
    )
    response.set_cookie(
        LOGIN_COOKIE,
        nonce,
        max_age=3600,
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
        path="/console",
    )
    return response


@router.get("/login")
def login_page(request: Request, error: str | None = None) -> HTMLResponse:
    """The login form: user name and password, or a machine token as the password."""
    return _login_form(request, error=error)


def _wants_html(request: Request) -> bool:
    return "text/html" in request.headers.get("accept", "")


@router.post("/login")
def login(
    request: Request,
    user: Annotated[str, Form()] = "",
    password: Annotated[str, Form()] = "",
    token: Annotated[str, Form()] = "",
    csrf: Annotated[str, Form()] = "",
) -> Response:
    """Check the credentials; on success set the session cookie and go to the studies page.

    A user name selects a local user (argon2 password check); without one the password (or the
    ``token`` field of earlier versions) is compared with the machine tokens.  Too many failures
    from one client for one user name answer 429 (an HTML page to browsers, else problem JSON).
    """
    authenticator = _auth(request)
    if authenticator.is_open:
        return RedirectResponse("/console/studies", status_code=303)
    user = user.strip()
    nonce = request.cookies.get(LOGIN_COOKIE, "")
    if not nonce or not hmac.compare_digest(csrf, _login_csrf(request, nonce)):
        audit(request, "login.failed", outcome="failure", user=user, reason="login form not ours")
        if not _wants_html(request):
            raise HTTPException(403, "post the login form of this console (GET /console/login)")
        return _login_form(
            request, status_code=403, error="the login form was stale; please log in again"
        )
    secret = password or token
    key = f"{client_of(request)}|{user.lower()}"
    wait = authenticator.limiter.retry_after(key)
    metrics = getattr(request.app.state, "metrics", None)
    if wait > 0:
        if metrics is not None:
            metrics.login_failures.inc()
        audit(request, "login.failed", outcome="failure", user=user, reason="rate-limited")
        exc = too_many(wait)
        if not _wants_html(request):
            raise exc
        return _login_form(
            request, status_code=429, error=str(exc.detail), headers=dict(exc.headers or {})
        )
    principal = (
        authenticator.check_password(user, secret) if user else authenticator.from_token(secret)
    )
    if principal is None:
        if metrics is not None:
            metrics.login_failures.inc()
        authenticator.limiter.failed(key)
        audit(request, "login.failed", outcome="failure", user=user or "(token)")
        error = "wrong user name or password" if user else "wrong token"
        return _login_form(request, status_code=401, error=error, user=user)
    authenticator.limiter.succeeded(key)
    response = RedirectResponse("/console/studies", status_code=303)
    response.set_cookie(
        SESSION_COOKIE,
        authenticator.issue_session(principal),
        max_age=int(authenticator.session_seconds),
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
        path="/console",
    )
    audit(request, "login", actor=principal.actor, user=principal.name, role=principal.role.value)
    return response


@router.post("/logout", dependencies=[Session])
def logout(request: Request, csrf: Annotated[str, Form()]) -> Response:
    """Drop the session cookie."""
    check_csrf(request, csrf)
    audit(request, "logout")
    response = RedirectResponse("/console/login", status_code=303)
    response.delete_cookie(SESSION_COOKIE, path="/console")
    return response


# --------------------------------------------------------------------------------- studies
@router.get("", dependencies=[Session])
def home() -> Response:
    """The console starts at the studies list."""
    return RedirectResponse("/console/studies", status_code=303)


_PAGE = 50
_FILTERS = ("patient_id", "patient_name", "accession", "description", "modality", "from", "to")


def _console_query(params: Mapping[str, str]) -> tuple[StudyQuery, list[str]]:
    """The studies search of the console's form (blank fields ignored) and its problems."""
    values = {k: params.get(k, "").strip()[:64] or None for k in _FILTERS}
    problems: list[str] = []
    dates: dict[str, dt.date | None] = {}
    for key in ("from", "to"):
        raw = values.pop(key)
        try:
            dates[key] = dt.date.fromisoformat(raw) if raw else None
        except ValueError:
            problems.append(f"'{key}' must be a date (YYYY-MM-DD), not {raw!r}")
            dates[key] = None
    status = params.get("status") or None
    if status is not None and status not in STUDY_STATES + AI_STATUSES:
        problems.append(f"unknown status {status!r}")
        status = None
    sort = params.get("sort") or "received"
    if sort not in SORT_KEYS:
        problems.append(f"unknown sort {sort!r}")
        sort = "received"
    modality = values.pop("modality")
    query = StudyQuery(
        patient_id=values["patient_id"],
        patient_name=values["patient_name"],
        accession=values["accession"],
        description=values["description"],
        modality=modality.upper() if modality else None,
        date_from=dates["from"],
        date_to=dates["to"],
        status=status,
        sort=sort,
        descending=params.get("order", "desc") != "asc",
    )
    return query, problems


@router.get("/studies", dependencies=[Session])
def studies_page(request: Request, node: Node, offset: int = 0) -> HTMLResponse:
    """Studies with search, filters, server-side sort and paging, and a dashboard strip.

    Patient columns are masked unless the role is in ``console.phi_roles``; such a role may not
    search or sort by them (403 page).  A page that shows patient data is audited.
    """
    query, problems = _console_query(request.query_params)
    shown = phi_allowed(request)
    used = phi_filters(query) + ([f"sort={query.sort}"] if query.sort in PHI_FIELDS else [])
    status_code = 200
    if used and not shown:
        problems.append(f"your role may not search or sort by patient data ({', '.join(used)})")
        query, status_code = StudyQuery(), 403
    offset = max(0, offset)
    rows, total = node.index.search_studies(query, limit=_PAGE, offset=offset)
    if shown:
        audit_phi_view(
            request,
            [r["study_uid"] for r in rows],
            purpose="console studies list",
            filters=phi_filters(query),
        )
    else:
        rows = [mask(r) for r in rows]
    counts = node.jobs.counts()
    dead_deliveries = sum(c.get("dead", 0) for c in node.outbox.counts().values())
    kept = {k: v for k, v in request.query_params.items() if v and k != "offset"}
    if status_code == 403:  # a refused search is dropped, not carried into the links
        kept = {}

    def link(**changes: Any) -> str:
        merged = {**kept, **{k: str(v) for k, v in changes.items()}}
        return "?" + urlencode(merged)

    return page(
        request,
        "studies.html",
        status_code=status_code,
        studies=rows,
        total=total,
        offset=offset,
        page_size=_PAGE,
        has_more=offset + _PAGE < total,
        job_counts=counts,
        dead_deliveries=dead_deliveries,
        phi_shown=shown,
        problems=problems,
        form=kept,
        query=query,
        link=link,
        statuses=STUDY_STATES + AI_STATUSES,
        viewer_link=_viewer_link(request),
    )


def _viewer_link(request: Request) -> Callable[[str], str | None]:
    """``link(study_uid)``: the ``console.viewer_url`` template filled in (UID URL-encoded)."""
    template: str | None = request.app.state.node.config.console.viewer_url

    def link(study_uid: str) -> str | None:
        if template is None:
            return None
        return template.format(study_uid=quote(study_uid, safe=""))

    return link


def _series_explanations(routing: dict[str, Any] | None) -> list[dict[str, Any]]:
    if not routing:
        return []
    explanation = (routing.get("decisions") or {}).get("explanation") or {}
    return list(explanation.get("series", []))


def _findings(
    jobs: list[dict[str, Any]], results: list[dict[str, Any]], data_dir: Path | None = None
) -> list[dict[str, Any]]:
    """The findings of the study's succeeded jobs (``summary.detections``), each with the result
    object its feedback form targets (the job's SR, else its first object)."""
    from node.api.feedback import combined_findings, job_findings

    out: list[dict[str, Any]] = []
    for j in jobs:
        if j["state"] != "succeeded":
            continue
        objects = [r for r in results if r["job_id"] == j["job_id"]]
        if not objects:
            continue
        target = next((o for o in objects if o.get("modality") == "SR"), objects[0])
        if j["model"] == COMBINE_MODEL and data_dir is not None:  # one set, several models
            for tid, found in combined_findings(j["outputs"], data_dir).items():
                out.append(
                    {
                        "job_id": j["job_id"],
                        "model": found.model or j["model"],
                        "tracking_id": tid,
                        "tracking_uid": found.tracking_uid,
                        "type": found.finding_type,
                        "score": None,
                        "diameter_mm": None,
                        "sop_uid": target["sop_uid"],
                    }
                )
            continue
        uids = job_findings(j["job_id"], j["outputs"])
        detections = (j["outputs"].get("summary") or {}).get("detections") or []
        for det in detections:
            tid = det.get("tracking_id")
            if tid not in uids:
                continue
            out.append(
                {
                    "job_id": j["job_id"],
                    "model": j["model"],
                    "tracking_id": tid,
                    "tracking_uid": uids[tid],
                    "type": det.get("type"),
                    "score": det.get("score"),
                    "diameter_mm": det.get("diameter_mm"),
                    "sop_uid": target["sop_uid"],
                }
            )
    return out


@router.get("/studies/{study_uid}", dependencies=[Session])
def study_page(request: Request, study_uid: str, node: Node) -> HTMLResponse:
    """One study: series, why rules matched or not, jobs, results, deliveries."""
    row = node.index.study_row(study_uid)
    study = node.index.get_study(study_uid)
    if row is None or study is None:
        raise HTTPException(404, f"study {study_uid} is not known to this node")
    routing = node.jobs.routing(study_uid)
    jobs = [present_job(r.to_json()) for r in node.jobs.list_jobs(study_uid=study_uid)]
    deliveries = [
        present_delivery(d.to_json()) for d in node.outbox.list(study_uid=study_uid, limit=500)
    ]
    results = [
        {
            "job_id": j["job_id"],
            "model": j["model"],
            "number": n,
            "has_preview": o.get("sop_class_uid") in SC_CLASSES | {SEG_CLASS},
            **o,
        }
        for j in jobs
        if j["state"] == "succeeded"
        for n, o in enumerate(j["outputs"].get("objects", []))
    ]
    findings = _findings(jobs, results, node.config.node.data_dir)
    given: dict[tuple[str, str, str | None], list[dict[str, Any]]] = {}
    store = getattr(request.app.state, "feedback", None)
    for f in store.list(study_uid=study_uid, limit=1000) if store is not None else []:
        given.setdefault((f.job_id, f.sop_uid, f.finding_id), []).append(f.to_json())
    explained = _series_explanations(routing)
    is_live = not explained
    if is_live:  # not routed yet, or nothing matched: show what the active rules would do
        live = dicom_rules.explain(
            node.rules.rules, series_inputs(study), destinations=sorted(node.config.destinations)
        )
        explained = [s.to_json() for s in live.series]
    steps = lifecycle(row, routing, jobs, deliveries)
    shown = phi_allowed(request)
    if shown:
        audit_phi_view(request, [study_uid], purpose="console study page")
    return page(
        request,
        "study.html",
        study=row if shown else mask(row),
        phi_shown=shown,
        viewer_link=_viewer_link(request),
        lifecycle=steps,
        series=study.series,
        routing=routing,
        explained=explained,
        is_live=is_live,
        decisions=((routing or {}).get("decisions") or {}).get("decisions", []),
        not_applicable=((routing or {}).get("decisions") or {}).get("not_applicable", []),
        jobs=jobs,
        results=results,
        findings=findings,
        feedback=given,
        verdicts=VERDICTS,
        deliveries=deliveries,
        rejections=[r.to_json() for r in node.rejections.list(study_uid=study_uid)],
        retractable=node.rejections.retractable(study_uid),
    )


@router.get("/series/{series_uid}/thumbnail.png", dependencies=[Session])
def series_thumbnail(series_uid: str, node: Node) -> Response:
    """A small PNG of the middle image of a series (percentile-scaled, at most 160 px).

    Raises
    ------
    HTTPException
        404 when the series is unknown or holds no image that ``node.imaging`` can read.
    """
    import io

    import numpy as np
    from PIL import Image

    from node.errors import AinodeError
    from node.imaging import load_volume, percentile_scale

    instances = node.index.series_instances(series_uid)
    if not instances:
        raise HTTPException(404, f"series {series_uid} is not stored")
    middle = instances[len(instances) // 2]
    try:
        volume = load_volume([middle.path])
    except (AinodeError, ValueError, OSError) as exc:
        raise HTTPException(404, f"series {series_uid} has no readable image: {exc}") from exc
    pixels = volume.voxels[volume.voxels.shape[0] // 2]
    if pixels.ndim != 2:  # colour images: show the luminance-ish mean
        pixels = pixels.mean(axis=-1)
    grey = (percentile_scale(pixels, low=1.0, high=99.0) * 255).astype(np.uint8)
    image = Image.fromarray(grey)
    image.thumbnail((160, 160))
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return Response(
        buf.getvalue(), media_type="image/png", headers={"Cache-Control": "private, max-age=300"}
    )


@router.post("/deliveries/{delivery_id}/retry", dependencies=[Session])
def retry_delivery(
    request: Request,
    delivery_id: int,
    node: Node,
    csrf: Annotated[str, Form()],
    back: Annotated[str, Form()] = "",
) -> Response:
    """Retry one delivery, then go back to its study page (operator)."""
    need(request, Role.OPERATOR)
    check_csrf(request, csrf)
    row = node.outbox.retry(delivery_id)
    audit(
        request,
        "delivery.retry",
        study_uid=row.study_uid,
        delivery_id=delivery_id,
        destination=row.destination,
        sop_uid=row.sop_uid,
    )
    if back.startswith("/console/") and "//" not in back:  # only back into the console
        return RedirectResponse(back, status_code=303)
    return RedirectResponse(f"/console/studies/{row.study_uid}#deliveries", status_code=303)


@router.post("/jobs/{job_id}/retry", dependencies=[Session])
def retry_job(request: Request, job_id: str, node: Node, csrf: Annotated[str, Form()]) -> Response:
    """Retry one job, then go back to its study page (operator)."""
    need(request, Role.OPERATOR)
    check_csrf(request, csrf)
    node.jobs.retry(job_id)
    audit(request, "job.retry", job_id=job_id)
    study_uid = node.jobs.get(job_id).job.study_uid
    return RedirectResponse(f"/console/studies/{study_uid}#jobs", status_code=303)


# ------------------------------------------------------------------------ models, destinations
@router.get("/models", dependencies=[Session])
def models_page(request: Request, node: Node) -> HTMLResponse:
    """Model cards with held-out metrics and a demo badge."""
    return page(request, "models.html", models=model_rows(request, node))


@router.get("/destinations", dependencies=[Session])
def destinations_page(request: Request, node: Node, echo: str | None = None) -> HTMLResponse:
    """Destinations with their outbox counts and the last echo result."""
    counts = node.outbox.counts()
    rows = [
        {"name": n, "type": d.type, "outbox": counts.get(n, {})}
        for n, d in sorted(node.config.destinations.items())
    ]
    return page(
        request,
        "destinations.html",
        destinations=rows,
        echo=json.loads(echo) if echo else None,
    )


@router.post("/destinations/{name}/echo", dependencies=[Session])
def echo(request: Request, name: str, node: Node, csrf: Annotated[str, Form()]) -> HTMLResponse:
    """Test one destination and show the result (operator)."""
    from node.api.destinations import echo_destination

    need(request, Role.OPERATOR)
    check_csrf(request, csrf)
    result = echo_destination(name, request, node)
    counts = node.outbox.counts()
    rows = [
        {"name": n, "type": d.type, "outbox": counts.get(n, {})}
        for n, d in sorted(node.config.destinations.items())
    ]
    return page(request, "destinations.html", destinations=rows, echo=result)


def forbidden_page(request: Request, principal: Principal, needed: Role) -> HTMLResponse:
    """The 403 page (audited as ``access.denied``): ``principal``'s role is below ``needed``."""
    request.state.principal = principal
    audit(request, "access.denied", outcome="failure", path=request.url.path)
    return page(
        request,
        "forbidden.html",
        status_code=403,
        actor=principal.actor,
        role=principal.role.value,
        needed=needed.value,
    )


def install_console(app: Any) -> None:
    """Add the console routes and send not-logged-in visitors to the login page."""

    async def to_login(request: Request, exc: Exception) -> Response:
        return RedirectResponse("/console/login", status_code=303)

    async def forbidden(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, _Forbidden)
        return forbidden_page(request, exc.principal, exc.needed)

    from node.api import (
        console_activity,
        console_pulls,
        console_rules,
        console_workitems,
        feedback,
        results,
    )

    app.add_exception_handler(_LoginRequired, to_login)
    app.add_exception_handler(_Forbidden, forbidden)
    app.include_router(router)
    app.include_router(console_rules.router)
    app.include_router(console_activity.router)
    app.include_router(console_pulls.router)
    app.include_router(console_workitems.router)
    app.include_router(feedback.console_router)
    app.include_router(results.console_router)
