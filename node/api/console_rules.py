"""The console's rule editor: ``/console/rules``.

Edit the YAML with line-numbered errors shown inline, validate, dry-run against a stored study
(nothing is queued), and save (``admin``; hot reload through the ``RuleHolder``) with a diff of
what changed and who changed it (the last changes come from the audit trail).
"""

from __future__ import annotations

import difflib
import hashlib
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Form, Request
from fastapi.responses import HTMLResponse

import dicom_rules
from dicom_rules import RuleError
from node.api.auditing import audit
from node.api.auth import Role
from node.api.console import Session, check_csrf, need, page
from node.api.deps import NodeView, get_node
from node.routing.dispatch import series_inputs
from node.routing.replay import default_workers, parse_since, replay

__all__ = ["router"]

router = APIRouter(prefix="/console", include_in_schema=False)

Node = Annotated[NodeView, Depends(get_node)]


def _annotated_lines(text: str, problems: list[dicom_rules.Problem]) -> list[dict[str, Any]]:
    by_line: dict[int, list[str]] = {}
    for p in problems:
        by_line.setdefault(p.line, []).append(f"column {p.column}: {p.message}")
    return [
        {"number": n, "text": line, "errors": by_line.pop(n, [])}
        for n, line in enumerate(text.splitlines() or [""], start=1)
    ] + [{"number": n, "text": "", "errors": errs} for n, errs in sorted(by_line.items())]


@router.get("/rules", dependencies=[Session])
def rules_page(request: Request, node: Node) -> HTMLResponse:
    """The rule editor with the active text."""
    return _rules_view(request, node, text=node.rules.text())


def _rules_view(
    request: Request,
    node: NodeView,
    *,
    text: str,
    problems: list[dicom_rules.Problem] | None = None,
    message: str | None = None,
    dry_run: dict[str, Any] | None = None,
    diff: str | None = None,
    study_uid: str | None = None,
    replay_result: dict[str, Any] | None = None,
    since: str = "7d",
) -> HTMLResponse:
    status = node.rules.status()
    recent = [r.to_json() for r in request.app.state.audit.list(event="rules.changed", limit=5)]
    return page(
        request,
        "rules.html",
        text=text,
        problems=problems or [],
        lines=_annotated_lines(text, problems or []),
        message=message,
        dry_run=dry_run,
        diff=diff,
        status=status,
        studies=node.index.list_studies(limit=50),
        study_uid=study_uid,
        changes=recent,
        is_editable=node.config.rules is not None,
        replay=replay_result,
        since=since,
        replay_listed=_REPLAY_LISTED,
    )


#: How many changed studies the console lists (the totals and per-day rows cover all of them).
_REPLAY_LISTED = 200


@router.post("/rules/replay", dependencies=[Session])
def rules_replay(
    request: Request,
    node: Node,
    csrf: Annotated[str, Form()],
    text: Annotated[str, Form()],
    since: Annotated[str, Form()] = "7d",
) -> HTMLResponse:
    """Replay the edited text on the stored studies of the last ``since`` (operator): the diff
    per changed study and the model runs per day; nothing is queued or saved."""
    check_csrf(request, csrf)
    text = text.replace("\r\n", "\n")
    holder = node.rules
    try:
        rules = dicom_rules.parse(
            text,
            source=str(holder.path),
            models=holder.models,
            destinations=holder.destinations,
            sources=holder.sources,
        )
    except RuleError as exc:
        return _rules_view(
            request,
            node,
            text=text,
            problems=list(exc.problems),
            message=f"{len(exc.problems)} problem(s); nothing was replayed",
            since=since,
        )
    try:
        start = parse_since(since)
    except ValueError as exc:
        return _rules_view(request, node, text=text, message=str(exc), since=since)
    replayed = replay(
        node.index,
        rules,
        since=start,
        current_rules=holder.rules,
        stored_many=node.jobs.routing_decisions_many,
        destinations=sorted(node.config.destinations),
        workers=default_workers(),
    )
    audit(
        request,
        "rules.replayed",
        via="console",
        rules_sha256=hashlib.sha256(text.encode("utf-8")).hexdigest(),
        active_sha256=holder.sha256,
        **replayed.audit_detail(),
    )
    result = replayed.to_json(limit=_REPLAY_LISTED, changed_only=True)
    t = result["totals"]
    return _rules_view(
        request,
        node,
        text=text,
        replay_result=result,
        since=since,
        message=(
            f"replayed on {t['studies']} stored studies since {result['since']}: "
            f"{t['changed']} would change, {t['extra_runs']:+d} model runs; nothing was queued"
        ),
    )


@router.post("/rules", dependencies=[Session])
def rules_action(
    request: Request,
    node: Node,
    csrf: Annotated[str, Form()],
    text: Annotated[str, Form()],
    action: Annotated[str, Form()],
    study_uid: Annotated[str, Form()] = "",
) -> HTMLResponse:
    """``action`` = validate | dry-run | save (admin); the page shows the outcome inline."""
    if action == "save":
        need(request, Role.ADMIN)
    check_csrf(request, csrf)
    text = text.replace("\r\n", "\n")
    holder = node.rules
    try:
        rules = dicom_rules.parse(
            text,
            source=str(holder.path),
            models=holder.models,
            destinations=holder.destinations,
            sources=holder.sources,
        )
    except RuleError as exc:
        if action == "save":
            audit(
                request,
                "rules.rejected",
                sha256=hashlib.sha256(text.encode()).hexdigest(),
                problems=len(exc.problems),
            )
        return _rules_view(
            request,
            node,
            text=text,
            problems=list(exc.problems),
            message=f"{len(exc.problems)} problem(s); nothing was saved",
            study_uid=study_uid or None,
        )
    if action == "dry-run":
        study = node.index.get_study(study_uid) if study_uid else None
        if study is None:
            return _rules_view(request, node, text=text, message="choose a stored study first")
        explanation = dicom_rules.explain(
            rules, series_inputs(study), destinations=sorted(node.config.destinations)
        )
        return _rules_view(
            request,
            node,
            text=text,
            dry_run={
                **explanation.to_json(),
                **node.qualify(rules, study, explanation.decisions),
            },
            message=f"dry run on study {study_uid}: nothing was queued",
            study_uid=study_uid,
        )
    if action == "save":
        if node.config.rules is None:
            return _rules_view(
                request, node, text=text, message="built-in default rules cannot be edited"
            )
        old = holder.text()
        holder.replace(text)
        diff = "".join(
            difflib.unified_diff(
                old.splitlines(keepends=True),
                text.splitlines(keepends=True),
                fromfile="before",
                tofile="after",
            )
        )
        audit(
            request,
            "rules.changed",
            old_sha256=hashlib.sha256(old.encode()).hexdigest(),
            sha256=holder.sha256,
            diff_sha256=hashlib.sha256(diff.encode()).hexdigest(),
        )
        return _rules_view(
            request,
            node,
            text=text,
            diff=diff or "(no change)",
            message=f"saved and active: {len(rules.rules)} rule(s)",
        )
    return _rules_view(
        request, node, text=text, message=f"valid: {len(rules.rules)} rule(s)", study_uid=study_uid
    )
