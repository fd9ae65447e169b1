"""The embedded job engine: worker *processes* fed from the SQLite queue.

Each worker slot is a thread in the node that owns one long-lived child process (spawned, so no
torch state is forked).  The slot claims the most urgent job, hands it to its child and waits
with a deadline; a child that raises fails the job with the exception text, a child that dies
(segfault, OOM kill, ``os._exit``) or overruns the per-job timeout or memory limit is killed and
replaced, and the job fails with that reason — the node itself never goes down with a model.

The engine only knows ``JobStore`` and a runner named ``"module:function"`` that the child
imports; a distributed engine can take its place behind the same ``JobEngine`` protocol.
"""

from __future__ import annotations

import contextlib
import importlib
import logging
import multiprocessing as mp
import os
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from typing import Any, Protocol

from node.errors import InputError
from node.jobs.store import JobStore
from node.types import Job, JobState

__all__ = ["EmbeddedEngine", "JobEngine", "Runner"]

log = logging.getLogger(__name__)

#: A runner: ``runner(job, context) -> outputs`` (JSON-able mapping), run in a worker process.
Runner = Callable[[Job, Mapping[str, Any]], Mapping[str, Any]]


class JobEngine(Protocol):
    """What the node needs from a job engine (embedded or distributed)."""

    def start(self) -> None: ...

    def stop(self) -> None: ...

    def wake(self) -> None: ...


def _load_runner(path: str) -> Runner:
    module, _, name = path.partition(":")
    fn: Runner = getattr(importlib.import_module(module), name)
    return fn


def _child_main(
    conn: Connection,
    runner_path: str,
    context: Mapping[str, Any],
    prepare_path: str | None = None,
) -> None:
    """Worker process: warm up, say ready, then run jobs sent over ``conn`` until it is closed."""
    try:
        runner = _load_runner(runner_path)
        if prepare_path:
            prepare: Callable[[Mapping[str, Any]], object] = _load_runner(prepare_path)  # type: ignore[assignment]
            prepare(context)
    except BaseException as exc:  # noqa: BLE001 - reported to the node as the start failure
        with contextlib.suppress(OSError):  # the node may have gone away meanwhile
            conn.send(("failed", f"{type(exc).__name__}: {exc}"))
        return
    try:
        conn.send(("ready", os.getpid()))
    except OSError:
        return  # the node went away while this worker started
    while True:
        try:
            job = conn.recv()
        except (EOFError, OSError):
            return
        try:
            reply: tuple[str, Any] = ("ok", dict(runner(job, context)))
        except InputError as exc:
            reply = ("input", str(exc))
        except BaseException as exc:  # noqa: BLE001 - every failure becomes the job's reason
            reply = ("error", f"{type(exc).__name__}: {exc}")
        try:
            conn.send(reply)
        except OSError:
            # the node went away (killed): nobody waits for this result; the job was left
            # running in the queue and is re-run by the next node process
            return


def _rss_bytes(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


@dataclass
class _Slot:
    name: str
    process: Any = None
    conn: Connection | None = None
    current: Job | None = None
    started: float = 0.0
    busy_models: dict[str, int] = field(default_factory=dict)


class EmbeddedEngine:
    """A pool of worker processes draining the job queue.

    Parameters
    ----------
    store:
        The durable queue.
    runner:
        ``"module:function"`` run in the children for every job.
    context:
        Picklable settings handed to every runner call (config, data_dir...).
    workers:
        Number of worker processes.
    timeout_seconds:
        A job running longer is killed and failed.
    memory_limit_bytes:
        A child whose RSS exceeds this is killed and its job failed (None: no limit).
    model_limits:
        Maximum concurrent jobs per model name.
    on_success:
        Called in the node with (job, outputs) before the job is marked succeeded, e.g. to
        queue deliveries; if it raises, the job fails with that reason and is retried.
    prepare:
        ``"module:function"`` called with ``context`` once in every new worker process before
        it takes a job (imports, model discovery), so that start-up does not count against
        ``timeout_seconds``.
    start_timeout_seconds:
        A worker that is not ready after this long is killed and the job fails.
    """

    def __init__(
        self,
        store: JobStore,
        *,
        runner: str,
        context: Mapping[str, Any] | None = None,
        workers: int = 1,
        timeout_seconds: float = 1800.0,
        memory_limit_bytes: int | None = None,
        model_limits: Mapping[str, int] | None = None,
        on_success: Callable[[Job, Mapping[str, Any]], None] | None = None,
        prepare: str | None = None,
        start_timeout_seconds: float = 300.0,
    ) -> None:
        self._store = store
        self._runner = runner
        self._prepare = prepare
        self._start_timeout = start_timeout_seconds
        self._context = dict(context or {})
        self._timeout = timeout_seconds
        self._memory_limit = memory_limit_bytes
        self._model_limits = dict(model_limits or {})
        self._on_success = on_success
        self._slots = [_Slot(f"embedded-{os.getpid()}-{i}") for i in range(workers)]
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._draining = threading.Event()
        self._threads: list[threading.Thread] = []
        self._busy: dict[str, int] = {}
        self._busy_lock = threading.Lock()
        self._mp = mp.get_context("spawn")

    # ------------------------------------------------------------------------------ control
    def start(self) -> None:
        """Re-queue jobs a previous process left running, then start the worker slots."""
        requeued = self._store.requeue_running()
        if requeued:
            log.info("jobs.requeued", extra={"count": len(requeued)})
        for slot in self._slots:
            t = threading.Thread(target=self._slot_loop, args=(slot,), name=slot.name, daemon=True)
            t.start()
            self._threads.append(t)

    def stop(self, timeout: float = 10.0) -> None:
        """Stop claiming; kill children (a running job goes back to the queue on restart)."""
        self._stopping.set()
        self._wake.set()
        for slot in self._slots:
            self._kill_child(slot)
        for t in self._threads:
            t.join(timeout)

    def wake(self) -> None:
        """Tell idle slots that new jobs are queued."""
        self._wake.set()

    def drain(self, timeout: float) -> list[str]:
        """Stop claiming jobs and wait up to ``timeout`` s for the running ones to finish.

        Returns the ids of jobs still running at the deadline (``stop()`` then kills their
        workers, and the next start re-queues them).
        """
        self._draining.set()
        deadline = time.monotonic() + timeout
        while True:
            left = list(self.running())
            if not left or time.monotonic() >= deadline:
                return left
            time.sleep(0.05)

    def running(self) -> dict[str, str]:
        """job_id -> worker slot name, for jobs running now."""
        return {s.current.job_id: s.name for s in self._slots if s.current is not None}

    # ------------------------------------------------------------------------------ slots
    def _spawn(self, slot: _Slot) -> str | None:
        """Start the slot's worker and wait until it is ready; the failure reason, or None."""
        parent, child = self._mp.Pipe(duplex=True)
        proc = self._mp.Process(
            target=_child_main,
            args=(child, self._runner, self._context, self._prepare),
            name=f"ainode-worker-{slot.name}",
            daemon=True,
        )
        t0 = time.monotonic()
        proc.start()
        child.close()
        slot.process, slot.conn = proc, parent
        deadline = t0 + self._start_timeout
        while not self._stopping.is_set():
            try:
                ready = parent.poll(0.2)
                message = parent.recv() if ready else None
            except (EOFError, OSError, ValueError):
                return f"worker process failed to start: {self._death_reason(slot)}"
            if message is not None:
                kind, payload = message
                if kind == "ready":
                    log.info(
                        "worker.started",
                        extra={
                            "worker": slot.name,
                            "pid": proc.pid,
                            "seconds": round(time.monotonic() - t0, 3),
                        },
                    )
                    return None
                self._kill_child(slot)
                return f"worker process failed to start: {payload}"
            if not proc.is_alive():
                return f"worker process failed to start: {self._death_reason(slot)}"
            if time.monotonic() > deadline:
                self._kill_child(slot)
                return f"worker process not ready after {self._start_timeout:g} s (killed)"
        return "node stopping"

    def _kill_child(self, slot: _Slot) -> None:
        proc = slot.process
        if slot.conn is not None:
            slot.conn.close()
        if proc is not None and proc.is_alive():
            proc.kill()
            proc.join(5)
        slot.process, slot.conn = None, None

    def _claim(self, slot: _Slot) -> Job | None:
        with self._busy_lock:
            job = self._store.claim(
                slot.name, busy_models=self._busy, model_limits=self._model_limits
            )
            if job is not None:
                self._busy[job.model] = self._busy.get(job.model, 0) + 1
                slot.current = job  # visible to drain() before the worker is (re)spawned
        return job

    def _release(self, job: Job) -> None:
        with self._busy_lock:
            self._busy[job.model] = max(0, self._busy.get(job.model, 0) - 1)

    def _slot_loop(self, slot: _Slot) -> None:
        while not self._stopping.is_set():
            if self._draining.is_set():
                self._wake.wait(0.5)
                continue
            try:
                job = self._claim(slot)
            except Exception:
                log.exception("jobs.claim_failed", extra={"worker": slot.name})
                job = None
            if job is None:
                self._wake.wait(0.5)
                self._wake.clear()
                continue
            try:
                ok, reason, outputs = self._run(slot, job)
                if self._stopping.is_set() and not ok:
                    continue  # interrupted by shutdown: the job is re-queued at next start
                if ok and self._store.get(job.job_id).state is not JobState.RUNNING:
                    # cancelled while the model ran: its results are not delivered
                    ok = False
                elif ok and self._on_success is not None:
                    try:
                        self._on_success(job, outputs)
                    except Exception as exc:
                        ok, reason = False, f"after the model ran: {type(exc).__name__}: {exc}"
                        log.exception("jobs.on_success_failed", extra={"job_id": job.job_id})
                final = bool(outputs.pop("final", False)) if not ok else False
                state = self._store.finish(
                    job.job_id, ok=ok, reason=reason, outputs=outputs or None, final=final
                )
                log.info(
                    "job.finished",
                    extra={"job_id": job.job_id, "model": job.model, "state": state.value},
                )
                if state is JobState.QUEUED:
                    self._wake.set()
            finally:
                slot.current = None
                self._release(job)

    def _run(self, slot: _Slot, job: Job) -> tuple[bool, str | None, dict[str, Any]]:
        if slot.process is None or not slot.process.is_alive():
            failure = self._spawn(slot)
            if failure is not None:
                return False, failure, {}
        assert slot.conn is not None and slot.process is not None
        # local references: stop() may close and clear the slot's from another thread
        conn, proc = slot.conn, slot.process
        slot.current, slot.started = job, time.monotonic()
        log.info("job.started", extra={"job_id": job.job_id, "model": job.model})
        try:
            conn.send(job)
        except (OSError, BrokenPipeError):
            self._kill_child(slot)
            return False, "worker process was not reachable", {}
        deadline = slot.started + self._timeout
        while True:
            if self._stopping.is_set():
                return False, "node stopping", {}
            try:
                ready = conn.poll(0.2)
            except (OSError, EOFError, ValueError):
                ready = False
            if ready:
                try:
                    kind, payload = conn.recv()
                except (EOFError, OSError, ValueError):
                    return False, self._death_reason(slot), {}
                if kind == "ok":
                    return True, "done", dict(payload)
                if kind == "input":
                    return False, str(payload), {"final": True}
                return False, str(payload), {}
            if not proc.is_alive():
                return False, self._death_reason(slot), {}
            if time.monotonic() > deadline:
                self._kill_child(slot)
                return False, f"timed out after {self._timeout:g} s (worker killed)", {}
            if self._memory_limit is not None:
                rss = _rss_bytes(slot.process.pid)
                if rss > self._memory_limit:
                    self._kill_child(slot)
                    return (
                        False,
                        (
                            f"worker used {rss // 2**20} MiB, over the memory limit of "
                            f"{self._memory_limit // 2**20} MiB (worker killed)"
                        ),
                        {},
                    )

    def _death_reason(self, slot: _Slot) -> str:
        proc = slot.process
        if proc is not None:
            proc.join(5)
        code = proc.exitcode if proc is not None else None
        self._kill_child(slot)
        if code is not None and code < 0:
            import signal

            try:
                name = signal.Signals(-code).name
            except ValueError:
                name = str(-code)
            return f"worker process was killed by {name} while running the model"
        return f"worker process exited with status {code} while running the model"
