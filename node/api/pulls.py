"""``POST /api/pull`` (start a pull in the background) and ``GET /api/pulls[/{id}]`` (its status).

The body names a configured source and either a Study Instance UID or a query (patient ID, study
date range, modality).  The answer is ``202 Accepted`` with the pull's record and a ``Location``
header; the pull runs on the node (``node.ingest.pulls``), through the same ingest path as pushed
instances, and each study it brings in is completed (routed) when it ends.
"""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any, Protocol

from fastapi import APIRouter, Depends, Request, Response
from pydantic import BaseModel, ConfigDict, Field, model_validator

from node.api.auditing import audit
from node.api.jobs import iso
from node.errors import NotFoundError
from node.ingest.pull import PullQuery
from node.ingest.pulls import PullRecord

__all__ = ["PullRequest", "router"]

router = APIRouter(tags=["pulls"])


class PullRequest(BaseModel):
    """The body of ``POST /api/pull``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    source: str = Field(min_length=1, description="a name under 'sources' in the node's config")
    study_uid: str | None = Field(default=None, max_length=64, pattern=r"^[0-9.]+$")
    patient_id: str | None = Field(default=None, min_length=1, max_length=64)
    date_from: dt.date | None = None
    date_to: dt.date | None = None
    modality: str | None = Field(default=None, min_length=1, max_length=16)

    @model_validator(mode="after")
    def _one_way(self) -> PullRequest:
        is_query = any(
            v is not None for v in (self.patient_id, self.date_from, self.date_to, self.modality)
        )
        if self.study_uid is not None and is_query:
            raise ValueError("give study_uid or a query (patient_id, dates, modality), not both")
        if self.study_uid is None and not (self.patient_id or self.date_from or self.date_to):
            raise ValueError("give study_uid, or patient_id and/or date_from/date_to")
        if self.date_from and self.date_to and self.date_from > self.date_to:
            raise ValueError("date_from is after date_to")
        return self

    def query(self) -> PullQuery:
        """The pull query this body asks for."""
        return PullQuery(
            study_uid=self.study_uid,
            patient_id=self.patient_id,
            date_from=self.date_from,
            date_to=self.date_to,
            modality=self.modality,
        )


class _Pulls(Protocol):
    def submit(self, source: str, query: PullQuery) -> PullRecord: ...

    def get(self, pull_id: str) -> PullRecord: ...

    def records(self) -> list[PullRecord]: ...


def get_pulls(request: Request) -> _Pulls:
    """FastAPI dependency: the node's pull runner.

    Raises
    ------
    NotFoundError
        The node serving this app runs no pulls.
    """
    pulls: _Pulls | None = getattr(request.app.state.node, "pulls", None)
    if pulls is None:
        raise NotFoundError("this node does not run pulls")
    return pulls


@router.post("/api/pull", status_code=202)
def start_pull(
    body: PullRequest,
    request: Request,
    response: Response,
    pulls: Annotated[_Pulls, Depends(get_pulls)],
) -> dict[str, Any]:
    """Start pulling from a configured source; poll ``Location`` for progress.

    Raises
    ------
    NotFoundError
        ``source`` is not configured (404 problem).
    """
    record = pulls.submit(body.source, body.query())
    response.headers["Location"] = f"/api/pulls/{record.id}"
    audit(
        request,
        "pull.requested",
        study_uid=body.study_uid,
        pull_id=record.id,
        source=body.source,
    )
    return _present(record)


@router.get("/api/pulls")
def list_pulls(pulls: Annotated[_Pulls, Depends(get_pulls)]) -> dict[str, Any]:
    """The pulls this node ran since it started, newest first."""
    return {"pulls": [_present(r) for r in pulls.records()]}


@router.get("/api/pulls/{pull_id}")
def get_pull(pull_id: str, pulls: Annotated[_Pulls, Depends(get_pulls)]) -> dict[str, Any]:
    """One pull's state, progress and outcome.

    Raises
    ------
    NotFoundError
        No such pull (404 problem).
    """
    return _present(pulls.get(pull_id))


def _present(record: PullRecord) -> dict[str, Any]:
    """The record with ISO 8601 times."""
    out = record.to_json()
    for key in ("created_at", "started_at", "finished_at"):
        out[key] = iso(out[key])
    return out
