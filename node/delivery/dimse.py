"""DIMSE destination: C-STORE SCU over one association per batch (PS3.4 Annex B, PS3.7 9.1.1).

Presentation contexts (PS3.8 9.3.2.2) are proposed one transfer syntax each, so the answer says
exactly which (SOP class, transfer syntax) pairs the peer takes: the object's own syntax first,
then the uncompressed ones (or the destination's configured ``transfer_syntaxes``).  An object is
sent byte-for-byte when its own syntax was accepted; only when the peer refused it is it
decompressed (``Dataset.decompress``) or re-encoded.  Pairs the peer rejected are remembered per
destination (``SenderContext.remember_refusal``), so later batches skip them; when every candidate
for a SOP class was refused the object is answered ``REFUSED`` and the outbox may send the SC
fallback instead.
"""

from __future__ import annotations

import logging
import socket
from collections.abc import Sequence
from pathlib import Path

import pydicom
from pydicom.dataset import Dataset
from pydicom.uid import (
    UID,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
)
from pynetdicom import AE, _config
from pynetdicom.association import Association

from node.config import DimseDestination
from node.delivery.base import (
    BatchError,
    Outcome,
    OutcomeKind,
    Parcel,
    Sender,
    SenderContext,
)
from node.errors import DestinationError
from node.web.peers import ssl_context

__all__ = ["DimseSender", "candidate_syntaxes", "classify_status"]

log = logging.getLogger(__name__)

_UNCOMPRESSED = (ExplicitVRLittleEndian, ImplicitVRLittleEndian)
#: Warning statuses of C-STORE (PS3.4 B.2.3): stored, with a remark.
_WARNINGS = frozenset({0x0001, 0xB000, 0xB006, 0xB007})
#: Failure statuses that will not change by trying again: SOP class not supported (PS3.7 C).
_PERMANENT = frozenset({0x0122})
_MAX_CONTEXTS = 128  # PS3.8 9.3.2.2: presentation context ids are odd numbers 1..255


def candidate_syntaxes(original: str, configured: Sequence[str] | None) -> list[str]:
    """Transfer syntaxes to offer for an object encoded in ``original``, best first.

    Parameters
    ----------
    original:
        The object's transfer syntax UID.
    configured:
        The destination's ``transfer_syntaxes`` (what it is known to accept), or ``None``.

    Returns
    -------
    list of str
        ``original`` first when allowed, then the alternatives we can transcode to.
    """
    if configured:
        if original in configured:
            return [original] + [ts for ts in configured if ts != original]
        return list(dict.fromkeys(configured))
    return list(dict.fromkeys([original, *_UNCOMPRESSED]))


def classify_status(status: int) -> OutcomeKind:
    """Map a C-STORE response status (PS3.4 B.2.3, PS3.7 C) to what the outbox does next."""
    if status == 0x0000 or status in _WARNINGS:
        return OutcomeKind.DELIVERED
    if status in _PERMANENT:
        return OutcomeKind.REFUSED
    return OutcomeKind.RETRY


class DimseSender(Sender):
    """C-STORE SCU to one DIMSE destination."""

    def __init__(self, config: DimseDestination, context: SenderContext) -> None:
        self._config = config
        self._context = context
        # Send files that need no conversion straight from disk (no decode/re-encode).
        # pynetdicom reads this process-wide flag only when a *path* is passed to
        # send_c_store (as `ainode send` does too); datasets are unaffected.  Set when a
        # sender is made, never on import.
        _config.STORE_SEND_CHUNKED_DATASET = True

    def _associate(self, proposals: Sequence[tuple[str, str]]) -> Association:
        cfg = self._config
        ae = AE(ae_title=cfg.calling_ae_title or self._context.node_ae_title)
        timeout = self._context.timeout_seconds
        ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = timeout
        ae.connection_timeout = min(timeout, 10.0)
        ae.maximum_pdu_size = 0
        for sop, ts in proposals:
            ae.add_requested_context(sop, ts)
        tls_args = None
        if cfg.tls is not None:
            tls_args = (ssl_context(cfg.tls), cfg.host)
        assoc = ae.associate(cfg.host, cfg.port, ae_title=cfg.ae_title, tls_args=tls_args)
        if assoc.is_established:
            _no_delay(assoc)
        if assoc.is_established or assoc.rejected_contexts:
            # the peer answered; with every context rejected pynetdicom aborts, and the caller
            # answers each object REFUSED (no accepted pairs)
            return assoc
        where = f"destination '{self._context.name}' ({cfg.host}:{cfg.port}, AE '{cfg.ae_title}')"
        if assoc.is_rejected:
            prim = assoc.acceptor.primitive
            reason = (
                f"{prim.result_str}, {prim.source_str}: {prim.reason_str}" if prim else "rejected"
            )
            raise DestinationError(
                f"{where} rejected the association ({reason}); check that the peer knows the "
                f"calling AE '{ae.ae_title}' and the called AE title"
            )
        raise DestinationError(
            f"{where} cannot be reached (connection refused, timed out or aborted during "
            "association negotiation)"
        )

    def send(self, parcels: Sequence[Parcel]) -> list[Outcome]:
        refused = self._context.refusals()
        outcomes: list[Outcome] = []
        proposals: list[tuple[str, str]] = []
        todo: list[Parcel] = []
        for p in parcels:
            cands = candidate_syntaxes(p.transfer_syntax_uid, self._config.transfer_syntaxes)
            fresh = [ts for ts in cands if (p.sop_class_uid, ts) not in refused]
            if not fresh:
                outcomes.append(_refused(p, cands, remembered=True))
                continue
            new = [(p.sop_class_uid, ts) for ts in fresh if (p.sop_class_uid, ts) not in proposals]
            if len(proposals) + len(new) > _MAX_CONTEXTS:
                outcomes.append(Outcome(p.row_id, OutcomeKind.RETRY, detail="next association"))
                continue
            proposals.extend(new)
            todo.append(p)
        if not todo:
            return outcomes
        assoc = self._associate(proposals)
        try:
            accepted = {
                (str(cx.abstract_syntax), str(cx.transfer_syntax[0]))
                for cx in assoc.accepted_contexts
            }
            for pair in proposals:
                if pair not in accepted:
                    self._context.remember_refusal(*pair)
            for p in todo:
                outcomes.append(self._store(assoc, p, accepted, outcomes))
        finally:
            if assoc.is_established:
                assoc.release()
        return outcomes

    def _store(
        self,
        assoc: Association,
        p: Parcel,
        accepted: set[tuple[str, str]],
        done: list[Outcome],
    ) -> Outcome:
        cands = candidate_syntaxes(p.transfer_syntax_uid, self._config.transfer_syntaxes)
        target = next((ts for ts in cands if (p.sop_class_uid, ts) in accepted), None)
        if target is None:
            return _refused(p, cands, remembered=False)
        payload: Path | Dataset
        if target == p.transfer_syntax_uid:
            payload = p.path
        else:
            try:
                payload = transcode(p.path, target)
            except (ValueError, RuntimeError, NotImplementedError) as exc:
                return Outcome(
                    p.row_id,
                    OutcomeKind.REFUSED,
                    detail=f"cannot transcode {p.transfer_syntax_uid} to {target}: {exc}",
                )
            log.debug(
                "dimse.transcoded",
                extra={"sop_uid": p.sop_uid, "from_ts": p.transfer_syntax_uid, "to_ts": target},
            )
        if not assoc.is_established:
            raise BatchError(
                f"destination '{self._context.name}' dropped the association mid-batch", done
            )
        try:
            status = assoc.send_c_store(payload)
        except (ValueError, AttributeError) as exc:
            return Outcome(p.row_id, OutcomeKind.RETRY, detail=f"cannot send: {exc}")
        if "Status" not in status:
            raise BatchError(
                f"destination '{self._context.name}' gave no C-STORE response (association "
                "aborted, or DIMSE timeout)",
                done,
            )
        code = int(status.Status)
        comment = str(status.get("ErrorComment", "") or "")
        return Outcome(
            p.row_id,
            classify_status(code),
            status=code,
            detail=comment,
            sent_sop_uid=p.sop_uid,
            sent_transfer_syntax_uid=target,
        )


def transcode(path: Path, target: str) -> Dataset:
    """Read ``path`` and re-encode it in transfer syntax ``target`` (PS3.5 A, 8.2).

    Compressed pixel data is decompressed with ``Dataset.decompress``; a compressed ``target`` is
    produced with ``Dataset.compress`` (RLE, JPEG-LS, JPEG 2000 lossless...).

    Raises
    ------
    ValueError, RuntimeError, NotImplementedError
        pydicom cannot decode or encode the pixel data.
    """
    ds = pydicom.dcmread(path)
    ts = UID(target)
    current = UID(ds.file_meta.TransferSyntaxUID)
    if current.is_compressed and "PixelData" in ds:
        ds.decompress()
    if ts.is_compressed:
        if "PixelData" not in ds:
            raise ValueError("object has no pixel data to compress")
        ds.compress(ts)
    # an uncompressed target is left to pynetdicom, which re-encodes the dataset between the
    # uncompressed syntaxes when it is sent on the accepted context (PS3.5 10.1)
    return ds


def _no_delay(assoc: Association) -> None:
    """Switch Nagle off: a small C-STORE command PDU followed by the data set otherwise waits for
    the peer's delayed ACK (~40 ms per instance)."""
    sock = getattr(getattr(assoc.dul, "socket", None), "socket", None)
    if isinstance(sock, socket.socket):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


def _refused(p: Parcel, cands: Sequence[str], *, remembered: bool) -> Outcome:
    how = "refused earlier (remembered)" if remembered else "refused in negotiation"
    return Outcome(
        p.row_id,
        OutcomeKind.REFUSED,
        detail=f"peer {how} SOP class {p.sop_class_uid} with transfer syntaxes {', '.join(cands)}",
    )
