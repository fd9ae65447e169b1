"""The HTTP face of the node: ``create_app(node)`` builds the FastAPI application.

One router per resource (``health``, ``studies``, ``stow``); one exception handler
(``problems``) turns every error into RFC 9457 problem JSON.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

from fastapi import Depends, FastAPI
from fastapi.responses import RedirectResponse

from node import __version__
from node.api import (
    audit,
    deliveries,
    destinations,
    dicomweb,
    feedback,
    health,
    jobs,
    metrics,
    models,
    pulls,
    remote_jobs,
    results,
    rules,
    stow,
    studies,
    workitem_events,
    workitems,
)
from node.api.auth import Authenticator, authorize
from node.api.console import install_console
from node.api.deps import NodeView
from node.api.gate import AuthGate
from node.api.problems import PROBLEM_RESPONSES, install_problem_handler
from node.audit import AuditLog, JobEventFollower, SupersededAuditor
from node.jobs.queries import JobEventReader
from node.store.feedback import FeedbackStore
from node.store.ups import text_value
from node.store.workitems import WorkitemStore

__all__ = ["create_app"]


def create_app(node: NodeView) -> FastAPI:
    """Build the API application serving ``node``.

    Parameters
    ----------
    node:
        The running node (``node.app.Node``): its ``config``, ``index``, ``spool`` and
        ``tracker`` are used by the routers.

    Returns
    -------
    FastAPI
        Serve it with uvicorn on ``config.node.host:config.node.http_port``.

    Raises
    ------
    ConfigError
        A configured token (``auth.token_file``, ``auth.tokens``) cannot be read.
    """
    authenticator = Authenticator(node.config.auth)
    data_dir = node.config.node.data_dir
    audit_log = AuditLog(data_dir)
    follower = JobEventFollower(audit_log, JobEventReader(data_dir / "index.sqlite"))

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        follower.start()
        app.state.loop = asyncio.get_running_loop()  # events of rule-scheduled workitems
        yield
        follower.stop()
        audit_log.close()

    app = FastAPI(
        lifespan=lifespan,
        title="ainode",
        version=__version__,
        summary="AI node for radiology: DICOM in, AI results out",
        docs_url="/api/docs",
        redoc_url=None,
        openapi_url="/api/openapi.json",
        responses=PROBLEM_RESPONSES,
    )
    app.state.node = node
    app.state.auth = authenticator
    app.state.audit = audit_log
    app.state.feedback = FeedbackStore(data_dir / "index.sqlite")
    worklist = getattr(node, "worklist", None)
    app.state.workitems = (
        worklist.store if worklist is not None else WorkitemStore(data_dir / "index.sqlite")
    )
    app.state.workitem_events = workitem_events.EventHub()
    if worklist is not None:
        worklist.add_listener(_scheduled_listener(app, audit_log))
    ups_dimse = getattr(node, "ups_dimse", None)
    if ups_dimse is not None:
        ups_dimse.add_listener(_dimse_listener(app, audit_log))
    app.state.metrics = metrics.NodeMetrics(node)
    _audit_node_events(node, audit_log)
    app.add_middleware(AuthGate)  # inside the problem middleware: its refusals are problems too
    install_problem_handler(app)
    protected = [Depends(authorize)]
    app.include_router(health.router)
    app.include_router(metrics.router)
    app.include_router(workitem_events.router)  # authenticates in the handshake itself
    for router in (
        studies.router,
        jobs.router,
        deliveries.router,
        rules.router,
        models.router,
        destinations.router,
        pulls.router,
        audit.router,
        feedback.router,
        results.router,
        stow.router,
        dicomweb.router,
        remote_jobs.router,
        workitems.router,
    ):
        app.include_router(router, dependencies=protected)
    install_console(app)

    @app.get("/docs", include_in_schema=False)
    def docs_redirect() -> RedirectResponse:
        """``/docs`` is where FastAPI users look for the OpenAPI page."""
        return RedirectResponse("/api/docs", status_code=307)

    return app


def _scheduled_listener(app: FastAPI, audit_log: AuditLog) -> Callable[[Any, str], None]:
    """Audit a workitem a routing rule scheduled (actor ``node``) and report it on the event
    channel (routing runs outside the event loop: the report is handed to it)."""
    hub: workitem_events.EventHub = app.state.workitem_events

    def scheduled(item: Any, rule: str) -> None:
        audit_log.record(
            "workitem.created",
            study_uid=text_value(item.dataset, "StudyInstanceUID"),
            workitem_uid=item.uid,
            rule=rule,
        )
        loop: asyncio.AbstractEventLoop | None = getattr(app.state, "loop", None)
        if loop is None or not hub.connected():
            return
        aets = hub.recipients(app.state.workitems, item)
        if aets:
            message = workitem_events.event_message(item, workitem_events.STATE_REPORT)
            loop.call_soon_threadsafe(hub.send, aets, message)

    return scheduled


def _dimse_listener(app: FastAPI, audit_log: AuditLog) -> Callable[[Any], None]:
    """Audit a workitem change made over UPS DIMSE (actor ``dicom:CALLING-AET``) and report it
    on the UPS-RS event channels (the SCP's thread hands the report to the event loop)."""
    hub: workitem_events.EventHub = app.state.workitem_events

    def changed(change: Any) -> None:
        item = change.item
        detail = dict(change.detail)
        study_uid = detail.pop("study_uid", None)
        if item is not None:
            study_uid = text_value(item.dataset, "StudyInstanceUID")
        if change.workitem_uid is not None:
            detail["workitem_uid"] = change.workitem_uid
        audit_log.record(
            change.event,
            actor=f"dicom:{change.calling_aet}",
            outcome=change.outcome,
            study_uid=study_uid,
            client=change.peer,
            **detail,
        )
        loop: asyncio.AbstractEventLoop | None = getattr(app.state, "loop", None)
        if item is None or change.event_type is None or loop is None or not hub.connected():
            return
        aets = {change.only_to} if change.only_to else hub.recipients(app.state.workitems, item)
        aets &= hub.connected()
        if aets:
            message = workitem_events.event_message(item, change.event_type, reason=change.reason)
            loop.call_soon_threadsafe(hub.send, aets, message)

    return changed


def _audit_node_events(node: NodeView, audit_log: AuditLog) -> None:
    """Audit the node's own events through its listener hooks (when it offers them).

    One ``study.received`` per study and process (its first stored instance; the per-instance
    trail is the index's ``events`` table), one ``study.completed`` per completion, one
    ``association.accepted`` / ``association.refused`` per association request, and per batch
    and study ``delivery.delivered`` / ``delivery.dead`` (job transitions: ``JobEventFollower``).
    """
    seen: set[str] = set()

    def stored(outcome: Any) -> None:
        inst = outcome.instance
        if inst.study_uid in seen or outcome.status == "duplicate":
            return
        seen.add(inst.study_uid)
        audit_log.record(
            "study.received",
            study_uid=inst.study_uid,
            calling_aet=inst.calling_aet,
            source="dimse" if inst.calling_aet else "stow",
        )

    def completed(study: Any) -> None:
        seen.discard(study.study_uid)
        audit_log.record(
            "study.completed",
            study_uid=study.study_uid,
            generation=study.generation,
            series=len(study.series),
        )

    def association(outcome: str, facts: dict[str, Any]) -> None:
        audit_log.record(
            "association." + outcome,
            outcome="success" if outcome == "accepted" else "failure",
            **facts,
        )

    def deliveries(destination: str, delivered: list[Any], dead: list[Any]) -> None:
        for event, rows in (("delivery.delivered", delivered), ("delivery.dead", dead)):
            by_study: dict[str, list[Any]] = {}
            for row in rows:
                by_study.setdefault(row.study_uid, []).append(row)
            for study_uid, group in by_study.items():
                audit_log.record(
                    event,
                    outcome="success" if event == "delivery.delivered" else "failure",
                    study_uid=study_uid,
                    destination=destination,
                    delivery_ids=[r.id for r in group],
                    sop_uids=[r.sop_uid for r in group],
                    job_ids=sorted({r.job_id for r in group}),
                )

    def workitems_removed(uids: list[str]) -> None:
        for uid in uids:
            audit_log.record("workitem.deleted", workitem_uid=uid, reason="retention")

    add_removal = getattr(node, "add_workitem_removal_listener", None)
    if add_removal is not None:
        add_removal(workitems_removed)
    add_association = getattr(node, "add_association_listener", None)
    if add_association is not None:
        add_association(association)
    add_delivery = getattr(node.outbox, "add_listener", None)
    if add_delivery is not None:
        add_delivery(deliveries)
    add_stored = getattr(node.spool, "add_listener", None)
    if add_stored is not None:
        add_stored(stored)
    add_completed = getattr(node, "add_study_listener", None)
    if add_completed is not None:
        add_completed(completed)

    auditor = SupersededAuditor(audit_log)

    def superseded(rejection: Any) -> None:
        # retractions are audited where they are asked for (API, console, CLI), with the actor
        if rejection.kind.value != "superseded":
            return
        auditor.record(rejection)

    rejections = getattr(node, "rejections", None)
    if rejections is not None:
        rejections.add_listener(superseded)
        # what a kill -9 between a rejection and its record left unrecorded, oldest first
        found = rejections.list(kind="superseded", limit=1_000_000)
        auditor.catch_up(reversed(found))
