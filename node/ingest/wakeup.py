"""Event-driven wake-ups for pynetdicom's association threads (latency and CPU).

pynetdicom 3 runs two polling loops per association: the DUL thread sleeps 1 ms whenever it
found nothing to do, and the association reactor sleeps 1 ms before every look at its queue.  A
C-STORE therefore waits for up to three such sleeps (PDU arrives, DIMSE message handed to the
reactor, response handed back to the DUL), and on a loaded machine each wake-up from a sleep costs
far more than 1 ms; the idle loops also burn CPU at 1 kHz per thread.  A storage SCU waits for
every response before it sends the next instance (PS3.7 9.1.1), so this latency is paid once per
instance.

``make_responsive(assoc)`` (called from ``EVT_CONN_OPEN``, before the association's threads
start) makes both loops block on what they are waiting for instead:

* the DUL thread waits in ``select`` on its socket *and* a wake pipe, which is written whenever
  the association puts a primitive (our C-STORE response) on the DUL's outgoing queue;
* the association reactor waits on an ``Event`` set whenever a DIMSE message or an A-RELEASE /
  A-ABORT indication is queued for it.

Both waits are bounded (``IDLE_WAIT_SECONDS``) so timers and kill flags are still honoured.
Nothing of the protocol changes: the same pynetdicom code runs, only its idle waits differ.
"""

from __future__ import annotations

import contextlib
import os
import queue
import select
import ssl
import threading
import time
import weakref
from types import ModuleType
from typing import Any

import pynetdicom.association
from pynetdicom.association import Association
from pynetdicom.transport import AssociationSocket

__all__ = ["IDLE_WAIT_SECONDS", "make_responsive"]

#: Longest an idle loop waits before re-checking timers and kill flags.
IDLE_WAIT_SECONDS = 0.02

#: The association reactor's per-loop delay in pynetdicom 3 (``Association._run_reactor``).
_REACTOR_DELAY = 0.001


class _SignallingQueue(queue.Queue):  # type: ignore[type-arg]
    """A ``queue.Queue`` that calls ``_ainode_signal()`` after every put."""

    _ainode_signal: Any

    def put(self, item: Any, block: bool = True, timeout: float | None = None) -> None:
        super().put(item, block, timeout)
        self._ainode_signal()


class _WakeableSocket(AssociationSocket):
    """An AssociationSocket whose ``ready`` waits (bounded) for data or a wake-up."""

    _ainode_wake_r: int
    _ainode_wake_w: int
    _ainode_close_pipe: Any

    @property
    def ready(self) -> bool:
        sock = self.socket
        if sock is None or self._is_connected is False:
            return False
        if isinstance(sock, ssl.SSLSocket) and sock.pending():
            return True
        try:
            watched: list[Any] = [sock, self._ainode_wake_r]
            readable, _, _ = select.select(watched, [], [], IDLE_WAIT_SECONDS)
        except (OSError, ValueError):
            # closed meanwhile: let pynetdicom's own check report it (Evt17)
            return bool(AssociationSocket.ready.fget(self))  # type: ignore[attr-defined]
        if self._ainode_wake_r in readable:
            with contextlib.suppress(BlockingIOError, OSError):
                os.read(self._ainode_wake_r, 4096)
        return sock in readable

    def wake(self) -> None:
        """Interrupt a waiting ``ready`` (called from other threads)."""
        with contextlib.suppress(BlockingIOError, OSError):
            os.write(self._ainode_wake_w, b"\0")

    def close(self) -> None:
        super().close()
        self._ainode_close_pipe()


def _close_fds(*fds: int) -> None:
    for fd in fds:
        with contextlib.suppress(OSError):
            os.close(fd)


class _ReactorTime(ModuleType):
    """Stands in for ``time`` inside ``pynetdicom.association``: the reactor's 1 ms poll sleep
    becomes a wait on the association's wake event; every other use is the real ``time``."""

    def __getattr__(self, name: str) -> Any:
        return getattr(time, name)

    @staticmethod
    def sleep(seconds: float) -> None:
        wake: threading.Event | None = getattr(threading.current_thread(), "_ainode_wake", None)
        if wake is None or seconds != _REACTOR_DELAY:
            time.sleep(seconds)
            return
        wake.wait(IDLE_WAIT_SECONDS)
        wake.clear()  # queues are filled before the event is set: nothing is lost


_install_lock = threading.Lock()


def _install_reactor_time() -> None:
    with _install_lock:
        if not isinstance(pynetdicom.association.time, _ReactorTime):  # type: ignore[attr-defined]
            pynetdicom.association.time = _ReactorTime("time")  # type: ignore[attr-defined]


def make_responsive(assoc: Association) -> bool:
    """Replace the idle polling of ``assoc``'s DUL and reactor threads by event waits.

    Must be called before the association's threads start (``EVT_CONN_OPEN`` on an acceptor).
    Returns False, changing nothing, when pynetdicom's internals are not what this expects.
    """
    dul = assoc.dul
    sock = dul.socket
    if (
        type(sock) is not AssociationSocket
        or type(dul.to_provider_queue) is not queue.Queue
        or type(dul.to_user_queue) is not queue.Queue
        or type(assoc.dimse.msg_queue) is not queue.Queue
        or not hasattr(dul, "_run_loop_delay")
    ):
        return False
    _install_reactor_time()

    wake_r, wake_w = os.pipe()
    os.set_blocking(wake_r, False)
    os.set_blocking(wake_w, False)
    sock.__class__ = _WakeableSocket
    wsock: _WakeableSocket = sock  # type: ignore[assignment]
    wsock._ainode_wake_r, wsock._ainode_wake_w = wake_r, wake_w
    wsock._ainode_close_pipe = weakref.finalize(wsock, _close_fds, wake_r, wake_w)

    dul.to_provider_queue.__class__ = _SignallingQueue
    dul.to_provider_queue._ainode_signal = wsock.wake  # type: ignore[attr-defined]
    dul._run_loop_delay = 0.0  # the bounded select is the idle wait now

    event = threading.Event()
    assoc._ainode_wake = event  # type: ignore[attr-defined]
    queues: list[Any] = [assoc.dimse.msg_queue, dul.to_user_queue]
    for q in queues:
        q.__class__ = _SignallingQueue
        q._ainode_signal = event.set
    return True
