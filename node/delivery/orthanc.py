"""Orthanc destination: REST upload (``POST /instances``) through orthanc-api-client.

After each upload the configured ``metadata`` (name -> value) is set on the stored instance
(``PUT /instances/{id}/metadata/{name}``; Orthanc accepts only names declared under
``UserMetadata`` in its own configuration) and the configured ``labels`` are attached to its study
(``PUT /studies/{id}/labels/{label}``, Orthanc 1.12 or later).  Whether the peer has labels at
all is read once from ``GET /system`` (``Version``).  A metadata name Orthanc does not know, or
labels on an Orthanc without them, never fail the delivery: the instance is stored, the row is
marked delivered with a note saying what was not attached and why, and the node logs it once.
Orthanc keys instances by their UIDs, so re-sending the same object keeps one copy.

Orthanc does not act on IOCM rejection notes itself.  With ``delete_rejected`` the sender
deletes the instances a rejection note references (``DELETE /instances/{id}``, found by
``POST /tools/lookup``) before storing the note; with ``rejection_notes: false`` it deletes
without storing the note.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from io import BytesIO

import pydicom
import requests
from orthanc_api_client import OrthancApiClient
from orthanc_api_client.exceptions import HttpError, OrthancApiException
from pydicom.errors import InvalidDicomError

from node.config import OrthancDestination
from node.delivery.base import (
    BatchError,
    Outcome,
    OutcomeKind,
    Parcel,
    Sender,
    SenderContext,
)
from node.errors import DestinationError
from node.imaging.sop_classes import KOS_CLASS
from node.web.peers import TlsSession, tls_reason, verify_setting

__all__ = ["OrthancSender", "has_labels", "rejected_by"]

log = logging.getLogger(__name__)

#: Key Object Selection Document Storage (PS3.4 B.5)
#: CID 7011 "Rejected for Quality Reasons": the title of an IOCM rejection note
REJECTION_TITLE = ("113001", "DCM")

#: The first Orthanc release with labels (``/studies/{id}/labels``).
LABELS_SINCE = (1, 12)


def has_labels(version: str) -> bool | None:
    """Whether an Orthanc ``Version`` string (``GET /system``) has the labels API.

    ``mainline`` builds have it; ``None`` when the string cannot be read.
    """
    if version.startswith("mainline"):
        return True
    parts = version.split(".")
    try:
        major, minor = int(parts[0]), int(parts[1])
    except (IndexError, ValueError):
        return None
    return (major, minor) >= LABELS_SINCE


class OrthancSender(Sender):
    """Uploads parcels to an Orthanc over its REST API, then attaches metadata and labels."""

    def __init__(self, config: OrthancDestination, context: SenderContext) -> None:
        self._config = config
        self._context = context
        self._api = OrthancApiClient(
            config.url.rstrip("/"), user=config.username, pwd=config.password
        )
        # the client exposes no TLS option: give it a session that keeps the configured one, and
        # no HTTP retries of its own (the outbox retries; the client's adapter backs off for
        # minutes on a certificate error, holding the destination's worker)
        plain = self._api._http_session
        session = TlsSession()
        session.auth, session.headers = plain.auth, plain.headers
        session.verify = verify_setting(verify_tls=config.verify_tls, ca=config.ca)
        self._api._http_session = session
        self._labels_note: str | None = None  # set once labels are known to be unsupported
        self._is_version_checked = False
        self._warned: set[str] = set()

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
            rejected = rejected_by(data) if p.sop_class_uid == KOS_CLASS else None
            try:
                notes = []
                if rejected is not None and self._config.delete_rejected:
                    notes.append(self._delete(rejected))
                if rejected is not None and not self._config.rejection_notes:
                    ids = []
                else:
                    ids = self._api.upload(data)
                notes += self._annotate(ids[0], labelled) if ids else []
            except HttpError as exc:
                code = int(exc.http_status_code or 0)
                if code >= 500 or code == 0:
                    raise _batch(where, f"HTTP {code}", outcomes) from exc
                kind = OutcomeKind.REFUSED if code == 400 else OutcomeKind.RETRY
                outcomes.append(Outcome(p.row_id, kind, detail=f"HTTP {code} from Orthanc"))
                continue
            except (OrthancApiException, requests.RequestException) as exc:
                raise _batch(where, _why(exc), outcomes) from exc
            outcomes.append(
                Outcome(
                    p.row_id,
                    OutcomeKind.DELIVERED,
                    status=0,
                    detail="; ".join(notes),
                    sent_sop_uid=p.sop_uid,
                    sent_transfer_syntax_uid=p.transfer_syntax_uid,
                )
            )
        return outcomes

    def _delete(self, sop_uids: Sequence[str]) -> str:
        """Delete the instances ``sop_uids`` (REST ``DELETE /instances/{id}``); one already gone
        counts as deleted, so a re-sent note deletes nothing twice.  Raises ``HttpError`` or
        ``requests.RequestException`` (the batch is retried)."""
        deleted = 0
        for sop_uid in sop_uids:
            for orthanc_id in self._api.lookup(sop_uid, filter="Instance"):
                try:
                    self._api.instances.delete(orthanc_id=orthanc_id)
                except HttpError as exc:
                    if int(exc.http_status_code or 0) != 404:
                        raise
                deleted += 1
        log.info(
            "orthanc.rejected_deleted",
            extra={"destination": self._context.name, "instances": deleted},
        )
        return f"deleted {deleted} rejected instance(s) of {len(sop_uids)}"

    # ------------------------------------------------------------ metadata and labels
    def _annotate(self, instance_id: str, labelled: set[str]) -> list[str]:
        """Attach metadata and labels to a stored instance; return notes on what was not.

        Raises ``HttpError`` (5xx) or ``requests.RequestException``: the batch is retried, and
        re-uploading the same instance is harmless.
        """
        notes: list[str] = []
        for name, value in self._config.metadata.items():
            try:
                self._api.instances.set_string_metadata(instance_id, name, value)
            except HttpError as exc:
                code = int(exc.http_status_code or 0)
                if code >= 500 or code == 0:
                    raise
                notes.append(
                    f"metadata '{name}' not attached: Orthanc answered HTTP {code}; declare it "
                    "under UserMetadata in Orthanc's configuration"
                )
                self._warn_once(f"metadata:{name}", "orthanc.metadata_refused", http_status=code)
        if self._config.labels:
            note = self._label(instance_id, labelled)
            if note:
                notes.append(note)
        return notes

    def _label(self, instance_id: str, done: set[str]) -> str | None:
        if not self._is_version_checked:
            self._check_version()
        if self._labels_note is not None:
            return self._labels_note
        try:
            study_id = self._api.instances.get_parent_study_id(instance_id)
            if study_id not in done:
                self._api.studies.add_labels(study_id, list(self._config.labels))
                done.add(study_id)
        except HttpError as exc:
            code = int(exc.http_status_code or 0)
            if code >= 500 or code == 0:
                raise
            self._labels_note = f"labels not attached: Orthanc answered HTTP {code} to them"
            self._warn_once("labels", "orthanc.labels_unsupported", http_status=code)
            return self._labels_note
        return None

    def _check_version(self) -> None:
        """Read ``GET /system`` once: an Orthanc older than 1.12 has no labels."""
        try:
            system = self._api.get_system()
        except HttpError:
            return  # e.g. /system forbidden to this user: try the labels and see
        self._is_version_checked = True
        version = str(system.get("Version", "")) if isinstance(system, dict) else ""
        if has_labels(version) is False:
            need = ".".join(map(str, LABELS_SINCE))
            self._labels_note = (
                f"labels not attached: Orthanc {version} has no labels (they need Orthanc "
                f"{need} or later)"
            )
            self._warn_once("labels", "orthanc.labels_unsupported", orthanc_version=version)

    def _warn_once(self, key: str, event: str, **fields: object) -> None:
        if key in self._warned:
            return
        self._warned.add(key)
        log.warning(event, extra={"destination": self._context.name, **fields})

    def close(self) -> None:
        self._api._http_session.close()


def rejected_by(data: bytes) -> list[str] | None:
    """The SOP Instance UIDs an IOCM rejection note withdraws (its Current Requested Procedure
    Evidence Sequence), or None when ``data`` is not a KOS titled "Rejected for Quality
    Reasons" (DCM 113001, CID 7011)."""
    try:
        ds = pydicom.dcmread(BytesIO(data), stop_before_pixels=True)
        title = ds.ConceptNameCodeSequence[0]
        if (str(title.CodeValue), str(title.CodingSchemeDesignator)) != REJECTION_TITLE:
            return None
        return [
            str(sop.ReferencedSOPInstanceUID)
            for study in ds.CurrentRequestedProcedureEvidenceSequence
            for series in study.ReferencedSeriesSequence
            for sop in series.ReferencedSOPSequence
        ]
    except (AttributeError, IndexError, KeyError, InvalidDicomError):
        return None


def _why(exc: BaseException) -> str:
    """The cause of a failed request: the client wraps ``requests`` errors in its own."""
    cause: BaseException | None = exc
    while cause is not None and not isinstance(cause, requests.RequestException):
        cause = cause.__cause__ or cause.__context__
    if isinstance(cause, requests.exceptions.SSLError):
        return f"TLS: {tls_reason(cause)}"
    return type(cause or exc).__name__


def _batch(where: str, why: str, partial: list[Outcome]) -> DestinationError:
    return BatchError(f"{where} failed ({why}); is Orthanc running and reachable?", partial)
