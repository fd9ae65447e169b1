"""Stage 2, assembly: decide when a study is complete.

A study is complete when no instance arrived for ``stable_seconds``; ``complete(uid)`` forces it.
An instance arriving after completion re-opens the study (the index records ``study-reopened``
in the same transaction that stores the instance) and a later completion emits a new
``Study`` with the next ``generation``.  State lives in the index, so ``start()`` rebuilds every
timer from the open studies' last arrival times: completion survives a restart.
"""

from __future__ import annotations

import heapq
import logging
import threading
import time
from collections.abc import Callable

from node.errors import NotFoundError
from node.store.index import Index
from node.types import Instance, Study

__all__ = ["StudyTracker"]

log = logging.getLogger(__name__)


class StudyTracker:
    """Stable-window completion of studies, with forced completion and re-opening.

    Parameters
    ----------
    index:
        The index holding study state (``open``/``complete``) and last arrival times.
    stable_seconds:
        Quiet time after the last instance before a study is complete.
    on_complete:
        Called (from the tracker's thread, or the caller's for ``complete``) with each completed
        ``Study``; exceptions are logged, never propagated.
    """

    def __init__(
        self,
        index: Index,
        *,
        stable_seconds: float,
        on_complete: Callable[[Study], None],
    ) -> None:
        self.index = index
        self.stable_seconds = stable_seconds
        self.on_complete = on_complete
        self._cond = threading.Condition()
        self._heap: list[tuple[float, str]] = []
        self._last: dict[str, float] = {}
        #: studies with an entry in ``_heap`` (one each: an instance moves ``_last``, not the
        #: heap; an entry popped before its study is due is pushed back at the new deadline)
        self._queued: set[str] = set()
        self._thread: threading.Thread | None = None
        self._stopping = False

    # ------------------------------------------------------------ life cycle
    def start(self) -> None:
        """Rebuild timers of every open study from the index and start the timer thread."""
        with self._cond:
            if self._thread is not None:
                return
            self._stopping = False
            for study_uid, last in self.index.open_studies():
                self._schedule(study_uid, last)
            self._thread = threading.Thread(target=self._run, name="study-tracker", daemon=True)
            self._thread.start()
        log.info("assembly.started", extra={"open_studies": len(self._last)})

    def stop(self) -> None:
        """Stop the timer thread (pending timers are rebuilt from the index at next start)."""
        with self._cond:
            self._stopping = True
            thread, self._thread = self._thread, None
            self._cond.notify_all()
        if thread is not None:
            thread.join(timeout=10)

    # ------------------------------------------------------------ events
    def instance_stored(self, instance: Instance) -> None:
        """Note an arrival: (re)start the study's stable window."""
        self._schedule(instance.study_uid, time.time())

    def _schedule(self, study_uid: str, last: float) -> None:
        with self._cond:
            self._last[study_uid] = max(last, self._last.get(study_uid, 0.0))
            if study_uid not in self._queued:
                self._queued.add(study_uid)
                deadline = self._last[study_uid] + self.stable_seconds
                heapq.heappush(self._heap, (deadline, study_uid))
                self._cond.notify_all()

    def complete(self, study_uid: str, *, background: bool = False) -> int | None:
        """Force completion now; return the new generation, or None if already complete.

        With ``background`` the completion is recorded before returning and the consumers
        (routing) run on a thread of their own: an HTTP request is not held while routing waits
        for the models to be described.  A node stopped before routing ran routes the study
        at its next start (it is complete and not routed).

        Raises
        ------
        NotFoundError
            No instance of ``study_uid`` was ever received.
        """
        if self.index.study_row(study_uid) is None:
            raise NotFoundError(f"study {study_uid} is not known to this node")
        return self._complete(study_uid, forced=True, idle_since=None, background=background)

    def _complete(
        self,
        study_uid: str,
        *,
        forced: bool,
        idle_since: float | None,
        background: bool = False,
    ) -> int | None:
        generation = self.index.mark_complete(study_uid, forced=forced, if_idle_since=idle_since)
        if generation is None:
            return None
        with self._cond:
            self._last.pop(study_uid, None)
        study = self.index.get_study(study_uid)
        log.info(
            "study.completed",
            extra={"study_uid": study_uid, "generation": generation, "forced": forced},
        )
        if study is not None:
            if background:
                threading.Thread(
                    target=self._notify, args=(study,), name="study-complete", daemon=True
                ).start()
            else:
                self._notify(study)
        return generation

    def _notify(self, study: Study) -> None:
        try:
            self.on_complete(study)
        except Exception:  # noqa: BLE001 - a consumer's failure must not stop assembly
            log.exception("study.on_complete_failed", extra={"study_uid": study.study_uid})

    # ------------------------------------------------------------ timer thread
    def _run(self) -> None:
        while True:
            with self._cond:
                if self._stopping:
                    return
                now = time.time()
                due: list[tuple[str, float]] = []
                while self._heap and self._heap[0][0] <= now:
                    _, uid = heapq.heappop(self._heap)
                    last = self._last.get(uid)
                    if last is None:  # completed meanwhile (forced)
                        self._queued.discard(uid)
                    elif last + self.stable_seconds <= now:
                        due.append((uid, last))
                        self._last.pop(uid, None)
                        self._queued.discard(uid)
                    else:  # newer instances arrived: wait for the new deadline
                        heapq.heappush(self._heap, (last + self.stable_seconds, uid))
                if not due:
                    timeout = (self._heap[0][0] - now) if self._heap else None
                    self._cond.wait(timeout=None if timeout is None else max(timeout, 0.01))
                    continue
            for uid, _last in due:
                try:
                    # the index decides: a just-committed instance (later last_received) wins
                    if self._complete(uid, forced=False, idle_since=now - self.stable_seconds) is (
                        None
                    ):
                        self._reschedule_from_index(uid)
                except Exception:  # noqa: BLE001 - keep the timer thread alive
                    log.exception("study.complete_failed", extra={"study_uid": uid})

    def _reschedule_from_index(self, study_uid: str) -> None:
        row = self.index.study_row(study_uid)
        if row is not None and row["state"] == "open":
            self._schedule(study_uid, float(row["last_received"]))
