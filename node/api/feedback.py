"""Radiologist feedback: ``POST /api/feedback``, ``GET /api/feedback`` and the console form.

A reader accepts, rejects or modifies one result object of a job (its SOP Instance UID) or one
finding in it (the Tracking Identifier, or its Tracking UID, of a detection in the job's
``prediction.json`` summary), with an optional comment and, for ``modify``, what was changed.
Writing needs the ``reviewer`` role (``node.api.auth``); the gate checks it before the body is
read.  Each verdict is stored in the ``feedback`` table (``node.store.feedback``), audited as
``feedback.recorded`` (identifiers and the verdict; never the comment) and counted in
``ainode_feedback_total{model,verdict}`` and the model inventory.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import pydicom
from fastapi import APIRouter, Depends, Form, HTTPException, Query, Request
from fastapi.responses import RedirectResponse, Response
from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError

from node.api.auditing import actor_of, audit
from node.api.auth import Role
from node.api.console import Session, check_csrf, need
from node.api.deps import NodeView, get_node
from node.api.jobs import iso
from node.errors import NotFoundError
from node.jobs.store import COMBINE_MODEL, JobStore
from node.store.feedback import COMMENT_MAX, FeedbackRecord, FeedbackStore, Verdict

__all__ = [
    "FeedbackIn",
    "SrFinding",
    "combined_findings",
    "console_router",
    "job_findings",
    "record_feedback",
    "router",
    "sr_findings",
]

log = logging.getLogger(__name__)

router = APIRouter(tags=["feedback"])
console_router = APIRouter(prefix="/console", include_in_schema=False)

_UID = r"^[0-9]+(\.[0-9]+)*$"


class FeedbackIn(BaseModel):
    """The body of ``POST /api/feedback``."""

    model_config = ConfigDict(extra="forbid")

    job_id: str = Field(min_length=1, max_length=128, description="the job that made the result")
    sop_uid: str = Field(
        max_length=64, pattern=_UID, description="SOP Instance UID of the result object"
    )
    finding: str | None = Field(
        default=None,
        min_length=1,
        max_length=128,
        description="a finding of that job: its Tracking Identifier or Tracking UID",
    )
    verdict: Verdict
    comment: str | None = Field(default=None, max_length=COMMENT_MAX)
    modified: str | None = Field(
        default=None, max_length=COMMENT_MAX, description="what was changed (verdict modify)"
    )

    @field_validator("modified")
    @classmethod
    def _only_when_modified(cls, value: str | None, info: ValidationInfo) -> str | None:
        if value is not None and info.data.get("verdict") != "modify":
            raise ValueError("only allowed with verdict 'modify'")
        return value


def feedback_store(request: Request) -> FeedbackStore:
    """The app's feedback store (``create_app`` opens it on the node's index file)."""
    store: FeedbackStore = request.app.state.feedback
    return store


def present_feedback(record: FeedbackRecord) -> dict[str, Any]:
    """A verdict's JSON with an ISO ``created_at``."""
    return {**record.to_json(), "created_at": iso(record.created_at)}


def job_findings(job_id: str, outputs: Mapping[str, Any]) -> dict[str, str | None]:
    """``{tracking id: tracking UID}`` of the findings a job recorded (``summary.detections``).

    The Tracking UID is the one the SEG and SR carry (``node.results.identity``: job id, model
    version, ``tracking/<id>``); None when the summary names no model version.
    """
    # imported here: the node.results package loads highdicom and scipy, which the serving
    # process must not carry (tests/ingest/test_footprint.py)
    from node.results.uids import result_uid

    summary = outputs.get("summary") or {}
    version = (summary.get("model") or {}).get("version")
    out: dict[str, str | None] = {}
    for det in summary.get("detections") or []:
        tid = det.get("tracking_id")
        carried = det.get("tracking_uid")  # carried forward from a prior study (issue 21)
        if isinstance(tid, str) and tid and isinstance(carried, str) and carried:
            out[tid] = carried
        elif isinstance(tid, str) and tid:
            out[tid] = (
                None
                if not version
                else result_uid(
                    job_id=job_id, model_version=str(version), index=-1, role=f"tracking/{tid}"
                )
            )
    return out


@dataclass(frozen=True, slots=True)
class SrFinding:
    """A finding of a (combined) TID 1500 SR: its tracking UID and the algorithm that made it
    (TID 4019 in its measurement group), and its finding type's meaning."""

    tracking_uid: str | None
    model: str | None
    version: str | None
    finding_type: str | None


def _code_value(item: Dataset, seq: str = "ConceptNameCodeSequence") -> str | None:
    codes = item.get(seq)
    return str(codes[0].CodeValue) if codes else None


def sr_findings(path: Path) -> dict[str, SrFinding]:
    """``{tracking id: SrFinding}`` of the measurement groups (DCM 125007) of an SR file; the
    first group of a tracking id names its finder.  A file that cannot be read gives ``{}``."""
    try:
        sr = pydicom.dcmread(path, stop_before_pixels=True)
    except (OSError, InvalidDicomError, ValueError):
        return {}
    out: dict[str, SrFinding] = {}

    def walk(items: Any) -> None:
        for item in items or ():
            if item.get("ValueType") == "CONTAINER" and _code_value(item) == "125007":
                values: dict[str, str] = {}
                ftype = None
                for child in item.get("ContentSequence") or ():
                    code = _code_value(child)
                    if child.get("ValueType") == "TEXT" and code:
                        values.setdefault(code, str(child.TextValue))
                    elif child.get("ValueType") == "UIDREF" and code:
                        values.setdefault(code, str(child.UID))
                    elif child.get("ValueType") == "CODE" and code == "121071":  # Finding
                        ftype = str(child.ConceptCodeSequence[0].CodeMeaning)
                tid = values.get("112039")  # Tracking Identifier
                if tid and tid not in out:
                    out[tid] = SrFinding(
                        tracking_uid=values.get("112040"),  # Tracking Unique Identifier
                        model=values.get("111001"),  # Algorithm Name
                        version=values.get("111003"),  # Algorithm Version
                        finding_type=ftype,
                    )
            walk(item.get("ContentSequence"))

    walk(sr.get("ContentSequence"))
    return out


def combined_findings(outputs: Mapping[str, Any], data_dir: Path) -> dict[str, SrFinding]:
    """The findings of a combined result set (a ``_combine`` job): read from its SR object(s),
    each naming the model that found it."""
    out: dict[str, SrFinding] = {}
    for obj in outputs.get("objects") or []:
        if obj.get("modality") == "SR" and obj.get("path"):
            for tid, found in sr_findings(data_dir / str(obj["path"])).items():
                out.setdefault(tid, found)
    return out


def record_feedback(
    store: FeedbackStore,
    jobs: JobStore,
    body: FeedbackIn,
    *,
    actor: str,
    data_dir: Path | None = None,
) -> FeedbackRecord:
    """Check that the target belongs to the job, then store the verdict.

    Raises
    ------
    NotFoundError
        The job is unknown, has no result object ``sop_uid``, or no finding ``finding``.
    """
    record = jobs.get(body.job_id)  # NotFoundError: 404
    outputs = record.outputs
    objects = [o for o in outputs.get("objects") or [] if o.get("sop_uid") == body.sop_uid]
    if not objects:
        raise NotFoundError(f"job {body.job_id} has no result object {body.sop_uid}")
    finding_id: str | None = None
    finding_uid: str | None = None
    summary = outputs.get("summary") or {}
    model = record.job.model
    model_version = (summary.get("model") or {}).get("version")
    device_uid = summary.get("device_uid")
    if body.finding is not None and model == COMBINE_MODEL and data_dir is not None:
        # one result set of several models: the finding's own model, from its SR group
        combined = combined_findings(outputs, data_dir)
        for tid, found in combined.items():
            if body.finding in (tid, found.tracking_uid):
                finding_id, finding_uid = tid, found.tracking_uid
                model = found.model or model
                model_version, device_uid = found.version, None
                break
        else:
            raise NotFoundError(
                f"job {body.job_id} has no finding {body.finding!r} "
                f"(its findings: {', '.join(sorted(combined)) or 'none'})"
            )
    elif body.finding is not None:
        findings = job_findings(body.job_id, outputs)
        for tid, uid in findings.items():
            if body.finding in (tid, uid):
                finding_id, finding_uid = tid, uid
                break
        else:
            raise NotFoundError(
                f"job {body.job_id} has no finding {body.finding!r} "
                f"(its findings: {', '.join(sorted(findings)) or 'none'})"
            )
    stored = store.add(
        actor=actor,
        study_uid=record.job.study_uid,
        job_id=body.job_id,
        model=model,
        model_version=model_version,
        device_uid=device_uid,
        sop_uid=body.sop_uid,
        finding_id=finding_id,
        finding_uid=finding_uid,
        verdict=body.verdict,
        comment=body.comment,
        modified=body.modified,
    )
    log.info(
        "feedback.recorded",
        extra={"feedback_id": stored.id, "job_id": stored.job_id, "verdict": stored.verdict},
    )
    return stored


def _audit(request: Request, record: FeedbackRecord) -> None:
    audit(
        request,
        "feedback.recorded",
        study_uid=record.study_uid,
        feedback_id=record.id,
        job_id=record.job_id,
        sop_uid=record.sop_uid,
        finding_id=record.finding_id,
        finding_uid=record.finding_uid,
        model=record.model,
        model_version=record.model_version,
        verdict=record.verdict,
        has_comment=record.comment is not None,
    )


Node = Annotated[NodeView, Depends(get_node)]
Store = Annotated[FeedbackStore, Depends(feedback_store)]


@router.post("/api/feedback", status_code=201)
def post_feedback(request: Request, body: FeedbackIn, node: Node, store: Store) -> dict[str, Any]:
    """Record a verdict (accept / reject / modify) on a result object or one of its findings.

    Needs the ``reviewer`` role.  ``404`` when the job, the object or the finding is unknown;
    ``422`` names the offending field.  Answers the stored verdict with its ``id``.
    """
    record = record_feedback(
        store, node.jobs, body, actor=actor_of(request), data_dir=node.config.node.data_dir
    )
    _audit(request, record)
    return present_feedback(record)


@router.get("/api/feedback")
def list_feedback(
    store: Store,
    study_uid: Annotated[str | None, Query()] = None,
    job_id: Annotated[str | None, Query()] = None,
    model: Annotated[str | None, Query()] = None,
    verdict: Annotated[Verdict | None, Query()] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 200,
) -> dict[str, Any]:
    """Verdicts, newest first, filtered by study, job, model and verdict."""
    rows = store.list(study_uid=study_uid, job_id=job_id, model=model, verdict=verdict, limit=limit)
    return {"feedback": [present_feedback(r) for r in rows]}


@console_router.post("/jobs/{job_id}/feedback", dependencies=[Session])
def console_feedback(
    request: Request,
    job_id: str,
    node: Node,
    store: Store,
    csrf: Annotated[str, Form()],
    sop_uid: Annotated[str, Form()],
    verdict: Annotated[str, Form()],
    finding: Annotated[str, Form()] = "",
    comment: Annotated[str, Form()] = "",
    modified: Annotated[str, Form()] = "",
) -> Response:
    """The study page's feedback form (reviewer): store the verdict, back to the study page."""
    from pydantic import ValidationError

    need(request, Role.REVIEWER)
    check_csrf(request, csrf)
    try:
        body = FeedbackIn(
            job_id=job_id,
            sop_uid=sop_uid,
            finding=finding.strip() or None,
            verdict=verdict,  # type: ignore[arg-type]  # validated here
            comment=comment.strip() or None,
            modified=modified.strip() or None,
        )
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors()
        )
        raise HTTPException(422, f"feedback not recorded: {problems}") from exc
    record = record_feedback(
        store, node.jobs, body, actor=actor_of(request), data_dir=node.config.node.data_dir
    )
    _audit(request, record)
    anchor = "findings" if record.finding_id is not None else "results"
    return RedirectResponse(f"/console/studies/{record.study_uid}#{anchor}", status_code=303)
