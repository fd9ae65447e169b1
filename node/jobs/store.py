"""The durable job queue: one row per job, one event row per state transition (SQLite, WAL).

A job's id is derived from what it runs on — study, rule, model and the exact input instances —
so a study that completes again with the same inputs does not run the same job twice, while new
inputs (a late instance) make a new job that supersedes the earlier one of the same rule+model.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from node.errors import NotFoundError
from node.store.migrate import migrate
from node.store.sqlite import ThreadConnections
from node.types import (
    COMBINE_MODEL,
    PRIOR_FAILED,
    Job,
    JobState,
    PriorOutcome,
    PriorState,
    ResultObject,
    job_id_for,
)

# COMBINE_MODEL and job_id_for live in node.types (routing plans jobs with them); the queue
# re-exports them for its own callers
__all__ = ["COMBINE_MODEL", "RETIRED_PREFIX", "JobRecord", "JobStore", "job_id_for", "rerun_reason"]

_STEPS = [
    """
    CREATE TABLE jobs (
        job_id TEXT PRIMARY KEY,
        study_uid TEXT NOT NULL,
        rule TEXT NOT NULL,
        model TEXT NOT NULL,
        series_uids TEXT NOT NULL,
        parameters TEXT NOT NULL,
        destinations TEXT NOT NULL,
        priority INTEGER NOT NULL DEFAULT 0,
        state TEXT NOT NULL,
        attempts INTEGER NOT NULL DEFAULT 0,
        max_attempts INTEGER NOT NULL DEFAULT 3,
        reason TEXT,
        worker TEXT,
        created_at REAL NOT NULL,
        updated_at REAL NOT NULL,
        started_at REAL,
        finished_at REAL,
        superseded_by TEXT,
        outputs TEXT
    );
    CREATE INDEX jobs_state ON jobs(state, priority, created_at);
    CREATE INDEX jobs_study ON jobs(study_uid);
    CREATE TABLE job_events (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        job_id TEXT NOT NULL,
        ts REAL NOT NULL,
        state TEXT NOT NULL,
        reason TEXT
    );
    CREATE INDEX job_events_job ON job_events(job_id)
    """,
    """
    CREATE TABLE routings (
        study_uid TEXT NOT NULL,
        generation INTEGER NOT NULL,
        routed_at REAL NOT NULL,
        rules_sha256 TEXT NOT NULL,
        decisions TEXT NOT NULL,
        PRIMARY KEY (study_uid, generation)
    )
    """,
    """
    CREATE TABLE job_publications (
        job_id TEXT PRIMARY KEY,
        queued_event INTEGER NOT NULL,
        published_at REAL NOT NULL,
        queue TEXT NOT NULL
    )
    """,
    # 4: the prior study of a rule with ``priors`` (issue 21): the job waits (is not claimed
    # nor published) while ``prior_deadline`` is set and in the future
    """
    ALTER TABLE jobs ADD COLUMN prior TEXT;
    ALTER TABLE jobs ADD COLUMN prior_deadline REAL;
    CREATE INDEX jobs_prior_wait ON jobs(prior_deadline) WHERE prior_deadline IS NOT NULL
    """,
]

_ACTIVE = (JobState.QUEUED.value, JobState.RUNNING.value)


#: ``superseded_by`` of a job that a re-routing no longer asked for (``JobStore.retire``)
RETIRED_PREFIX = "rerouted:"

#: Job parameters that, when a re-routing changes them, make a finished job of the same id run
#: again: the model version(s) it ran with and its place in a combined result set.
_RERUN_KEYS = ("_model_version", "_model_versions", "_combined_by")


def rerun_reason(stored: Mapping[str, Any], routed: Mapping[str, Any]) -> str | None:
    """Why a finished job must run again under a new routing's ``routed`` parameters, or None.

    The rule's own parameters (keys without ``_``), the model version (``_model_version``; a
    combined job's ``_model_versions``) and the combined set it belongs to (``_combined_by``)
    count; the other ``_`` keys are bookkeeping of one routing (creation time, series numbers).
    A version unknown on either side (a job stored before versions were recorded, a model the
    router could not describe) is not a change.
    """
    for key in _RERUN_KEYS:
        old, new = stored.get(key), routed.get(key)
        if key != "_combined_by" and (old is None or new is None):
            continue
        if old != new:
            return {
                "_model_version": f"model version {old} -> {new}",
                "_model_versions": "model versions changed",
                "_combined_by": "combined result set changed",
            }[key]
    own = {k: v for k, v in stored.items() if not k.startswith("_")}
    if own != {k: v for k, v in routed.items() if not k.startswith("_")}:
        return "rule parameters changed"
    return None


@dataclass(frozen=True, slots=True)
class JobRecord:
    """A job with its current state, as stored."""

    job: Job
    state: JobState
    attempts: int
    max_attempts: int
    reason: str | None
    worker: str | None
    created_at: float
    updated_at: float
    started_at: float | None
    finished_at: float | None
    superseded_by: str | None
    outputs: Mapping[str, Any]

    def to_json(self) -> dict[str, Any]:
        """Plain JSON form for the CLI and the API."""
        j = self.job
        return {
            "job_id": j.job_id,
            "study_uid": j.study_uid,
            "series_uids": list(j.series_uids),
            "model": j.model,
            "rule": j.rule,
            "parameters": j.stored_parameters(),
            "destinations": list(j.destinations),
            "priority": j.priority,
            "state": self.state.value,
            "attempts": self.attempts,
            "max_attempts": self.max_attempts,
            "reason": self.reason,
            "worker": self.worker,
            "created_at": self.created_at,
            "updated_at": self.updated_at,
            "started_at": self.started_at,
            "finished_at": self.finished_at,
            "superseded_by": self.superseded_by,
            "outputs": dict(self.outputs),
            "prior": j.prior.to_json() if j.prior is not None else None,
        }


class JobStore:
    """Jobs and their transitions in the node's SQLite index file."""

    def __init__(self, db_path: Path) -> None:
        self._db = ThreadConnections(db_path)
        self._lock = threading.Lock()
        with self._lock:
            migrate(self._conn(), "jobs", _STEPS)

    def _conn(self) -> sqlite3.Connection:
        return self._db.conn()

    # ----------------------------------------------------------------------------- writing
    def submit(self, jobs: Iterable[Job], *, max_attempts: int = 3) -> list[str]:
        """Queue ``jobs`` (ids already deterministic); return the ids that were new.

        A job whose id is already stored is left alone (same inputs, same work).  Jobs of the
        same study, rule, model and series with other ids (older inputs) are marked superseded
        by the new one; a queued one is cancelled, a running one finishes but is stale.
        """
        now = time.time()
        new: list[str] = []
        conn = self._conn()
        with self._lock:
            conn.execute("BEGIN IMMEDIATE")
            try:
                for job in jobs:
                    cur = conn.execute(
                        "INSERT OR IGNORE INTO jobs(job_id, study_uid, rule, model, series_uids,"
                        " parameters, destinations, priority, state, max_attempts, created_at,"
                        " updated_at, prior, prior_deadline) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                        (
                            job.job_id,
                            job.study_uid,
                            job.rule,
                            job.model,
                            json.dumps(list(job.series_uids)),
                            json.dumps(job.stored_parameters(), sort_keys=True),
                            json.dumps(list(job.destinations)),
                            job.priority,
                            JobState.QUEUED.value,
                            max_attempts,
                            now,
                            now,
                            json.dumps(job.prior.to_json()) if job.prior is not None else None,
                            _wait_until(job),
                        ),
                    )
                    if not cur.rowcount and self._rerun(conn, job, now):
                        new.append(job.job_id)
                    if cur.rowcount:
                        new.append(job.job_id)
                        self._event(conn, job.job_id, JobState.QUEUED, "routed", now)
                        old = conn.execute(
                            "SELECT job_id, state FROM jobs WHERE study_uid=? AND rule=? AND"
                            " model=? AND series_uids=? AND job_id<>? AND superseded_by IS NULL",
                            (
                                job.study_uid,
                                job.rule,
                                job.model,
                                json.dumps(list(job.series_uids)),
                                job.job_id,
                            ),
                        ).fetchall()
                        for old_id, old_state in old:
                            conn.execute(
                                "UPDATE jobs SET superseded_by=?, updated_at=? WHERE job_id=?",
                                (job.job_id, now, old_id),
                            )
                            if old_state == JobState.QUEUED.value:
                                self._set(conn, old_id, JobState.CANCELLED, "superseded", now)
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise
        return new

    def _rerun(self, conn: sqlite3.Connection, job: Job, now: float) -> bool:
        """Re-queue the stored job ``job.job_id`` when it finished but the new routing asks for
        other work under the same id (``rerun_reason``): another model version, another role in
        a combined result set, other rule parameters.  The new parameters replace the old."""
        row = conn.execute(
            "SELECT state, parameters, superseded_by FROM jobs WHERE job_id=?", (job.job_id,)
        ).fetchone()
        if row is None or row[0] in _ACTIVE:
            return False
        stored = json.loads(row[1])
        parameters = job.stored_parameters()
        revision = int(stored.get("_revision", 0) or 0)
        why = rerun_reason(stored, parameters)
        if str(row[2] or "").startswith(RETIRED_PREFIX):
            # retired by an earlier re-routing (its results were rejected), routed again now:
            # it runs again as a new revision, whose objects get new UIDs
            why, revision = "routed again after it was retired", revision + 1
        if why is None:
            return False
        if revision:
            parameters["_revision"] = revision
        conn.execute(
            "UPDATE jobs SET parameters=?, destinations=?, attempts=0, finished_at=NULL,"
            " superseded_by=NULL, prior=?, prior_deadline=? WHERE job_id=?",
            (
                json.dumps(parameters, sort_keys=True),
                json.dumps(list(job.destinations)),
                json.dumps(job.prior.to_json()) if job.prior is not None else None,
                _wait_until(job),
                job.job_id,
            ),
        )
        self._set(conn, job.job_id, JobState.QUEUED, f"re-routed: {why}", now)
        return True

    def retire(self, job_ids: Iterable[str], *, by: str) -> list[str]:
        """Mark jobs that a re-routing no longer asks for: ``superseded_by = by`` (it starts
        with ``RETIRED_PREFIX``; a running one then delivers nothing) and a queued one
        cancelled.  Returns the ids marked now."""
        now = time.time()
        done: list[str] = []
        conn = self._conn()
        with self._lock:
            conn.execute("BEGIN IMMEDIATE")
            try:
                for job_id in sorted(set(job_ids)):
                    row = conn.execute(
                        "SELECT state FROM jobs WHERE job_id=? AND superseded_by IS NULL",
                        (job_id,),
                    ).fetchone()
                    if row is None:
                        continue
                    conn.execute(
                        "UPDATE jobs SET superseded_by=?, updated_at=? WHERE job_id=?",
                        (by, now, job_id),
                    )
                    if row[0] == JobState.QUEUED.value:
                        self._set(conn, job_id, JobState.CANCELLED, "no longer routed", now)
                    done.append(job_id)
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise
        return done

    def claim(
        self,
        worker: str,
        *,
        busy_models: Mapping[str, int] | None = None,
        model_limits: Mapping[str, int] | None = None,
    ) -> Job | None:
        """Take the most urgent queued job (priority, then age) for ``worker``, or None.

        ``model_limits`` caps how many jobs of a model may run at once given ``busy_models``.
        """
        busy = dict(busy_models or {})
        limits = dict(model_limits or {})
        conn = self._conn()
        with self._lock:
            conn.execute("BEGIN IMMEDIATE")
            try:
                now = time.time()
                self._expire_waits(conn, now)
                rows = conn.execute(
                    "SELECT job_id, model, parameters, prior_deadline FROM jobs WHERE state=?"
                    " ORDER BY priority DESC, created_at, job_id",
                    (JobState.QUEUED.value,),
                ).fetchall()
                chosen = None
                for job_id, model, parameters, prior_deadline in rows:
                    if prior_deadline is not None and float(prior_deadline) > now:
                        continue  # waits for its prior study (or the priors timeout)
                    if model in limits and busy.get(model, 0) >= limits[model]:
                        continue
                    if model == COMBINE_MODEL and self._inputs_active(conn, parameters):
                        continue  # waits until every model job it combines is final
                    chosen = job_id
                    break
                if chosen is None:
                    conn.execute("COMMIT")
                    return None
                conn.execute(
                    "UPDATE jobs SET state=?, worker=?, attempts=attempts+1, started_at=?,"
                    " updated_at=? WHERE job_id=?",
                    (JobState.RUNNING.value, worker, now, now, chosen),
                )
                self._event(conn, chosen, JobState.RUNNING, f"claimed by {worker}", now)
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise
        return self.get(chosen).job

    def finish(
        self,
        job_id: str,
        *,
        ok: bool,
        reason: str | None = None,
        outputs: Mapping[str, Any] | None = None,
        final: bool = False,
    ) -> JobState:
        """Record the end of a run: succeeded, or failed (re-queued while attempts remain).

        ``final``: the failure cannot change on a retry (an unreadable input): the job ends
        ``failed`` at once instead of being re-queued or ending ``dead``.
        """
        now = time.time()
        conn = self._conn()
        with self._lock:
            conn.execute("BEGIN IMMEDIATE")
            try:
                row = conn.execute(
                    "SELECT state, attempts, max_attempts FROM jobs WHERE job_id=?", (job_id,)
                ).fetchone()
                if row is None:
                    raise NotFoundError(f"no job {job_id}")
                state, attempts, max_attempts = row
                if state != JobState.RUNNING.value:
                    # cancelled while running: keep the cancellation
                    conn.execute("COMMIT")
                    return JobState(state)
                if ok:
                    new = JobState.SUCCEEDED
                elif final:
                    new = JobState.FAILED
                elif attempts < max_attempts:
                    new = JobState.QUEUED
                else:
                    new = JobState.DEAD
                self._set(conn, job_id, new, reason or ("done" if ok else "failed"), now)
                if new is not JobState.QUEUED:
                    conn.execute("UPDATE jobs SET finished_at=? WHERE job_id=?", (now, job_id))
                if not ok and new is JobState.QUEUED:
                    self._event(conn, job_id, JobState.FAILED, reason, now)
                if outputs is not None:
                    conn.execute(
                        "UPDATE jobs SET outputs=? WHERE job_id=?",
                        (json.dumps(dict(outputs), sort_keys=True, default=_json_of), job_id),
                    )
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise
        return new

    def requeue_running(self, reason: str = "node restarted while running") -> list[str]:
        """At start-up: jobs left running by a previous process go back to the queue."""
        now = time.time()
        conn = self._conn()
        with self._lock:
            conn.execute("BEGIN IMMEDIATE")
            ids = [
                r[0]
                for r in conn.execute(
                    "SELECT job_id FROM jobs WHERE state=?", (JobState.RUNNING.value,)
                )
            ]
            for job_id in ids:
                # the interrupted run does not count as an attempt
                conn.execute("UPDATE jobs SET attempts=MAX(attempts-1,0) WHERE job_id=?", (job_id,))
                self._set(conn, job_id, JobState.QUEUED, reason, now)
            conn.execute("COMMIT")
        return ids

    # ------------------------------------------------------------------ distributed engine
    def unpublished(self, *, republish_before: float, limit: int = 100) -> list[tuple[Job, int]]:
        """Queued jobs to publish to the broker, most urgent first, with their queued event id.

        A job is due when it was queued again since its last publication (routing, retry,
        failure) or was published before ``republish_before`` and still has not started (the
        broker lost the message).  A job waiting for its prior is due once the prior is known
        or the priors timeout passed.
        """
        conn = self._conn()
        with self._lock:
            conn.execute("BEGIN IMMEDIATE")
            try:
                self._expire_waits(conn, time.time())
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise
        rows = (
            self._conn()
            .execute(
                "SELECT j.job_id, (SELECT MAX(e.id) FROM job_events e WHERE e.job_id=j.job_id"
                " AND e.state=?) AS ev, p.queued_event, p.published_at FROM jobs j"
                " LEFT JOIN job_publications p ON p.job_id=j.job_id WHERE j.state=?"
                " AND j.prior_deadline IS NULL"
                " ORDER BY j.priority DESC, j.created_at, j.job_id",
                (JobState.QUEUED.value, JobState.QUEUED.value),
            )
            .fetchall()
        )
        due: list[tuple[Job, int]] = []
        for job_id, ev, pub_ev, pub_at in rows:
            event = int(ev or 0)
            if pub_ev is None or int(pub_ev) < event or float(pub_at) < republish_before:
                due.append((self.get(job_id).job, event))
            if len(due) >= limit:
                break
        return due

    def mark_published(self, job_id: str, *, queued_event: int, queue: str) -> None:
        """Remember that ``job_id`` (queued as event ``queued_event``) is in the broker."""
        with self._lock:
            self._conn().execute(
                "INSERT OR REPLACE INTO job_publications(job_id, queued_event, published_at,"
                " queue) VALUES (?,?,?,?)",
                (job_id, queued_event, time.time(), queue),
            )

    def start_remote(self, job_id: str, worker: str) -> JobRecord | None:
        """A remote worker begins ``job_id``: queued -> running (or a redelivery of a running job).

        Returns the record when the worker should run it; None when the job is finished,
        cancelled or superseded, or when it used up its attempts (it is then dead: a job that
        kills every worker it lands on is not redelivered for ever).
        """
        now = time.time()
        conn = self._conn()
        with self._lock:
            conn.execute("BEGIN IMMEDIATE")
            try:
                row = conn.execute(
                    "SELECT state, attempts, max_attempts, worker, superseded_by FROM jobs"
                    " WHERE job_id=?",
                    (job_id,),
                ).fetchone()
                if row is None:
                    conn.execute("COMMIT")
                    raise NotFoundError(f"no job '{job_id}'")
                state, attempts, max_attempts, previous, superseded = row
                if state not in _ACTIVE or (superseded and state == JobState.QUEUED.value):
                    conn.execute("COMMIT")
                    return None
                if state == JobState.RUNNING.value and attempts >= max_attempts:
                    self._set(
                        conn,
                        job_id,
                        JobState.DEAD,
                        f"worker {previous} was lost {attempts} times",
                        now,
                    )
                    conn.execute("UPDATE jobs SET finished_at=? WHERE job_id=?", (now, job_id))
                    conn.execute("COMMIT")
                    return None
                reason = (
                    f"claimed by {worker}"
                    if state == JobState.QUEUED.value
                    else f"redelivered to {worker} (was {previous})"
                )
                conn.execute(
                    "UPDATE jobs SET state=?, worker=?, attempts=attempts+1, started_at=?,"
                    " updated_at=? WHERE job_id=?",
                    (JobState.RUNNING.value, worker, now, now, job_id),
                )
                self._event(conn, job_id, JobState.RUNNING, reason, now)
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise
        return self.get(job_id)

    def requeue_stale(self, *, older_than: float, reason: str) -> list[str]:
        """Running jobs not updated since ``older_than`` (epoch) go back to the queue (or die)."""
        now = time.time()
        conn = self._conn()
        out: list[str] = []
        with self._lock:
            conn.execute("BEGIN IMMEDIATE")
            try:
                rows = conn.execute(
                    "SELECT job_id, attempts, max_attempts FROM jobs"
                    " WHERE state=? AND updated_at<?",
                    (JobState.RUNNING.value, older_than),
                ).fetchall()
                for job_id, attempts, max_attempts in rows:
                    new = JobState.QUEUED if attempts < max_attempts else JobState.DEAD
                    self._set(conn, job_id, new, reason, now)
                    if new is JobState.DEAD:
                        conn.execute("UPDATE jobs SET finished_at=? WHERE job_id=?", (now, job_id))
                    out.append(job_id)
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise
        return out

    def retry(self, job_id: str) -> None:
        """Put a failed, dead or cancelled job back in the queue with fresh attempts."""
        now = time.time()
        conn = self._conn()
        with self._lock:
            conn.execute("BEGIN IMMEDIATE")
            row = conn.execute("SELECT state FROM jobs WHERE job_id=?", (job_id,)).fetchone()
            if row is None:
                conn.execute("ROLLBACK")
                raise NotFoundError(f"no job '{job_id}'; `ainode jobs list` shows the ids")
            if row[0] in _ACTIVE:
                conn.execute("COMMIT")
                return
            conn.execute("UPDATE jobs SET attempts=0, finished_at=NULL WHERE job_id=?", (job_id,))
            self._set(conn, job_id, JobState.QUEUED, "manual retry", now)
            conn.execute("COMMIT")

    def cancel(self, job_id: str) -> None:
        """Cancel a queued or running job (a running one's result is discarded)."""
        now = time.time()
        conn = self._conn()
        with self._lock:
            conn.execute("BEGIN IMMEDIATE")
            row = conn.execute("SELECT state FROM jobs WHERE job_id=?", (job_id,)).fetchone()
            if row is None:
                conn.execute("ROLLBACK")
                raise NotFoundError(f"no job '{job_id}'; `ainode jobs list` shows the ids")
            if row[0] in _ACTIVE:
                self._set(conn, job_id, JobState.CANCELLED, "cancelled by operator", now)
                conn.execute("UPDATE jobs SET finished_at=? WHERE job_id=?", (now, job_id))
            conn.execute("COMMIT")

    # ------------------------------------------------------------------ priors
    def resolve_prior(self, study_uid: str, rule: str, outcome: PriorOutcome) -> list[str]:
        """The prior of ``study_uid``'s jobs of ``rule`` is known: record it and let the jobs
        waiting for it run.  Jobs that stopped waiting already (the priors timeout passed) keep
        what they ran with.  Returns the ids of the jobs released."""
        now = time.time()
        conn = self._conn()
        with self._lock:
            conn.execute("BEGIN IMMEDIATE")
            try:
                ids = [
                    str(r[0])
                    for r in conn.execute(
                        "SELECT job_id FROM jobs WHERE study_uid=? AND rule=? AND"
                        " prior_deadline IS NOT NULL",
                        (study_uid, rule),
                    )
                ]
                for job_id in ids:
                    conn.execute(
                        "UPDATE jobs SET prior=?, prior_deadline=NULL, updated_at=? WHERE job_id=?",
                        (json.dumps(outcome.to_json()), now, job_id),
                    )
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise
        return ids

    def waiting_priors(self) -> list[tuple[str, str, float, tuple[str, ...]]]:
        """(study UID, rule, deadline, series UIDs of one of its jobs) of every study whose
        jobs wait for a prior (a node restarted while waiting resumes the fetches from these)."""
        rows = (
            self._conn()
            .execute(
                "SELECT study_uid, rule, MIN(prior_deadline), MIN(series_uids) FROM jobs WHERE"
                " prior_deadline IS NOT NULL AND state=? GROUP BY study_uid, rule ORDER BY 3",
                (JobState.QUEUED.value,),
            )
            .fetchall()
        )
        return [(str(a), str(b), float(c), tuple(json.loads(d))) for a, b, c, d in rows]

    def note_prior_failure(self, study_uid: str, rule: str, reason: str) -> None:
        """Remember the last failure of a prior fetch in the jobs still waiting for it: if the
        timeout ends the wait before the fetcher does, the jobs run with this reason."""
        with self._lock:
            self._conn().execute(
                "UPDATE jobs SET prior=json_set(prior, '$.reason', ?) WHERE study_uid=? AND"
                " rule=? AND prior_deadline IS NOT NULL AND prior IS NOT NULL",
                (reason, study_uid, rule),
            )

    def _expire_waits(self, conn: sqlite3.Connection, now: float) -> None:
        """Jobs still waiting for a prior whose deadline passed run without it, saying why (the
        fetch's last failure, else the timeout) (inside the caller's transaction)."""
        rows = conn.execute(
            "SELECT job_id, prior_deadline - created_at, json_extract(prior, '$.reason') FROM"
            " jobs WHERE prior_deadline IS NOT NULL AND prior_deadline <= ?",
            (now,),
        ).fetchall()
        for job_id, waited, last in rows:
            outcome = PriorOutcome(
                PriorState.FAILED,
                reason=str(last)
                if last
                else f"{PRIOR_FAILED}: not retrieved within the priors timeout "
                f"({float(waited):.0f} s)",
            )
            conn.execute(
                "UPDATE jobs SET prior=?, prior_deadline=NULL WHERE job_id=?",
                (json.dumps(outcome.to_json()), job_id),
            )

    def predecessors(self, job: Job) -> list[str]:
        """Ids of the superseded jobs of ``job``'s study, rule, model and series (older inputs:
        their results, if any were delivered, are to be rejected once ``job`` delivers)."""
        rows = (
            self._conn()
            .execute(
                "SELECT job_id FROM jobs WHERE study_uid=? AND rule=? AND model=? AND"
                " series_uids=? AND job_id<>? AND superseded_by IS NOT NULL ORDER BY created_at",
                (
                    job.study_uid,
                    job.rule,
                    job.model,
                    json.dumps(list(job.series_uids)),
                    job.job_id,
                ),
            )
            .fetchall()
        )
        return [str(r[0]) for r in rows]

    def record_routing(
        self, study_uid: str, generation: int, *, rules_sha256: str, decisions: Any
    ) -> None:
        """Remember that a study's completion ``generation`` was routed, and how."""
        with self._lock:
            self._conn().execute(
                "INSERT OR REPLACE INTO routings(study_uid, generation, routed_at, rules_sha256,"
                " decisions) VALUES (?,?,?,?,?)",
                (study_uid, generation, time.time(), rules_sha256, json.dumps(decisions)),
            )

    def routed_generation(self, study_uid: str) -> int:
        """The newest routed completion generation of a study (0 = never routed)."""
        row = (
            self._conn()
            .execute("SELECT MAX(generation) FROM routings WHERE study_uid=?", (study_uid,))
            .fetchone()
        )
        return int(row[0] or 0)

    def routing(self, study_uid: str) -> dict[str, Any] | None:
        """The newest routing of a study: generation, time, rule-file hash and decisions."""
        row = (
            self._conn()
            .execute(
                "SELECT generation, routed_at, rules_sha256, decisions FROM routings"
                " WHERE study_uid=? ORDER BY generation DESC LIMIT 1",
                (study_uid,),
            )
            .fetchone()
        )
        if row is None:
            return None
        return {
            "generation": row[0],
            "routed_at": row[1],
            "rules_sha256": row[2],
            "decisions": json.loads(row[3]),
        }

    def routing_decisions(self, study_uid: str) -> dict[str, Any] | None:
        """``routing`` without the explanation and volumes (rule replay reads thousands):
        ``{"generation", "routed_at", "rules_sha256", "decisions": {"decisions",
        "not_applicable"}}``, the two lists extracted by SQLite."""
        row = (
            self._conn()
            .execute(
                "SELECT generation, routed_at, rules_sha256,"
                " json_extract(decisions, '$.decisions'),"
                " json_extract(decisions, '$.not_applicable') FROM routings"
                " WHERE study_uid=? ORDER BY generation DESC LIMIT 1",
                (study_uid,),
            )
            .fetchone()
        )
        if row is None:
            return None
        return {
            "generation": row[0],
            "routed_at": row[1],
            "rules_sha256": row[2],
            "decisions": {
                "decisions": json.loads(row[3]) if row[3] is not None else None,
                "not_applicable": json.loads(row[4]) if row[4] is not None else [],
            },
        }

    def routing_decisions_many(self, study_uids: Sequence[str]) -> dict[str, dict[str, Any]]:
        """``routing_decisions`` of many studies in a few queries (rule replay): study UID ->
        the same dict, for the studies that have a routing record."""
        out: dict[str, dict[str, Any]] = {}
        uids = list(dict.fromkeys(study_uids))
        for i in range(0, len(uids), 500):
            chunk = uids[i : i + 500]
            rows = (
                self._conn()
                .execute(
                    "SELECT r.study_uid, r.generation, r.routed_at, r.rules_sha256,"
                    " json_extract(r.decisions, '$.decisions'),"
                    " json_extract(r.decisions, '$.not_applicable') FROM routings r"
                    f" WHERE r.study_uid IN ({','.join('?' * len(chunk))})"
                    " AND r.generation = (SELECT MAX(g.generation) FROM routings g"
                    " WHERE g.study_uid = r.study_uid)",
                    chunk,
                )
                .fetchall()
            )
            for row in rows:
                out[row[0]] = {
                    "generation": row[1],
                    "routed_at": row[2],
                    "rules_sha256": row[3],
                    "decisions": {
                        "decisions": json.loads(row[4]) if row[4] is not None else None,
                        "not_applicable": json.loads(row[5]) if row[5] is not None else [],
                    },
                }
        return out

    # ----------------------------------------------------------------------------- reading
    def get(self, job_id: str) -> JobRecord:
        """One job; NotFoundError when unknown."""
        row = self._conn().execute(f"SELECT {_COLS} FROM jobs WHERE job_id=?", (job_id,)).fetchone()
        if row is None:
            raise NotFoundError(f"no job '{job_id}'; `ainode jobs list` shows the ids")
        return _record(row)

    def list_jobs(
        self, *, study_uid: str | None = None, states: Sequence[JobState] = (), limit: int = 200
    ) -> list[JobRecord]:
        """Jobs, newest first, optionally of one study and/or in some states."""
        sql = f"SELECT {_COLS} FROM jobs"
        where: list[str] = []
        args: list[Any] = []
        if study_uid:
            where.append("study_uid=?")
            args.append(study_uid)
        if states:
            where.append(f"state IN ({','.join('?' * len(states))})")
            args.extend(JobState(s).value for s in states)
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY created_at DESC, job_id LIMIT ?"
        args.append(limit)
        return [_record(r) for r in self._conn().execute(sql, args)]

    def events(self, job_id: str) -> list[dict[str, Any]]:
        """Every transition of a job, oldest first."""
        rows = self._conn().execute(
            "SELECT ts, state, reason FROM job_events WHERE job_id=? ORDER BY id", (job_id,)
        )
        return [{"ts": ts, "state": s, "reason": r} for ts, s, r in rows]

    def counts(self) -> dict[str, int]:
        """Number of jobs per state."""
        rows = self._conn().execute("SELECT state, COUNT(*) FROM jobs GROUP BY state")
        return {s: int(n) for s, n in rows}

    def model_runs(self, *, since: float) -> list[tuple[str, bool, float | None]]:
        """Every run (attempt) that ended at or after ``since``: (model, ok, seconds).

        A run starts with a ``running`` event and ends with the next ``succeeded`` (ok),
        ``failed`` or ``dead`` event of the same job; seconds is None when its start is older
        than the event history kept.  Used for the model inventory (runs, failures, latency).
        """
        rows = self._conn().execute(
            "SELECT e.job_id, j.model, e.ts, e.state FROM job_events e JOIN jobs j USING(job_id)"
            " WHERE e.job_id IN (SELECT job_id FROM job_events WHERE ts >= ?"
            " AND state IN ('succeeded', 'failed', 'dead')) AND j.model <> ?"
            " ORDER BY e.job_id, e.id",
            (since, COMBINE_MODEL),
        )
        out: list[tuple[str, bool, float | None]] = []
        started: dict[str, float | None] = {}
        for job_id, model, ts, state in rows:
            if state == JobState.RUNNING.value:
                started[job_id] = ts
            elif state in (JobState.SUCCEEDED.value, JobState.FAILED.value, JobState.DEAD.value):
                if job_id not in started:
                    continue  # dead without a run (e.g. cancelled); not a model run
                start = started.pop(job_id)
                if ts >= since:
                    ok = state == JobState.SUCCEEDED.value
                    out.append((model, ok, None if start is None else ts - start))
        return out

    # ----------------------------------------------------------------------------- internals
    @staticmethod
    def _inputs_active(conn: sqlite3.Connection, parameters: str) -> bool:
        """A combine job's model jobs are not all final yet (queued or running)."""
        ids = list(json.loads(parameters).get("_combine_of", []))
        if not ids:
            return False
        row = conn.execute(
            f"SELECT COUNT(*) FROM jobs WHERE job_id IN ({','.join('?' * len(ids))})"
            " AND state IN (?,?)",
            (*ids, *_ACTIVE),
        ).fetchone()
        return bool(row[0])

    @staticmethod
    def _event(
        conn: sqlite3.Connection, job_id: str, state: JobState, reason: str | None, ts: float
    ) -> None:
        conn.execute(
            "INSERT INTO job_events(job_id, ts, state, reason) VALUES (?,?,?,?)",
            (job_id, ts, state.value, reason),
        )

    def _set(
        self, conn: sqlite3.Connection, job_id: str, state: JobState, reason: str | None, ts: float
    ) -> None:
        conn.execute(
            "UPDATE jobs SET state=?, reason=?, updated_at=? WHERE job_id=?",
            (state.value, reason, ts, job_id),
        )
        self._event(conn, job_id, state, reason, ts)


_COLS = (
    "job_id, study_uid, rule, model, series_uids, parameters, destinations, priority, state,"
    " attempts, max_attempts, reason, worker, created_at, updated_at, started_at, finished_at,"
    " superseded_by, outputs, prior"
)


def _json_of(value: object) -> Any:
    """The stored form of what JSON does not know in a job's outputs: its ``ResultObject``s
    (``outputs["objects"]``) as the dicts the job record has always listed."""
    if isinstance(value, ResultObject):
        return value.to_json()
    raise TypeError(f"a job's outputs hold a {type(value).__name__}, which is not JSON")


def _wait_until(job: Job) -> float | None:
    p = job.prior
    return p.wait_until if p is not None and p.state is PriorState.WAITING else None


def _record(row: Sequence[Any]) -> JobRecord:
    job = Job(
        job_id=row[0],
        study_uid=row[1],
        rule=row[2],
        model=row[3],
        series_uids=tuple(json.loads(row[4])),
        destinations=tuple(json.loads(row[6])),
        priority=int(row[7]),
        prior=PriorOutcome.from_json(json.loads(row[19])) if row[19] else None,
        **Job.fields_of(json.loads(row[5])),
    )
    return JobRecord(
        job=job,
        state=JobState(row[8]),
        attempts=int(row[9]),
        max_attempts=int(row[10]),
        reason=row[11],
        worker=row[12],
        created_at=float(row[13]),
        updated_at=float(row[14]),
        started_at=row[15],
        finished_at=row[16],
        superseded_by=row[17],
        outputs=json.loads(row[18]) if row[18] else {},
    )
