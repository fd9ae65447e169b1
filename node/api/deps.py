"""What the HTTP API needs from the running node, as structural types.

The API is a face of the node: it reads the index, hands STOW-RS parts to the spool and asks the
tracker to complete a study.  It depends on these protocols, not on ``node.app``, so the wiring
stays in one place (``node/app.py``) and the routers can be served by any object that has them.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

from fastapi import Request

from dicom_rules import RuleSet
from node.config import Config
from node.delivery.outbox import Outbox
from node.delivery.rejections import Rejections
from node.jobs.store import JobStore
from node.routing.reload import RuleHolder
from node.store.index import ReceivedStudy, StudyQuery
from node.types import Instance, Study

__all__ = ["IndexView", "NodeView", "SpoolView", "StoredView", "TrackerView", "get_node"]


class IndexView(Protocol):
    """The index queries the API uses (``node.store.Index``)."""

    def list_studies(self, *, limit: int = 100, offset: int = 0) -> list[dict[str, Any]]: ...

    def search_studies(
        self, query: StudyQuery, *, limit: int = 100, offset: int = 0
    ) -> tuple[list[dict[str, Any]], int]: ...

    def study_row(self, study_uid: str) -> dict[str, Any] | None: ...

    def prior_of(self, study_uid: str) -> str | None: ...

    def open_studies(self) -> list[tuple[str, float]]: ...
    def unrouted_studies(
        self, *, completed_before: float, limit: int = ...
    ) -> list[tuple[str, float]]: ...

    def get_study(self, study_uid: str) -> Study | None: ...

    def studies_received_raw(self, since: float, until: float) -> list[ReceivedStudy]: ...

    def events(self, study_uid: str) -> list[dict[str, Any]]: ...

    def series_instances(self, series_uid: str) -> list[Instance]: ...


class StoredView(Protocol):
    """What the spool did with one instance (``node.ingest.spool.StoreOutcome``)."""

    @property
    def instance(self) -> Instance: ...

    @property
    def status(self) -> str: ...


class SpoolView(Protocol):
    """The durable store of received bytes (``node.ingest.spool.Spool``).

    ``store`` returns once the file is fsync'd and indexed; it raises ``IngestError`` subclasses
    (carrying ``dicom_status``) for what cannot be stored.
    """

    def store(self, data: bytes, *, calling_aet: str | None, source: str) -> StoredView: ...


class TrackerView(Protocol):
    """Study assembly (``node.assembly.tracker.Tracker``)."""

    def complete(self, study_uid: str, *, background: bool = False) -> int | None: ...


class NodeView(Protocol):
    """The running node as the API sees it (``node.app.Node``).

    ``dicom_port`` / ``http_port`` are the ports actually listened on (None when not started).
    """

    dicom_port: int | None
    http_port: int | None

    @property
    def config(self) -> Config: ...

    @property
    def index(self) -> IndexView: ...

    @property
    def spool(self) -> SpoolView: ...

    @property
    def tracker(self) -> TrackerView: ...

    @property
    def jobs(self) -> JobStore: ...

    @property
    def outbox(self) -> Outbox: ...

    @property
    def rejections(self) -> Rejections: ...

    @property
    def rules(self) -> RuleHolder: ...

    def qualify(self, rules: RuleSet, study: Study, decisions: Sequence[Any]) -> dict[str, Any]:
        """Volumes and not-applicable reasons of routing ``study`` (``Node.qualify``)."""
        ...

    def reroute(self, study_uid: str) -> dict[str, Any]:
        """Route a complete study again now (``Node.reroute``)."""
        ...


def get_node(request: Request) -> NodeView:
    """FastAPI dependency: the node this app serves (set by ``create_app``)."""
    node: NodeView = request.app.state.node
    return node
