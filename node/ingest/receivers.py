"""Several receiver processes on one DICOM port (``node.receivers``), one spool and index writer.

One Python process serves every association under one GIL.  With ``node.receivers: N`` (N > 1,
or ``auto``) the main process opens the listening socket itself and starts N receiver
processes (``python -m node.ingest.receivers``) that inherit it (pre-forked accept: the kernel
hands each new connection to whichever receiver accepts first).  A receiver runs pynetdicom
(the C-STORE SCP of ``node.ingest.scp``), writes each data set to ``data_dir/tmp`` as it arrives
(``node.ingest.receive``), parses its header, hashes it and gets its data to the device (the
per-instance CPU and I/O), then asks the main process to commit it.

The main process keeps everything else: the :class:`CommitServer` (a Unix socket in
``data_dir/run``, owner only, peers checked with ``SO_PEERCRED``) hands each request to the one
``Spool`` (``commit_received``), so the group commit still batches renames, the journal commit
and the index transaction across every association of every receiver; study assembly, routing
and HTTP see the instances through the spool's listeners as before.  A receiver answers 0x0000
only after the main process replied that the instance is committed, so an acknowledged
instance is durable and indexed whatever happens to the receiver afterwards.

:class:`ReceiverPool` supervises the receivers: one that dies (crash, ``kill -9``) is started
again, and the files it left in ``tmp/`` (never acknowledged) are removed once no request of
that receiver is still being committed.  Receivers die with the main process
(``PR_SET_PDEATHSIG``) and exit when its commit socket goes away.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import json
import logging
import os
import signal
import socket
import socketserver
import struct
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

from pydicom.dataset import Dataset

from node.errors import IngestError, MalformedInstanceError, OutOfResourcesError
from node.imaging.dicom_json import header_from_dataset
from node.ingest.durable import SyncMode, write_back
from node.ingest.header import Header, parse_received_file
from node.ingest.receive import ReceivedFile
from node.types import DicomJson

__all__ = ["CommitServer", "ReceiverPool", "RemoteSpool", "receiver_count"]

log = logging.getLogger(__name__)

_LEN = struct.Struct(">I")
_MAX_MESSAGE = 16 * 1024 * 1024
_ERRORS: dict[str, type[IngestError]] = {
    "OutOfResourcesError": OutOfResourcesError,
    "MalformedInstanceError": MalformedInstanceError,
}


def receiver_count(setting: int | str) -> int:
    """``node.receivers`` as a number: ``auto`` = the CPUs this process may use, at most 8."""
    if setting == "auto":
        try:
            cpus = len(os.sched_getaffinity(0))
        except (AttributeError, OSError):
            cpus = os.cpu_count() or 1
        return max(1, min(cpus, 8))
    return int(setting)


def _send(sock: socket.socket, message: dict[str, Any]) -> None:
    data = json.dumps(message, separators=(",", ":")).encode()
    sock.sendall(_LEN.pack(len(data)) + data)


def _recv(sock: socket.socket) -> dict[str, Any] | None:
    head = _exact(sock, _LEN.size)
    if head is None:
        return None
    (n,) = _LEN.unpack(head)
    if n > _MAX_MESSAGE:
        raise OSError("commit message too long")
    body = _exact(sock, n)
    if body is None:
        return None
    message: dict[str, Any] = json.loads(body)
    return message


def _exact(sock: socket.socket, n: int) -> bytes | None:
    buf = bytearray()
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            return None
        buf += chunk
    return bytes(buf)


# ------------------------------------------------------------------ main process side
class _Handler(socketserver.BaseRequestHandler):
    server: _UnixServer

    def handle(self) -> None:
        sock: socket.socket = self.request
        creds = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
        _pid, uid, _gid = struct.unpack("3i", creds)
        if uid != os.getuid():
            log.warning("receivers.foreign_peer", extra={"uid": uid})
            return
        owner = self.server.owner
        while True:
            try:
                message = _recv(sock)
            except (OSError, ValueError):
                return
            if message is None:
                return
            generation = str(message.get("generation", ""))
            owner.begin(generation)
            try:
                reply = owner.handle(message)
            finally:
                owner.end(generation)
            try:
                _send(sock, reply)
            except OSError:
                return  # the receiver died: the instance was not acknowledged to anyone


class _UnixServer(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    daemon_threads = True
    owner: CommitServer


class CommitServer:
    """The main process's end: commits what receivers wrote, forwards association events.

    Parameters
    ----------
    spool:
        The node's spool (``commit_received``, ``quarantine_received``).
    on_association:
        The node's association callback (audit), called with what receivers report.
    """

    def __init__(
        self, spool: Any, *, on_association: Callable[[str, dict[str, Any]], None] | None
    ) -> None:
        self.spool = spool
        self.on_association = on_association
        self._dir = Path(tempfile.mkdtemp(prefix="ainode-commit-"))
        self.path = self._dir / "commit.sock"
        self._server = _UnixServer(str(self.path), _Handler)
        os.chmod(self.path, 0o600)
        self._server.owner = self
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="commit-server", daemon=True
        )
        self._inflight: dict[str, int] = {}
        self._ready: set[str] = set()
        self._cond = threading.Condition()

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self.path.unlink(missing_ok=True)
        with contextlib.suppress(OSError):
            self._dir.rmdir()

    def begin(self, generation: str) -> None:
        with self._cond:
            self._inflight[generation] = self._inflight.get(generation, 0) + 1

    def end(self, generation: str) -> None:
        with self._cond:
            self._inflight[generation] -= 1
            self._cond.notify_all()

    def ready(self, generation: str) -> None:
        """A receiver of ``generation`` accepts associations."""
        with self._cond:
            self._ready.add(generation)
            self._cond.notify_all()

    def wait_ready(self, generations: list[str], timeout: float) -> bool:
        """Wait until every receiver of ``generations`` accepts associations."""
        with self._cond:
            return self._cond.wait_for(lambda: self._ready.issuperset(generations), timeout)

    def wait_idle(self, generation: str, timeout: float) -> bool:
        """Wait until no request of ``generation`` is being committed."""
        with self._cond:
            return self._cond.wait_for(lambda: not self._inflight.get(generation), timeout)

    def handle(self, message: dict[str, Any]) -> dict[str, Any]:
        op = message.get("op")
        try:
            if op == "store":
                return self._store(message)
            if op == "quarantine":
                self._quarantine(message)
                return {"ok": True}
            if op == "ready":
                self.ready(str(message.get("generation", "")))
                return {"ok": True}
            if op == "association":
                if self.on_association is not None:
                    self.on_association(str(message["outcome"]), dict(message["facts"]))
                return {"ok": True}
        except IngestError as exc:
            return {
                "ok": False,
                "error": type(exc).__name__,
                "message": str(exc),
                "status": exc.dicom_status,
            }
        except Exception:  # noqa: BLE001 - a bad request must not kill the commit server
            log.exception("receivers.commit_failed")
            return {"ok": False, "error": "IngestError", "message": "internal error", "status": 0}
        return {"ok": False, "error": "IngestError", "message": f"unknown op {op!r}", "status": 0}

    def _received(self, message: dict[str, Any]) -> ReceivedFile:
        f = message["file"]
        path = Path(f["path"])
        if path.parent != self.spool.tmp_dir or not path.name.endswith(".part"):
            raise IngestError("the receiver named a file outside tmp/")
        return ReceivedFile(
            path=path,
            size=int(f["size"]),
            dataset_offset=int(f["dataset_offset"]),
            sha256=str(f["sha256"]),
            dataset_sha256=str(f["dataset_sha256"]),
            free_before=int(f["free_before"]),
        )

    def _store(self, message: dict[str, Any]) -> dict[str, Any]:
        received = self._received(message)
        h = message["header"]
        header = Header(
            study_uid=h["study_uid"],
            series_uid=h["series_uid"],
            sop_uid=h["sop_uid"],
            sop_class_uid=h["sop_class_uid"],
            transfer_syntax_uid=h["transfer_syntax_uid"],
            modality=h["modality"],
            body_part=h["body_part"],
            series_description=h["series_description"],
            dataset=Dataset(),
        )
        outcome = self.spool.commit_received(
            header,
            received,
            series_header=message.get("series_header"),
            calling_aet=message.get("calling_aet"),
            source=str(message.get("source", "dimse")),
        )
        return {"ok": True, "status": outcome.status, "sop_uid": outcome.instance.sop_uid}

    def _quarantine(self, message: dict[str, Any]) -> None:
        received = self._received(message)
        exc_type = _ERRORS.get(str(message.get("error")), IngestError)
        exc = exc_type(str(message.get("message", "")))
        from node.ingest.quarantine import quarantine

        quarantine(
            self.spool.quarantine_dir,
            self.spool.index,
            received.path,
            exc,
            calling_aet=message.get("calling_aet"),
            source=str(message.get("source", "dimse")),
        )
        received.path.unlink(missing_ok=True)


class ReceiverPool:
    """N receiver processes accepting on one inherited listening socket (see module docstring).

    Parameters
    ----------
    config_json:
        The node's ``node`` config section as JSON (receivers read their settings from it).
    host, port:
        Where to listen (port 0: any free port; ``port`` is then the one bound).
    count:
        How many receivers.
    commit:
        The main process's commit server.
    sync_mode:
        The spool's resolved sync mode (receivers sync each file the same way).
    tmp_dir:
        The spool's ``tmp/``.
    """

    def __init__(
        self,
        *,
        config_json: str,
        host: str,
        port: int,
        count: int,
        commit: CommitServer,
        sync_mode: SyncMode,
        tmp_dir: Path,
    ) -> None:
        self.config_json = config_json
        self.count = count
        self.commit = commit
        self.sync_mode = sync_mode
        self.tmp_dir = tmp_dir
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self.sock = socket.socket(family, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind((host, port))
        self.sock.listen(128)
        self.port = int(self.sock.getsockname()[1])
        self._procs: list[subprocess.Popen[bytes] | None] = [None] * count
        self._generations = [""] * count
        self._stopping = threading.Event()
        self._lock = threading.Lock()
        self._watcher = threading.Thread(target=self._watch, name="receivers", daemon=True)
        self.restarts = 0

    def pids(self) -> list[int]:
        """Process ids of the running receivers."""
        with self._lock:
            return [p.pid for p in self._procs if p is not None and p.poll() is None]

    def _spawn(self, slot: int) -> None:
        generation = f"r{slot}-{os.getpid()}-{time.monotonic_ns()}"
        fd = self.sock.fileno()
        cmd = [
            sys.executable,
            "-m",
            "node.ingest.receivers",
            "--listen-fd",
            str(fd),
            "--commit",
            str(self.commit.path),
            "--generation",
            generation,
            "--sync",
            self.sync_mode,
        ]
        env = dict(os.environ, AINODE_RECEIVER_CONFIG=self.config_json)
        proc = subprocess.Popen(cmd, pass_fds=(fd,), env=env)
        with self._lock:
            self._procs[slot] = proc
            self._generations[slot] = generation
        log.info("receivers.started", extra={"slot": slot, "pid": proc.pid})

    def start(self, *, timeout: float = 120.0) -> None:
        """Start every receiver and return once each accepts associations.

        Raises
        ------
        OSError
            A receiver did not get ready within ``timeout`` seconds.
        """
        for slot in range(self.count):
            self._spawn(slot)
        with self._lock:
            generations = list(self._generations)
        if not self.commit.wait_ready(generations, timeout):
            self.stop()
            raise OSError(f"the DICOM receiver processes did not start within {timeout:.0f} s")
        self._watcher.start()

    def _watch(self) -> None:
        while not self._stopping.wait(0.2):
            for slot in range(self.count):
                with self._lock:
                    proc, generation = self._procs[slot], self._generations[slot]
                if proc is None or proc.poll() is None or self._stopping.is_set():
                    continue
                log.warning(
                    "receivers.died", extra={"slot": slot, "pid": proc.pid, "code": proc.returncode}
                )
                self.restarts += 1
                self._spawn(slot)
                threading.Thread(
                    target=self._clean, args=(generation,), name="receivers-clean", daemon=True
                ).start()

    def _clean(self, generation: str) -> None:
        """Remove what a dead receiver left in tmp/ (never acknowledged), once it is idle."""
        self.commit.wait_idle(generation, timeout=300)
        for stale in self.tmp_dir.glob(f"{generation}-*.part"):
            stale.unlink(missing_ok=True)

    def stop(self, grace_seconds: float = 0.0) -> None:
        """SIGTERM every receiver (they drain their associations), SIGKILL after the grace."""
        self._stopping.set()
        with self._lock:
            procs = [p for p in self._procs if p is not None]
        for p in procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + grace_seconds + 5
        for p in procs:
            try:
                p.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        self.sock.close()


# ------------------------------------------------------------------ receiver process side
class RemoteSpool:
    """What a receiver's DicomListener stores into: the main process's spool, over its socket."""

    def __init__(
        self, *, tmp_dir: Path, commit_path: Path, generation: str, sync_mode: SyncMode
    ) -> None:
        self.tmp_dir = tmp_dir
        self.tmp_prefix = generation + "-"
        self.commit_path = commit_path
        self.generation = generation
        self.sync_mode = sync_mode
        self._local = threading.local()
        self._series_seen: set[str] = set()
        self._seen_lock = threading.Lock()

    def _conn(self) -> socket.socket:
        sock: socket.socket | None = getattr(self._local, "sock", None)
        if sock is None:
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sock.connect(str(self.commit_path))
            self._local.sock = sock
        return sock

    def _ask(self, message: dict[str, Any]) -> dict[str, Any]:
        message["generation"] = self.generation
        try:
            sock = self._conn()
            _send(sock, message)
            reply = _recv(sock)
        except OSError as exc:
            self._local.sock = None
            raise IngestError(f"the node's main process is not answering: {exc}") from exc
        if reply is None:
            self._local.sock = None
            raise IngestError("the node's main process closed the connection")
        if not reply.get("ok"):
            exc_type = _ERRORS.get(str(reply.get("error")), IngestError)
            err = exc_type(str(reply.get("message", "")))
            if reply.get("status"):
                err.dicom_status = int(reply["status"])
            raise err
        return reply

    def ready(self) -> None:
        """Tell the main process this receiver accepts associations."""
        self._ask({"op": "ready"})

    def tell_association(self, outcome: str, facts: dict[str, Any]) -> None:
        try:
            self._ask({"op": "association", "outcome": outcome, "facts": facts})
        except IngestError:
            log.warning("receivers.association_not_reported")

    def store_received(
        self, received: ReceivedFile, fd: int | None, *, calling_aet: str | None, source: str
    ) -> Any:
        file = asdict(received)
        file["path"] = str(received.path)
        base = {"file": file, "calling_aet": calling_aet, "source": source}
        try:
            try:
                header = parse_received_file(received.path, received.size)
            except IngestError as exc:
                why = {"op": "quarantine", "error": type(exc).__name__, "message": str(exc)}
                self._ask(why | base)
                raise
            _sync(received.path, fd, self.sync_mode)
            series_header: DicomJson | None = None
            with self._seen_lock:
                first = header.series_uid not in self._series_seen
            if first:
                series_header = header_from_dataset(header.dataset)
            h = {
                "study_uid": header.study_uid,
                "series_uid": header.series_uid,
                "sop_uid": header.sop_uid,
                "sop_class_uid": header.sop_class_uid,
                "transfer_syntax_uid": header.transfer_syntax_uid,
                "modality": header.modality,
                "body_part": header.body_part,
                "series_description": header.series_description,
            }
            reply = self._ask({"op": "store", "header": h, "series_header": series_header} | base)
            with self._seen_lock:
                self._series_seen.add(header.series_uid)
            return _Outcome(reply)
        finally:
            received.path.unlink(missing_ok=True)  # renamed by the main process when stored

    def store(self, data: bytes, *, calling_aet: str | None, source: str) -> Any:
        """A data set pynetdicom kept in memory (not streamed): write it, then as above."""
        import hashlib
        import shutil
        import uuid

        from node.ingest.header import dataset_offset

        path = self.tmp_dir / f"{self.tmp_prefix}{uuid.uuid4().hex}.part"
        free = shutil.disk_usage(self.tmp_dir).free
        path.write_bytes(data)
        offset = dataset_offset(data)
        received = ReceivedFile(
            path=path,
            size=len(data),
            dataset_offset=offset,
            sha256=hashlib.sha256(data).hexdigest(),
            dataset_sha256=hashlib.sha256(memoryview(data)[offset:]).hexdigest(),
            free_before=free,
        )
        return self.store_received(received, None, calling_aet=calling_aet, source=source)


class _Outcome:
    """Enough of a StoreOutcome for the SCP's log line."""

    def __init__(self, reply: dict[str, Any]) -> None:
        self.status = str(reply.get("status"))
        self.instance = _SopOnly(str(reply.get("sop_uid")))


class _SopOnly:
    def __init__(self, sop_uid: str) -> None:
        self.sop_uid = sop_uid


def _sync(path: Path, fd: int | None, mode: SyncMode) -> None:
    own = fd is None
    try:
        if own:
            fd = os.open(path, os.O_RDONLY)
        assert fd is not None
        try:
            if mode == "journal":
                write_back(fd)
            else:
                os.fdatasync(fd)
        finally:
            if own:
                os.close(fd)
    except OSError as exc:
        if exc.errno in (28, 122):  # ENOSPC, EDQUOT
            raise OutOfResourcesError("disk full while writing the instance") from exc
        raise IngestError(f"cannot write the instance: {exc.strerror}") from exc


def _die_with_parent() -> None:
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def main(argv: list[str] | None = None) -> int:
    """A receiver process (started by ReceiverPool; not a user command)."""
    ap = argparse.ArgumentParser(prog="python -m node.ingest.receivers")
    ap.add_argument("--listen-fd", type=int, required=True)
    ap.add_argument("--commit", type=Path, required=True)
    ap.add_argument("--generation", required=True)
    ap.add_argument("--sync", choices=["full", "journal"], required=True)
    args = ap.parse_args(argv)
    _die_with_parent()

    import pydicom.config

    from node.config import NodeConfig
    from node.ingest.scp import DicomListener, ListenerSettings, allowed
    from node.log import configure

    configure(json_lines=True, level="INFO")
    logging.getLogger("pydicom").setLevel(logging.ERROR)
    import warnings

    warnings.filterwarnings("ignore", module=r"pydicom(\.|$)")
    pydicom.config.settings.reading_validation_mode = pydicom.config.IGNORE
    pydicom.config.settings.writing_validation_mode = pydicom.config.IGNORE

    n = NodeConfig.model_validate_json(os.environ["AINODE_RECEIVER_CONFIG"])
    spool = RemoteSpool(
        tmp_dir=n.data_dir / "tmp",
        commit_path=args.commit,
        generation=args.generation,
        sync_mode=args.sync,
    )
    listener = DicomListener(
        ListenerSettings(
            ae_title=n.ae_title,
            host=n.host,
            port=n.dicom_port,
            allowed_calling_aets=allowed(n.allowed_calling_aets),
            max_associations=n.max_associations,
            max_pdu=n.max_pdu,
            network_timeout_seconds=n.network_timeout_seconds,
            max_instance_bytes=n.max_instance_bytes,
        ),
        spool,  # type: ignore[arg-type]
        on_association=spool.tell_association,
    )
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    listen = socket.socket(fileno=args.listen_fd)
    listener.start_on(listen)
    try:
        spool.ready()
    except IngestError:
        return 1  # the main process is gone
    while not stop.wait(1.0):
        if not args.commit.exists():  # the main process is gone
            break
    listener.stop_accepting()
    deadline = time.monotonic() + n.shutdown_grace_seconds
    while listener.open_associations() and time.monotonic() < deadline:
        time.sleep(0.05)
    listener.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
