"""DICOMweb destination: STOW-RS (PS3.18 10.5) through dicomweb-client, one request per batch.

Authentication is none, HTTP basic or a bearer token; TLS certificates are verified (against the
system's CAs, or the PEM bundle in ``ca``) unless the destination sets ``verify_tls: false``.  An
untrusted certificate is a destination-wide failure whose message says so: the rows back off and
are dead-lettered after ``delivery.max_attempts`` with that reason.

The store response (PS3.18 10.5.3) is read per instance: Referenced SOP Sequence items are
delivered (with a Warning Reason if any), Failed SOP Sequence items carry the Failure Reason as
their status.  The client's own HTTP retries are switched off: the outbox decides about retries.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import pydicom
import requests
from pydicom.dataset import Dataset

from node.config import DicomwebDestination
from node.delivery.base import Outcome, OutcomeKind, Parcel, Sender, SenderContext
from node.errors import DestinationError
from node.web.peers import make_client, make_session, tls_reason

__all__ = ["DicomwebSender"]

log = logging.getLogger(__name__)

#: STOW-RS failure reasons meaning "this server will never take this object" (PS3.18 I.2.2).
_PERMANENT = frozenset({0x0122, 0xA900, 0xC122})


class DicomwebSender(Sender):
    """STOW-RS to one DICOMweb destination."""

    def __init__(self, config: DicomwebDestination, context: SenderContext) -> None:
        self._config = config
        self._context = context
        self._session = make_session(config)
        self._client = make_client(config, self._session)

    def send(self, parcels: Sequence[Parcel]) -> list[Outcome]:
        outcomes: list[Outcome] = []
        datasets: list[Dataset] = []
        sent: list[Parcel] = []
        for p in parcels:
            try:
                datasets.append(pydicom.dcmread(p.path))
                sent.append(p)
            except (OSError, pydicom.errors.InvalidDicomError) as exc:
                outcomes.append(Outcome(p.row_id, OutcomeKind.RETRY, detail=f"cannot read: {exc}"))
        if not datasets:
            return outcomes
        where = f"destination '{self._context.name}' ({self._config.url})"
        try:
            response = self._client.store_instances(datasets)
        except requests.HTTPError as exc:
            r = exc.response
            code = r.status_code if r is not None else 0
            if r is not None and code == 409:  # every instance failed; the body says why
                return outcomes + _per_instance(sent, _parse(r))
            raise DestinationError(f"{where} answered HTTP {code} to STOW-RS") from exc
        except requests.exceptions.SSLError as exc:
            raise DestinationError(f"{where}: TLS handshake failed: {tls_reason(exc)}") from exc
        except requests.RequestException as exc:
            raise DestinationError(f"{where} cannot be reached: {type(exc).__name__}") from exc
        return outcomes + _per_instance(sent, response)

    def close(self) -> None:
        self._session.close()


def _parse(response: requests.Response) -> Dataset:
    ctype = response.headers.get("Content-Type", "")
    try:
        if "json" in ctype:
            return Dataset.from_json(response.json())
    except ValueError:
        pass
    return Dataset()


def _per_instance(parcels: Sequence[Parcel], response: Dataset) -> list[Outcome]:
    """One outcome per parcel from a STOW-RS response dataset (PS3.18 Table 10.5.3-1)."""
    failed: dict[str, int] = {}
    for item in response.get("FailedSOPSequence", []):
        failed[str(item.get("ReferencedSOPInstanceUID", ""))] = int(
            item.get("FailureReason", 0xC000)
        )
    stored: dict[str, int] = {}
    for item in response.get("ReferencedSOPSequence", []):
        stored[str(item.get("ReferencedSOPInstanceUID", ""))] = int(item.get("WarningReason", 0))
    if not failed and not stored:
        # PS3.18 10.5.3 wants a Store Instances Response; a bare 200 is taken as success
        log.warning("dicomweb.no_store_response", extra={"instances": len(parcels)})
    out: list[Outcome] = []
    for p in parcels:
        if p.sop_uid in failed:
            code = failed[p.sop_uid]
            kind = OutcomeKind.REFUSED if code in _PERMANENT else OutcomeKind.RETRY
            out.append(Outcome(p.row_id, kind, status=code, detail="STOW-RS failure reason"))
        elif p.sop_uid in stored or not response.get("FailedSOPSequence"):
            # servers that answer 200 with an empty body stored everything (PS3.18 10.5.3.1)
            out.append(
                Outcome(
                    p.row_id,
                    OutcomeKind.DELIVERED,
                    status=stored.get(p.sop_uid, 0),
                    sent_sop_uid=p.sop_uid,
                    sent_transfer_syntax_uid=p.transfer_syntax_uid,
                )
            )
        else:
            out.append(Outcome(p.row_id, OutcomeKind.RETRY, detail="not in the STOW-RS response"))
    return out
