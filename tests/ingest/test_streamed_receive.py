"""C-STORE data sets go to disk as they arrive; huge or endless ones are refused in flat memory.

A real ``ainode serve`` (``node.max_instance_bytes`` lowered to 24 MiB so the test is quick)
receives, over loopback:

* an instance over the limit sent by a normal pynetdicom SCU: refused with 0xA700 and a
  comment, nothing kept;
* a hostile stream, written at the PDU level: a data set whose Pixel Data declares 3 GiB,
  streamed in valid 1 MiB P-DATA-TF PDUs until the node aborts the association;
* a single P-DATA-TF PDU that declares 3 GiB: the connection is closed before its body is read.

Each time the node's RSS stays flat, ``tmp/`` is left empty, nothing is indexed, and the node
then stores a normal instance byte for byte.
"""

from __future__ import annotations

import hashlib
import io
import socket
import struct
import time
from collections.abc import Iterator
from pathlib import Path

import pydicom
import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid
from pynetdicom import AE
from pynetdicom.dimse_messages import C_STORE_RQ
from pynetdicom.dimse_primitives import C_STORE
from pynetdicom.dsutils import encode

from node.ingest.header import dataset_offset
from node.store.index import Index
from tests.ingest.synthetic import write_ct_series
from tests.peers.node import NodeProcess, start_node

LIMIT = 24 * 1024 * 1024
PDU = 1024 * 1024  # what the node offers (node.max_pdu default)
DECLARED = 3 * 1024**3


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NodeProcess]:
    with start_node(
        tmp_path_factory.mktemp("streamed"), node={"max_instance_bytes": LIMIT}
    ) as peer:
        yield peer


def _rss(node: NodeProcess) -> int:
    assert node.proc is not None
    for line in Path(f"/proc/{node.proc.pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


def _tmp_files(node: NodeProcess) -> list[Path]:
    return list((node.data_dir / "tmp").iterdir())


def _instance(pixels: bytes | None = None, *, rows: int = 16) -> Dataset:
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SOPClassUID = CTImageStorage
    ds.SOPInstanceUID = generate_uid()
    ds.StudyInstanceUID = generate_uid()
    ds.SeriesInstanceUID = generate_uid()
    ds.Modality = "CT"
    ds.Rows, ds.Columns = rows, 1024
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = 16, 16, 15
    ds.PixelRepresentation, ds.SamplesPerPixel = 0, 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.PixelData = pixels if pixels is not None else b"\0" * (rows * 1024 * 2)
    return ds


def _send(node: NodeProcess, ds: Dataset) -> Dataset:
    ae = AE(ae_title="STREAMTEST")
    ae.add_requested_context(CTImageStorage, ExplicitVRLittleEndian)
    assoc = ae.associate("127.0.0.1", node.dicom_port, ae_title="AINODE")
    assert assoc.is_established
    try:
        status = assoc.send_c_store(ds)
    finally:
        assoc.release()
    return status


def _indexed(node: NodeProcess) -> int:
    index = Index(node.data_dir / "index.sqlite")
    try:
        return len(index.list_studies(limit=1000))
    finally:
        index.close()


def _assert_still_serving(node: NodeProcess, tmp_path: Path) -> None:
    src = write_ct_series(tmp_path / "after", 1, size=128)[0]
    ds = pydicom.dcmread(src)
    status = _send(node, ds)
    assert status.Status == 0x0000
    index = Index(node.data_dir / "index.sqlite")
    try:
        ref = index.lookup(str(ds.SOPInstanceUID))
    finally:
        index.close()
    assert ref is not None
    stored = ref.path.read_bytes()
    # the data set bytes are exactly those sent (pynetdicom sends the file's data set as is)
    sent = src.read_bytes()
    assert stored[dataset_offset(stored) :] == sent[dataset_offset(sent) :]
    assert hashlib.sha256(stored).hexdigest() == ref.sha256


def test_a_normal_instance_is_stored_from_the_streamed_file(
    node: NodeProcess, tmp_path: Path
) -> None:
    _assert_still_serving(node, tmp_path)
    assert _tmp_files(node) == []


def test_over_the_limit_is_refused_with_a700_and_a_comment(
    node: NodeProcess, tmp_path: Path
) -> None:
    before = _indexed(node)
    rows = LIMIT // 2048 + 64  # just over the limit
    status = _send(node, _instance(rows=rows))
    assert status.Status == 0xA700
    assert "max_instance_bytes" in str(status.ErrorComment)
    assert _tmp_files(node) == []
    assert _indexed(node) == before
    _assert_still_serving(node, tmp_path)


def _command_pdu(cx_id: int, sop_uid: str) -> bytes:
    """The P-DATA-TF PDU(s) carrying a C-STORE-RQ command set (pynetdicom encodes it)."""
    prim = C_STORE()
    prim.MessageID = 1
    prim.AffectedSOPClassUID = CTImageStorage
    prim.AffectedSOPInstanceUID = sop_uid
    prim.Priority = 2
    prim.DataSet = io.BytesIO(b"")
    msg = C_STORE_RQ()
    msg.primitive_to_message(prim)
    out = b""
    for p_data in msg.encode_msg(cx_id, PDU):
        for _, pdv in p_data.presentation_data_value_list:
            if pdv[0] & 1:  # command fragments only: the data set is streamed below
                out += _pdu([(cx_id, pdv)])
    return out


def _pdu(pdvs: list[tuple[int, bytes]]) -> bytes:
    body = b"".join(struct.pack(">LB", len(p) + 1, cx) + p for cx, p in pdvs)
    return struct.pack(">BBL", 0x04, 0, len(body)) + body


def _hostile_header(sop_uid: str) -> bytes:
    """The data set's elements, then a Pixel Data header declaring 3 GiB (explicit VR LE)."""
    ds = _instance(b"")
    ds.SOPInstanceUID = sop_uid
    del ds.PixelData
    encoded = encode(ds, False, True)
    assert encoded is not None
    return encoded + b"\xe0\x7f\x10\x00OW\x00\x00" + struct.pack("<L", DECLARED)


def _item(kind: int, value: bytes) -> bytes:
    return struct.pack(">BBH", kind, 0, len(value)) + value


def _open_association(node: NodeProcess) -> tuple[socket.socket, int]:
    """A-ASSOCIATE-RQ written by hand (PS3.8 9.3.2) on a raw socket; return it and the context."""
    context = _item(
        0x20,
        bytes([1, 0, 0, 0])
        + _item(0x30, CTImageStorage.encode())
        + _item(0x40, ExplicitVRLittleEndian.encode()),
    )
    user = _item(0x50, _item(0x51, struct.pack(">L", 16384)))
    body = (
        struct.pack(">HH", 1, 0)
        + b"AINODE".ljust(16)
        + b"STREAMTEST".ljust(16)
        + b"\0" * 32
        + _item(0x10, b"1.2.840.10008.3.1.1.1")
        + context
        + user
    )
    sock = socket.create_connection(("127.0.0.1", node.dicom_port), timeout=30)
    sock.sendall(struct.pack(">BBL", 0x01, 0, len(body)) + body)
    head = _recv_exact(sock, 6)
    assert head[0] == 0x02, head  # A-ASSOCIATE-AC
    ac = _recv_exact(sock, struct.unpack(">L", head[2:6])[0])
    at = ac.index(b"\x51\x00\x00\x04")
    assert struct.unpack(">L", ac[at + 4 : at + 8])[0] == PDU  # the node offers a bounded PDU
    at = ac.index(b"\x21\x00")
    assert ac[at + 4] == 1 and ac[at + 6] == 0  # context 1 accepted
    return sock, 1


def _recv_exact(sock: socket.socket, n: int) -> bytes:
    out = b""
    while len(out) < n:
        data = sock.recv(n - len(out))
        if not data:
            raise AssertionError("connection closed")
        out += data
    return out


def _stream_until_closed(sock: socket.socket, chunks: Iterator[bytes], budget: int) -> int:
    """Send until the node closes the connection; return the bytes sent (fail past budget)."""
    sock.settimeout(30)
    sent = 0
    try:
        for chunk in chunks:
            sock.sendall(chunk)
            sent += len(chunk)
            if sent > budget:
                raise AssertionError(f"the node read {sent} bytes and did not close")
    except (BrokenPipeError, ConnectionResetError):
        return sent
    raise AssertionError("the stream ended before the node closed it")


def _abort_received(sock: socket.socket) -> bytes:
    sock.settimeout(10)
    got = b""
    try:
        while True:
            data = sock.recv(65536)
            if not data:
                break
            got += data
    except (ConnectionResetError, TimeoutError):
        pass
    return got


@pytest.mark.slow
def test_a_hostile_multi_gigabyte_stream_is_aborted_in_flat_memory(
    node: NodeProcess, tmp_path: Path
) -> None:
    before_rss, before = _rss(node), _indexed(node)
    sock, cx_id = _open_association(node)
    sop_uid = generate_uid()
    zeros = b"\0" * (PDU - 64)
    peak = before_rss
    started = time.monotonic()

    def chunks() -> Iterator[bytes]:
        nonlocal peak
        yield _command_pdu(cx_id, sop_uid)
        yield _pdu([(cx_id, b"\x00" + _hostile_header(sop_uid))])
        n = 0
        while True:  # "3 GiB" of pixel data: only ever as much as the node reads
            yield _pdu([(cx_id, b"\x00" + zeros)])
            n += 1
            if n % 16 == 0:
                peak = max(peak, _rss(node))

    with sock:
        sent = _stream_until_closed(sock, chunks(), budget=LIMIT + 256 * 1024 * 1024)
        reply = _abort_received(sock)
    assert sent < LIMIT + 64 * 1024 * 1024 + 16 * PDU  # cut soon after the discard budget
    assert reply == b"" or reply[:1] == b"\x07"  # an A-ABORT PDU (or nothing: already closed)
    assert time.monotonic() - started < 120
    assert peak - before_rss < 48 * 1024 * 1024, (before_rss, peak)
    deadline = time.monotonic() + 10
    while _tmp_files(node) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert _tmp_files(node) == []
    assert _indexed(node) == before
    assert "store.aborted_oversize" in node.log_text()
    _assert_still_serving(node, tmp_path)


def test_a_pdu_declaring_gigabytes_closes_the_connection_unread(
    node: NodeProcess, tmp_path: Path
) -> None:
    before_rss = _rss(node)
    sock, cx_id = _open_association(node)
    with sock:
        header = struct.pack(">BBL", 0x04, 0, DECLARED)  # one P-DATA-TF PDU of 3 GiB
        payload = b"\0" * (1024 * 1024)

        def chunks() -> Iterator[bytes]:
            yield header
            while True:
                yield payload

        sent = _stream_until_closed(sock, chunks(), budget=128 * 1024 * 1024)
    assert sent < 128 * 1024 * 1024
    assert _rss(node) - before_rss < 32 * 1024 * 1024
    assert "association.pdu_too_large" in node.log_text()
    _assert_still_serving(node, tmp_path)
