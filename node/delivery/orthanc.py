"""Orthanc destination: REST upload (``POST /instances``) through orthanc-api-client.

After each upload the configured labels are attached to the study (Orthanc >= 1.12; an older
Orthanc answers 404/400 and the label step is skipped with one log line, the upload still counts).
Orthanc keys instances by their UIDs, so re-sending the same object keeps one copy.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import requests
from orthanc_api_client import OrthancApiClient
from orthanc_api_client.exceptions import HttpError

from node.config import OrthancDestination
from node.delivery.base import (
    BatchError,
    Outcome,
    OutcomeKind,
    Parcel,
    Sender,
    SenderContext,
    register,
)
from node.errors import DestinationError

__all__ = ["OrthancSender"]

log = logging.getLogger(__name__)


@register("orthanc")
class OrthancSender(Sender):
    """Uploads parcels to an Orthanc over its REST API."""

    def __init__(self, config: OrthancDestination, context: SenderContext) -> None:
        self._config = config
        self._context = context
        self._api = OrthancApiClient(
            config.url.rstrip("/"), user=config.username, pwd=config.password
        )
        self._api._http_session.verify = config.verify_tls  # the client exposes no option for it
        self._is_label_supported = True

    def send(self, parcels: Sequence[Parcel]) -> list[Outcome]:
        where = f"destination '{self._context.name}' ({self._config.url})"
        outcomes: list[Outcome] = []
        labelled: set[str] = set()
        for p in parcels:
            try:
                data = p.path.read_bytes()
            except OSError as exc:
                outcomes.append(Outcome(p.row_id, OutcomeKind.RETRY, detail=f"cannot read: {exc}"))
                continue
            try:
                ids = self._api.upload(data)
            except HttpError as exc:
                code = int(exc.http_status_code or 0)
                if code >= 500 or code == 0:
                    raise _batch(where, f"HTTP {code}", outcomes) from exc
                kind = OutcomeKind.REFUSED if code == 400 else OutcomeKind.RETRY
                outcomes.append(Outcome(p.row_id, kind, detail=f"HTTP {code} from Orthanc"))
                continue
            except requests.RequestException as exc:
                raise _batch(where, type(exc).__name__, outcomes) from exc
            if self._config.labels and ids:
                self._label(ids[0], labelled)
            outcomes.append(
                Outcome(
                    p.row_id,
                    OutcomeKind.DELIVERED,
                    status=0,
                    sent_sop_uid=p.sop_uid,
                    sent_transfer_syntax_uid=p.transfer_syntax_uid,
                )
            )
        return outcomes

    def _label(self, instance_id: str, done: set[str]) -> None:
        if not self._is_label_supported:
            return
        try:
            study_id = self._api.instances.get_parent_study_id(instance_id)
            if study_id in done:
                return
            self._api.studies.add_labels(study_id, list(self._config.labels))
            done.add(study_id)
        except HttpError as exc:
            self._is_label_supported = False
            log.warning(
                "orthanc.labels_unsupported",
                extra={"destination": self._context.name, "http_status": exc.http_status_code},
            )

    def close(self) -> None:
        self._api._http_session.close()


def _batch(where: str, why: str, partial: list[Outcome]) -> DestinationError:
    return BatchError(f"{where} failed ({why}); is Orthanc running and reachable?", partial)
