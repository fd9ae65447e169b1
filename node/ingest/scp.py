"""The DICOM listener: C-ECHO and C-STORE SCP (pynetdicom) in front of the spool.

With a ``UpsService`` (``node.ups_dimse.enabled``) it also serves the UPS Push, Pull and Watch
SOP Classes (``node.ingest.ups_scp``) with the uncompressed transfer syntaxes.

Every storage SOP class (and, with the unrestricted storage service, any other proposed abstract
syntax) is accepted with every transfer syntax pydicom knows.  The received data set is never
decoded: it is written, behind the file meta built from the association (PS3.10 7.1), to a file
in the spool's ``tmp/`` as its PDUs arrive (``node.ingest.receive``, installed per association,
bounded by ``node.max_instance_bytes`` and ``node.max_pdu``), and that file is handed to
``Spool.store_received``; success (0x0000) is answered only after that returns (PS3.4 B.2.3).
Calling AE titles are checked by pynetdicom and, for entries bound to hosts, against the peer's
address (``node.edge.CallerPolicy``).
"""

from __future__ import annotations

import copy
import errno
import logging
import socket
import ssl
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydicom.dataset import Dataset
from pydicom.uid import AllTransferSyntaxes
from pynetdicom import (
    AE,
    PYNETDICOM_IMPLEMENTATION_UID,
    PYNETDICOM_IMPLEMENTATION_VERSION,
    _config,
    evt,
)
from pynetdicom.presentation import AllStoragePresentationContexts
from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]
from pynetdicom.transport import ThreadedAssociationServer

from node.config import AllowedCaller
from node.edge import CallerPolicy
from node.errors import IngestError, OutOfResourcesError
from node.ingest.header import file_meta_bytes
from node.ingest.receive import InstanceWriter, StreamingDimse, install_streaming
from node.ingest.spool import Spool
from node.ingest.ups_scp import UPS_EVENT, UPS_SCP_SOP_CLASSES, UpsService

__all__ = ["DicomListener", "ListenerSettings", "tls_server_context"]

log = logging.getLogger(__name__)

#: Transfer syntaxes of the UPS SOP Classes: Implicit and Explicit VR Little Endian, Deflated
#: Explicit VR Little Endian, Explicit VR Big Endian (pynetdicom's default set).
_UPS_TRANSFER_SYNTAXES = (
    "1.2.840.10008.1.2",
    "1.2.840.10008.1.2.1",
    "1.2.840.10008.1.2.1.99",
    "1.2.840.10008.1.2.2",
)
#: Refused: processing failure (PS3.7 C.4.2.1.4), for failures that are neither 0xA7xx nor 0xC000.
_PROCESSING_FAILURE = 0x0110


@dataclass(frozen=True, slots=True)
class ListenerSettings:
    """What the listener needs from the config (no pydantic here)."""

    ae_title: str = "AINODE"
    host: str = "127.0.0.1"
    port: int = 11112
    allowed_calling_aets: tuple[str | AllowedCaller, ...] = ()
    max_associations: int = 16
    max_pdu: int = 1024 * 1024
    network_timeout_seconds: float = 60.0
    max_instance_bytes: int = 4 * 1024**3


class _DeferredHandshakeContext(ssl.SSLContext):
    """Handshake in the association's thread, not in the listener's accept loop.

    pynetdicom wraps each accepted socket in its accept loop; with the default eager handshake a
    client that connects and stays silent would hold up every other TLS connection.
    """

    def wrap_socket(self, sock: Any, *args: Any, **kwargs: Any) -> ssl.SSLSocket:
        kwargs["do_handshake_on_connect"] = False
        return super().wrap_socket(sock, *args, **kwargs)


def tls_server_context(
    *, cert: Path, key: Path, ca: Path | None, require_client_cert: bool
) -> ssl.SSLContext:
    """A server-side TLS context (PS3.15 B.9 BCP 195: TLS 1.2 or newer)."""
    ctx = _DeferredHandshakeContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(certfile=str(cert), keyfile=str(key))
    if ca is not None:
        ctx.load_verify_locations(cafile=str(ca))
    ctx.verify_mode = ssl.CERT_REQUIRED if require_client_cert else ssl.CERT_OPTIONAL
    if ca is None and not require_client_cert:
        ctx.verify_mode = ssl.CERT_NONE
    return ctx


class _AcceptorContexts(list[Any]):
    """The listener's supported presentation contexts, cheap to copy per association.

    pynetdicom deep-copies the server's contexts for every new association; with every storage
    SOP class times every transfer syntax (~170 contexts, ~6,700 UID objects) that took 0.1-0.2 s
    of CPU per association.  UIDs are immutable, so a copy of each context with its own
    transfer-syntax list is as independent as a deep copy.
    """

    def __deepcopy__(self, memo: dict[int, Any]) -> list[Any]:
        out = []
        for cx in self:
            dup = copy.copy(cx)
            dup._transfer_syntax = list(cx._transfer_syntax)
            out.append(dup)
        return out


class DicomListener:
    """C-ECHO/C-STORE SCP on one or more ports (plain, and optionally TLS), storing via a Spool.

    Parameters
    ----------
    settings:
        AE title, address, allowed calling AE titles, limits.
    spool:
        Where received instances go.
    on_association:
        Optional ``callback(outcome, facts)`` for each association request: ``outcome`` is
        ``accepted`` or ``refused``; ``facts`` holds ``calling_aet``, ``called_aet``, ``peer``
        (address) and ``port`` (ours).  The audit log subscribes here; it must not raise.
    ups:
        The UPS SOP Classes' handlers, or None (not served).
    ups_events:
        Optional ``callback(calling_aet, event_type, workitem_uid, information)`` for UPS
        Event N-EVENT-REPORTs (UPS Event SOP Class as SCP, for ``ups-dimse`` performers);
        ``information`` is DICOM JSON.  It must not raise.
    """

    def __init__(
        self,
        settings: ListenerSettings,
        spool: Spool,
        *,
        on_association: Callable[[str, dict[str, Any]], None] | None = None,
        ups: UpsService | None = None,
        ups_events: Callable[[str, int, str, dict[str, Any]], None] | None = None,
    ) -> None:
        self.settings = settings
        self.spool = spool
        self.on_association = on_association
        self.ups = ups
        self.ups_events = ups_events
        self._servers: list[ThreadedAssociationServer] = []
        self._lock = threading.Lock()
        self.callers = CallerPolicy(settings.allowed_calling_aets)
        # pynetdicom's settings are process-wide; they are set when a listener is made, never
        # on import.  A C-STORE of an unknown (private) SOP class is still a storage request:
        # accept it (the node's only Storage SCPs are its listeners and pull's C-GET role).
        _config.UNRESTRICTED_STORAGE_SERVICE = True
        self.ae = self._make_ae()

    def _make_ae(self) -> AE:
        s = self.settings
        ae = AE(ae_title=s.ae_title)
        transfer_syntaxes = list(AllTransferSyntaxes)
        ae.add_supported_context(Verification, transfer_syntaxes)
        for cx in AllStoragePresentationContexts:
            assert cx.abstract_syntax is not None
            ae.add_supported_context(cx.abstract_syntax, transfer_syntaxes)
        if self.ups is not None:
            for sop_class in UPS_SCP_SOP_CLASSES:
                ae.add_supported_context(sop_class, list(_UPS_TRANSFER_SYNTAXES))
        if self.ups_events is not None:
            ae.add_supported_context(UPS_EVENT, list(_UPS_TRANSFER_SYNTAXES))
        ae.maximum_associations = s.max_associations
        ae.maximum_pdu_size = s.max_pdu
        ae.network_timeout = s.network_timeout_seconds
        ae.acse_timeout = s.network_timeout_seconds
        ae.dimse_timeout = s.network_timeout_seconds
        if self.callers.titles:
            ae.require_calling_aet = list(self.callers.titles)
        return ae

    def _handlers(self) -> list[Any]:
        handlers: list[Any] = [
            (evt.EVT_C_STORE, self._on_store),
            (evt.EVT_C_ECHO, self._on_echo),
            (evt.EVT_CONN_OPEN, self._on_connect),
            (evt.EVT_CONN_CLOSE, self._on_close),
            (evt.EVT_REJECTED, self._on_rejected),
            (evt.EVT_ACCEPTED, self._on_accepted),
        ]
        if self.ups is not None:
            handlers += self.ups.handlers()
        if self.ups_events is not None:
            handlers.append((evt.EVT_N_EVENT_REPORT, self._on_event_report))
        return handlers

    def _on_event_report(self, event: evt.Event) -> int:
        """A UPS Event N-EVENT-REPORT (PS3.4 CC.2.4) for the node's ``ups-dimse`` performers."""
        if self.ups_events is None or str(event.context.abstract_syntax) != UPS_EVENT:
            return 0x0122  # SOP class not supported
        request: Any = event.request
        try:
            info = event.event_information.to_json_dict()
            self.ups_events(
                event.assoc.requestor.ae_title.strip(),
                int(request.EventTypeID),
                str(request.AffectedSOPInstanceUID),
                info,
            )
        except Exception:  # noqa: BLE001 - a failing handler answers a failure, never kills
            log.exception("ups.event_report_failed")
            return _PROCESSING_FAILURE
        return 0x0000

    def start(self, *, port: int | None = None, ssl_context: ssl.SSLContext | None = None) -> int:
        """Start listening (non-blocking) and return the bound port (useful with port 0)."""
        bind_port = self.settings.port if port is None else port
        server = self.ae.start_server(
            (self.settings.host, bind_port),
            block=False,
            ssl_context=ssl_context,
            evt_handlers=self._handlers(),
        )
        assert server is not None
        server.contexts = _AcceptorContexts(server.contexts)
        with self._lock:
            self._servers.append(server)
        bound = int(server.server_address[1])
        log.info(
            "dicom.listening",
            extra={"port": bound, "tls": ssl_context is not None, "ae_title": self.ae.ae_title},
        )
        return bound

    def start_on(self, sock: socket.socket) -> None:
        """Serve on an already listening socket inherited from the main process (receivers)."""
        listening = sock

        class _Inherited(ThreadedAssociationServer):
            def server_bind(self) -> None:
                if self.socket is not None:
                    self.socket.close()
                self.socket = listening
                if self.ae.network_timeout is not None:
                    self.socket.settimeout(self.ae.network_timeout)
                self.server_address = self.socket.getsockname()

            def server_activate(self) -> None:
                pass  # listening already (the main process called listen)

        server = self.ae.make_server(
            (self.settings.host, 0), evt_handlers=self._handlers(), server_class=_Inherited
        )
        server.contexts = _AcceptorContexts(server.contexts)
        thread = threading.Thread(target=server.serve_forever, name="AcceptorServer", daemon=True)
        thread.start()
        self.ae._servers.append(server)
        with self._lock:
            self._servers.append(server)
        log.info("dicom.listening", extra={"port": int(server.server_address[1]), "tls": False})

    def stop_accepting(self) -> None:
        """Stop accepting new associations; open ones go on (a drain)."""
        with self._lock:
            servers, self._servers = self._servers, []
        for server in servers:
            server.shutdown()

    def open_associations(self) -> list[Any]:
        """The associations still running."""
        return [a for a in self.ae.active_associations if a.is_alive()]

    def stop(self) -> None:
        """Stop every server and abort open associations."""
        with self._lock:
            servers, self._servers = self._servers, []
        for server in servers:
            server.shutdown()

    # ------------------------------------------------------------ handlers
    def _on_connect(self, event: evt.Event) -> None:
        assoc = event.assoc
        # Our responses are small PDUs: never let Nagle hold them back (dcmtk peers wait on them)
        try:
            sock = assoc.dul.socket.socket  # type: ignore[union-attr]
            if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except (AttributeError, OSError):
            pass
        install_streaming(
            assoc,
            tmp_dir=self.spool.tmp_dir,
            limit=self.settings.max_instance_bytes,
            max_pdu=self.settings.max_pdu,
            prefix=str(getattr(self.spool, "tmp_prefix", "")),
        )
        if self.callers.restricts_hosts:
            _check_caller_host(assoc, self.callers)

    @staticmethod
    def _on_close(event: evt.Event) -> None:
        dimse = event.assoc.dimse
        if isinstance(dimse, StreamingDimse):
            dimse.abandon()

    def _on_rejected(self, event: evt.Event) -> None:
        log.warning(
            "association.rejected",
            extra={"calling_aet": event.assoc.requestor.ae_title},
        )
        self._tell("refused", event)

    def _on_accepted(self, event: evt.Event) -> None:
        self._tell("accepted", event)

    def _tell(self, outcome: str, event: evt.Event) -> None:
        if self.on_association is None:
            return
        assoc = event.assoc
        facts = {
            "calling_aet": assoc.requestor.ae_title.strip(),
            "called_aet": assoc.acceptor.ae_title.strip(),
            "peer": assoc.requestor.address,
            "port": assoc.acceptor.port,
        }
        try:
            self.on_association(outcome, facts)
        except Exception:  # noqa: BLE001 - an audit hook must never break the SCP
            log.exception("association.listener_failed")

    @staticmethod
    def _on_echo(event: evt.Event) -> int:
        return 0x0000

    def _on_store(self, event: evt.Event) -> int | Dataset:
        calling = event.assoc.requestor.ae_title.strip() or None
        writer = getattr(event.request, "_dataset_file", None)
        try:
            if isinstance(writer, InstanceWriter):
                return self._store_streamed(writer, calling)
            try:
                data = _encoded_file(event)
            except Exception:  # noqa: BLE001
                log.exception("store.no_dataset")
                return 0xC000
            return self._answer(lambda: self.spool.store(data, calling_aet=calling, source="dimse"))
        finally:
            if isinstance(writer, InstanceWriter):
                writer.close()

    def _store_streamed(self, writer: InstanceWriter, calling: str | None) -> int | Dataset:
        if writer.over_limit:
            writer.discard()
            log.warning(
                "store.refused",
                extra={"error": "too-large", "bytes": writer.size, "limit": writer.limit},
            )
            return _status(0xA700, f"instance over node.max_instance_bytes ({writer.limit} bytes)")
        if writer.error is not None:
            writer.discard()
            full = writer.error.errno in (errno.ENOSPC, errno.EDQUOT)
            log.warning("store.refused", extra={"error": "write-failed"})
            if full:
                return _status(0xA700, "disk full while writing the instance")
            return _status(_PROCESSING_FAILURE, "cannot write the instance")
        received = writer.result()
        fd = writer.fd
        return self._answer(
            lambda: self.spool.store_received(received, fd, calling_aet=calling, source="dimse")
        )

    @staticmethod
    def _answer(store: Callable[[], Any]) -> int | Dataset:
        try:
            outcome = store()
        except OutOfResourcesError as exc:
            log.warning("store.refused", extra={"error": exc.type})
            return _status(0xA700, str(exc))
        except IngestError as exc:
            log.warning("store.refused", extra={"error": exc.type})
            status = exc.dicom_status if exc.dicom_status else _PROCESSING_FAILURE
            return _status(status, str(exc))
        except Exception:  # noqa: BLE001 - a failing store answers a failure, never kills the SCP
            log.exception("store.failed")
            return _status(_PROCESSING_FAILURE, "internal error while storing")
        log.debug(
            "store.ok",
            extra={"sop_uid": outcome.instance.sop_uid, "status": outcome.status},
        )
        return 0x0000


def _encoded_file(event: evt.Event) -> bytes:
    """The received data set, as sent, behind a file meta built from the request (PS3.10 7.1).

    Same bytes as ``event.encoded_dataset(include_meta=True)``, without the pydicom round trip.
    """
    request: Any = event.request
    stream: bytes = request.DataSet.getvalue()
    meta = file_meta_bytes(
        sop_class_uid=str(request.AffectedSOPClassUID),
        sop_instance_uid=str(request.AffectedSOPInstanceUID),
        transfer_syntax_uid=str(event.context.transfer_syntax),
        implementation_class_uid=str(PYNETDICOM_IMPLEMENTATION_UID),
        implementation_version_name=PYNETDICOM_IMPLEMENTATION_VERSION,
    )
    return meta + stream


def _status(code: int, comment: str) -> Dataset:
    ds = Dataset()
    ds.Status = code
    ds.ErrorComment = comment[:64]  # LO: at most 64 characters (PS3.5 6.2)
    return ds


def allowed(aets: Sequence[str | AllowedCaller]) -> tuple[str | AllowedCaller, ...]:
    """Normalise configured callers (strip spaces of bare AE titles, drop empty ones)."""
    out: list[str | AllowedCaller] = []
    for a in aets:
        if isinstance(a, str):
            if a.strip():
                out.append(a.strip())
        else:
            out.append(a)
    return tuple(out)


def _check_caller_host(assoc: Any, callers: CallerPolicy) -> None:
    """Reject (A-ASSOCIATE-RJ, calling AE title not recognised: PS3.8 9.3.4) an allowed AE
    title that calls from an address its ``node.allowed_calling_aets`` entry does not list.

    pynetdicom checks the AE title alone (``AE.require_calling_aet``); the address check wraps
    this association's acceptor negotiation, before any presentation context is accepted.
    """
    acse = assoc.acse
    negotiate = acse.negotiate_association

    def checked() -> None:
        rq = acse.requestor.primitive
        calling = str(getattr(rq, "calling_ae_title", "") or "").strip()
        peer = assoc.requestor.address
        if assoc.is_acceptor and calling in callers.titles and not callers.allows(calling, peer):
            acse.requestor.ae_title = calling
            log.warning("association.wrong_host", extra={"calling_aet": calling})
            acse.send_reject(0x01, 0x01, 0x03)
            evt.trigger(assoc, evt.EVT_REJECTED, {})
            assoc.kill()
            return
        negotiate()

    acse.negotiate_association = checked
