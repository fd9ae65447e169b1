"""Receive a C-STORE data set straight to a file in ``data_dir/tmp`` as its PDUs arrive.

pynetdicom keeps an incoming data set in memory (or, with the process-wide
``_config.STORE_RECV_CHUNKED_DATASET``, in a system temporary file with a pydicom-built file
meta).  The node's listener instead installs, per association (in its ``EVT_CONN_OPEN``
handler, so no global setting changes and other AEs in the process are unaffected):

* :class:`StreamingDimse`: a subclass of pynetdicom's DIMSE provider whose C-STORE data set
  fragments go to an :class:`InstanceWriter` as they arrive: a file under the spool's ``tmp/``
  (same file system, so the spool renames it into place without a copy) that starts with the
  file meta the node builds for every received instance (PS3.10 7.1,
  :func:`node.ingest.header.file_meta_bytes`) followed by the data set bytes exactly as
  received.  Both SHA-256 digests the spool needs are computed on the way.
* a bounded socket read: a PDU longer than what the node offered (``node.max_pdu``) closes the
  connection before its body is read, so one PDU cannot make the process allocate gigabytes.

``node.max_instance_bytes`` is enforced while writing: past it the file is removed at once and
the rest of the message is read and discarded, then the C-STORE is refused (0xA700 with a
comment).  A sender that keeps streaming more than :data:`DISCARD_BUDGET` past the limit is
aborted (A-ABORT).  Nothing half-written ever gets a final name: the file lives in ``tmp/``
until the spool commits it, and a connection that drops mid-message removes it.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pynetdicom import PYNETDICOM_IMPLEMENTATION_UID, PYNETDICOM_IMPLEMENTATION_VERSION
from pynetdicom.dimse import DIMSEServiceProvider
from pynetdicom.dimse_messages import C_STORE_RQ
from pynetdicom.pdu_primitives import P_DATA

from node.ingest.header import file_meta_bytes

__all__ = [
    "DISCARD_BUDGET",
    "InstanceWriter",
    "ReceivedFile",
    "StreamingDimse",
    "install_streaming",
]

log = logging.getLogger(__name__)

#: After ``max_instance_bytes`` is passed, read (and drop) at most this much more of the message
#: so the sender gets a status with a reason; beyond it the association is aborted.
DISCARD_BUDGET = 64 * 1024 * 1024

#: PDUs that are not P-DATA (association requests) are small; never refuse one below this.
_MIN_PDU_CAP = 1024 * 1024


@dataclass(frozen=True, slots=True)
class ReceivedFile:
    """A complete received instance in ``tmp/``: the file meta we built, then the data set."""

    path: Path
    size: int
    dataset_offset: int
    sha256: str
    dataset_sha256: str
    free_before: int  # free bytes on the file system when the file was started


class InstanceWriter:
    """One C-STORE data set being written to ``tmp_dir`` (see the module docstring).

    Quacks like the temporary file pynetdicom's C-STORE service closes and unlinks after the
    handler (``close()``, ``name``, ``file.flush()``): after a successful store the spool has
    renamed the file, and that unlink finds nothing.
    """

    def __init__(self, tmp_dir: Path, meta: bytes, *, limit: int, prefix: str = "") -> None:
        self.path = tmp_dir / f"{prefix}{uuid.uuid4().hex}.part"
        self.name = str(self.path)
        self.file = self  # pynetdicom calls ``_data_set_file.file.flush()``
        self.limit = limit
        self.received = 0  # data set bytes received, kept or not
        self.over_limit = False
        self._meta_len = len(meta)
        self._file_hash = hashlib.sha256(meta)
        self._ds_hash = hashlib.sha256()
        # the spool's free-space check must not count root's reserved blocks this file may use
        self.free_before = shutil.disk_usage(tmp_dir).free
        self._fd: int | None = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o640)
        self.error: OSError | None = None
        self._write(meta)

    @property
    def size(self) -> int:
        """The file's size: file meta plus data set."""
        return self._meta_len + self.received

    def _write(self, data: bytes | memoryview) -> None:
        if self._fd is None:
            return
        view = memoryview(data)
        try:
            while view:
                view = view[os.write(self._fd, view) :]
        except OSError as exc:  # disk full...: keep reading the message, refuse it at the end
            self.error = exc
            self.discard()

    def write(self, data: bytes | memoryview) -> int:
        """Append data set bytes (pynetdicom's interface; also used by StreamingDimse)."""
        n = len(data)
        self.received += n
        if self._fd is None:
            return n
        if self.size > self.limit:
            self.over_limit = True
            self.discard()
            return n
        self._file_hash.update(data)
        self._ds_hash.update(data)
        self._write(data)
        return n

    def flush(self) -> None:
        """Nothing is buffered (``os.write``)."""

    def discard(self) -> None:
        """Close and remove the file (over the limit, write error or dropped connection)."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
        self.path.unlink(missing_ok=True)

    def close(self) -> None:
        """Close the file if still open (idempotent)."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    @property
    def fd(self) -> int | None:
        """The open descriptor (the spool syncs the data through it), None once closed."""
        return self._fd

    def result(self) -> ReceivedFile:
        """The complete file (only when not over the limit and written without error)."""
        return ReceivedFile(
            path=self.path,
            size=self.size,
            dataset_offset=self._meta_len,
            sha256=self._file_hash.hexdigest(),
            dataset_sha256=self._ds_hash.hexdigest(),
            free_before=self.free_before,
        )


class StreamingDimse(DIMSEServiceProvider):
    """pynetdicom's DIMSE provider, writing C-STORE data sets to an InstanceWriter.

    Set on an association by :func:`install_streaming`; ``_ainode_tmp_dir`` and
    ``_ainode_limit`` are set there too.
    """

    _ainode_tmp_dir: Path
    _ainode_limit: int
    _ainode_prefix: str
    _ainode_aborted: bool = False

    def _writer(self) -> InstanceWriter | None:
        msg = self.message
        if msg is None:
            return None
        w = getattr(msg, "_data_set_file", None)
        return w if isinstance(w, InstanceWriter) else None

    def receive_primitive(self, primitive: P_DATA) -> None:
        pdvs = primitive.presentation_data_value_list
        if len(pdvs) == 1 and self._writer() is None and not pdvs[0][1][0] & 1:
            super().receive_primitive(primitive)  # a data fragment of a non-C-STORE message
            return
        for context_id, data in pdvs:
            writer = self._writer()
            if writer is not None and not data[0] & 1:
                if writer.over_limit and writer.received - writer.limit > DISCARD_BUDGET:
                    log.warning(
                        "store.aborted_oversize",
                        extra={"limit": writer.limit, "received": writer.received},
                    )
                    writer.discard()
                    self.dul.event_queue.put("Evt19")  # A-ABORT (PS3.8 9.2 AA-8)
                    # AA-8 leaves the association waiting (Sta13) for the peer to close, and
                    # pynetdicom keeps reading (and ignoring) until its ARTIM timer expires: a
                    # fast sender could push hundreds of MiB more.  The next read fails
                    # instead, which closes the connection (Sta13 + Evt17, AR-5).
                    self._ainode_aborted = True
                    return
                writer.write(memoryview(data)[1:])
                if data[0] & 2:  # last fragment: let pynetdicom finish the message
                    one = P_DATA()
                    one.presentation_data_value_list = [[context_id, data[:1]]]  # type: ignore[list-item]
                    super().receive_primitive(one)
                continue
            one = P_DATA()
            one.presentation_data_value_list = [[context_id, data]]  # type: ignore[list-item]
            super().receive_primitive(one)
            self._maybe_start_writer(context_id)

    def _maybe_start_writer(self, context_id: int) -> None:
        msg = self.message
        if not isinstance(msg, C_STORE_RQ) or getattr(msg, "_data_set_file", None) is not None:
            return
        cs = getattr(msg, "command_set", None)
        if cs is None or "CommandDataSetType" not in cs or cs.CommandDataSetType == 0x0101:
            return
        try:
            cx = self.assoc._accepted_cx[context_id]
            meta = file_meta_bytes(
                sop_class_uid=str(cs.AffectedSOPClassUID),
                sop_instance_uid=str(cs.AffectedSOPInstanceUID),
                transfer_syntax_uid=str(cx.transfer_syntax[0]),
                implementation_class_uid=str(PYNETDICOM_IMPLEMENTATION_UID),
                implementation_version_name=PYNETDICOM_IMPLEMENTATION_VERSION,
            )
        except (KeyError, AttributeError, UnicodeError, ValueError, IndexError):
            return  # not ours to judge here: pynetdicom keeps it in memory and refuses it
        try:
            writer = InstanceWriter(
                self._ainode_tmp_dir, meta, limit=self._ainode_limit, prefix=self._ainode_prefix
            )
        except OSError as exc:
            log.warning("store.tmp_unwritable", extra={"error": exc.strerror})
            return
        msg._data_set_file = writer  # type: ignore[assignment]
        msg._data_set_path = writer.path

    def abandon(self) -> None:
        """The connection ended mid-message: remove a partly written data set."""
        writer = self._writer()
        if writer is not None:
            writer.discard()


def install_streaming(
    assoc: Any, *, tmp_dir: Path, limit: int, max_pdu: int, prefix: str = ""
) -> None:
    """Make ``assoc`` (an acceptor, before it starts) stream C-STORE data sets to ``tmp_dir``.

    Also bounds the PDUs it reads: longer than ``max_pdu`` (what the node offers; at least
    1 MiB for association PDUs) closes the connection without reading the body.  ``max_pdu``
    0 leaves PDUs unbounded.  After an oversize abort no further byte is read.
    """
    dimse = assoc.dimse
    dimse.__class__ = StreamingDimse
    dimse._ainode_tmp_dir = tmp_dir
    dimse._ainode_limit = limit
    dimse._ainode_prefix = prefix
    sock = assoc.dul.socket
    cap = max(max_pdu, _MIN_PDU_CAP) + 6 if max_pdu > 0 else 0
    recv = sock.recv

    def bounded_recv(nr_bytes: int) -> bytearray:
        if dimse._ainode_aborted:
            raise OSError("association aborted: the sender streamed far past the limit")
        if cap and nr_bytes > cap:
            log.warning("association.pdu_too_large", extra={"bytes": nr_bytes, "limit": cap})
            raise OSError(f"PDU of {nr_bytes} bytes is longer than the {cap} offered")
        data: bytearray = recv(nr_bytes)
        return data

    sock.recv = bounded_recv
