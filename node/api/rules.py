"""``/api/rules``: read, validate, dry-run and replace the routing rules (hot, atomic).

``PUT`` validates the text with the node's destinations, writes the rule file atomically
(temp file, fsync, rename: a restart keeps it) and swaps the active rules
(``RuleHolder.replace``).  Invalid text answers a 422 problem whose ``errors`` lists every
problem as ``{line, column, message, text}`` with ``text`` = ``FILE:LINE:COL: message``.
"""

from __future__ import annotations

import difflib
import hashlib
from typing import Annotated, Any

from fastapi import APIRouter, Body, Depends, HTTPException, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

import dicom_rules
from dicom_rules import RuleError, RuleSet
from node.api.auditing import audit
from node.api.deps import NodeView, get_node
from node.api.problems import PROBLEM_MEDIA_TYPE, problem_type
from node.errors import NotFoundError
from node.routing.dispatch import series_inputs
from node.routing.replay import default_workers, parse_since, replay

__all__ = ["router"]

router = APIRouter(tags=["rules"])


class RulesText(BaseModel):
    """A rule file's YAML text."""

    model_config = ConfigDict(extra="forbid")
    text: str


class DryRun(BaseModel):
    """Which stored study to route, with which rules (default: the active ones)."""

    model_config = ConfigDict(extra="forbid")
    study_uid: str
    text: str | None = None


class ReplayRequest(BaseModel):
    """Replay rule text on the stored studies of a window; the studies listed are paged."""

    model_config = ConfigDict(extra="forbid")
    text: str
    since: str = "7d"
    until: str | None = None
    limit: int = Field(default=100, ge=0, le=10_000)
    offset: int = Field(default=0, ge=0)
    changed_only: bool = True


def _sha(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _problems(exc: RuleError) -> list[dict[str, Any]]:
    return [
        {"line": p.line, "column": p.column, "message": p.message, "text": str(p)}
        for p in exc.problems
    ]


def _invalid(request: Request, exc: RuleError) -> JSONResponse:
    problems = _problems(exc)
    body = {
        "type": problem_type("invalid-rules"),
        "title": "Invalid rules",
        "status": 422,
        "detail": f"{len(problems)} problem(s) in the rules; nothing was changed",
        "instance": request.url.path,
        "errors": problems,
    }
    return JSONResponse(body, status_code=422, media_type=PROBLEM_MEDIA_TYPE)


def _parse(node: NodeView, text: str) -> RuleSet:
    holder = node.rules
    return dicom_rules.parse(
        text,
        source=str(holder.path),
        models=holder.models,
        destinations=holder.destinations,
        sources=holder.sources,
    )


@router.get("/api/rules")
def get_rules(node: Annotated[NodeView, Depends(get_node)]) -> dict[str, Any]:
    """The active rule text, its sha256, rule names and the last rejected version's errors."""
    holder = node.rules
    status = holder.status()
    return {
        "path": status.path,
        "text": holder.text(),
        "sha256": status.active_sha256,
        "rules": [r.name for r in holder.rules.rules],
        "rejected_sha256": status.rejected_sha256,
        "errors": list(status.errors),
    }


@router.post("/api/rules/validate", response_model=None)
def validate_rules(
    body: RulesText, request: Request, node: Annotated[NodeView, Depends(get_node)]
) -> dict[str, Any] | JSONResponse:
    """Check rule text without changing anything: ``{"valid": true, "rules": [...]}`` or a
    422 problem listing every error with its line and column."""
    try:
        rules = _parse(node, body.text)
    except RuleError as exc:
        return _invalid(request, exc)
    return {"valid": True, "rules": [r.name for r in rules.rules], "sha256": _sha(body.text)}


@router.put("/api/rules", response_model=None)
def put_rules(
    body: RulesText, request: Request, node: Annotated[NodeView, Depends(get_node)]
) -> dict[str, Any] | JSONResponse:
    """Validate, write atomically and activate new rules; answers the new ``GET`` view plus the
    unified diff against the previous text.  Invalid: 422 problem, nothing written.

    Raises
    ------
    HTTPException
        409 when the node runs the built-in default rules (no ``rules:`` file to write).
    """
    if node.config.rules is None:
        raise HTTPException(
            409,
            "this node runs the built-in default rules; set 'rules:' in the config to a "
            "writable rule file to edit rules over HTTP",
        )
    holder = node.rules
    old = holder.text()
    try:
        holder.replace(body.text)
    except RuleError as exc:
        audit(
            request,
            "rules.rejected",
            sha256=_sha(body.text),
            problems=len(exc.problems),
        )
        return _invalid(request, exc)
    diff = "".join(
        difflib.unified_diff(
            old.splitlines(keepends=True),
            body.text.splitlines(keepends=True),
            fromfile=f"a/{holder.path.name}",
            tofile=f"b/{holder.path.name}",
        )
    )
    audit(
        request,
        "rules.changed",
        old_sha256=_sha(old),
        sha256=holder.sha256,
        diff_sha256=_sha(diff),
    )
    out = get_rules(node)
    out["previous_sha256"] = _sha(old)
    out["diff"] = diff
    return out


@router.post("/api/rules/dry-run", response_model=None)
def dry_run(
    body: Annotated[DryRun, Body()],
    request: Request,
    node: Annotated[NodeView, Depends(get_node)],
) -> dict[str, Any] | JSONResponse:
    """Route a stored study with the submitted (or active) rules and return the explanation
    with the volumes and not-applicable reasons (the JSON of ``ainode rules explain``); nothing
    is queued.

    Raises
    ------
    NotFoundError
        The study is not stored (404 problem).
    """
    study = node.index.get_study(body.study_uid)
    if study is None:
        raise NotFoundError(f"study {body.study_uid} is not known to this node")
    if body.text is None:
        rules, text = node.rules.rules, node.rules.text()
    else:
        try:
            rules, text = _parse(node, body.text), body.text
        except RuleError as exc:
            return _invalid(request, exc)
    explanation = dicom_rules.explain(
        rules, series_inputs(study), destinations=sorted(node.config.destinations)
    )
    return {
        "study_uid": study.study_uid,
        "rules_sha256": _sha(text),
        "active": body.text is None,
        **explanation.to_json(),
        **node.qualify(rules, study, explanation.decisions),
    }


def _bad_window(request: Request, field: str, message: str) -> JSONResponse:
    body = {
        "type": problem_type("invalid-window"),
        "title": "Invalid window",
        "status": 422,
        "detail": message,
        "instance": request.url.path,
        "errors": [{"field": field, "message": message}],
    }
    return JSONResponse(body, status_code=422, media_type=PROBLEM_MEDIA_TYPE)


@router.post("/api/rules/replay", response_model=None)
def replay_rules(
    body: ReplayRequest, request: Request, node: Annotated[NodeView, Depends(get_node)]
) -> dict[str, Any] | JSONResponse:
    """What the submitted rules would have done to the studies stored in the window.

    Per study (UID and date received only): the current routing (the stored routing record,
    else the active rules) beside the new one and their diff; totals and per-day model runs
    over the whole window.  Stored headers only; nothing is queued.  Invalid rules: the 422
    problem of ``validate``; a bad ``since``/``until``: a 422 ``invalid-window`` problem.
    """
    try:
        rules = _parse(node, body.text)
    except RuleError as exc:
        return _invalid(request, exc)
    try:
        since = parse_since(body.since)
    except ValueError as exc:
        return _bad_window(request, "since", str(exc))
    try:
        until = parse_since(body.until) if body.until is not None else None
    except ValueError as exc:
        return _bad_window(request, "until", str(exc).replace("since", "until", 1))
    result = replay(
        node.index,
        rules,
        since=since,
        until=until,
        current_rules=node.rules.rules,
        stored_many=node.jobs.routing_decisions_many,
        destinations=sorted(node.config.destinations),
        workers=default_workers(),
    )
    audit(
        request,
        "rules.replayed",
        via="api",
        rules_sha256=_sha(body.text),
        active_sha256=node.rules.sha256,
        **result.audit_detail(),
    )
    return {
        "rules_sha256": _sha(body.text),
        "active_sha256": node.rules.sha256,
        **result.to_json(limit=body.limit, offset=body.offset, changed_only=body.changed_only),
    }
