"""A study's lifecycle on one line, and the studies stuck in a state (issue 22 §2).

``lifecycle`` turns what the study detail already holds -- the index row, the newest routing,
the jobs and the outbox rows -- into ordered steps: received; complete; routed (by which rules);
per model: its job's state and reason; results built; delivered, per destination.  A failed,
dead or cancelled job and a dead delivery carry the URL of their retry action.

``stuck_studies`` lists studies that stayed in one state longer than a threshold: open past the
stable window, complete but never routed (the router failed on it), a job queued or running, a
delivery pending.
"""

from __future__ import annotations

import time
from collections import defaultdict
from typing import Any

from node.api.deps import NodeView
from node.types import JobState

__all__ = ["lifecycle", "stuck_studies"]

_RETRYABLE = {"failed", "dead", "cancelled"}


def lifecycle(
    row: dict[str, Any],
    routing: dict[str, Any] | None,
    jobs: list[dict[str, Any]],
    deliveries: list[dict[str, Any]],
) -> list[dict[str, Any]]:
    """The steps of one study, in order; each has ``step``, ``state`` and step-specific keys.

    ``row`` is the index summary (epoch times), ``jobs`` and ``deliveries`` are JSON rows.
    States: ``done``/``waiting`` for received, complete, routed and results; the job state per
    model; ``delivered``/``pending``/``dead``/``withdrawn`` per destination.
    """
    steps: list[dict[str, Any]] = [
        {
            "step": "received",
            "state": "done",
            "at": row["first_received"],
            "instances": row["instance_count"],
            "series": row["series_count"],
        },
        {
            "step": "complete",
            "state": "done" if row["state"] == "complete" else "waiting",
            "at": row.get("completed_at"),
        },
    ]
    if routing is None:
        steps.append({"step": "routed", "state": "waiting", "rules": []})
    else:
        decisions = (routing.get("decisions") or {}).get("decisions") or []
        rules = sorted({d["rule"] for d in decisions if d.get("rule")})
        steps.append(
            {
                "step": "routed",
                "state": "done" if rules else "no rule matched",
                "rules": rules,
                "at": routing.get("routed_at"),
            }
        )
    live = [j for j in jobs if not j.get("superseded_by")]
    for j in sorted(live, key=lambda j: (j["model"], j["job_id"])):
        step: dict[str, Any] = {
            "step": "model",
            "model": j["model"],
            "rule": j["rule"],
            "state": j["state"],
            "reason": j.get("reason"),
            "job_id": j["job_id"],
        }
        if j["state"] in _RETRYABLE:
            step["retry"] = f"/api/jobs/{j['job_id']}/retry"
        steps.append(step)
    objects = sum(
        len((j.get("outputs") or {}).get("objects", [])) for j in live if j["state"] == "succeeded"
    )
    if live:
        steps.append(
            {"step": "results", "state": "done" if objects else "waiting", "objects": objects}
        )
    by_destination: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for d in deliveries:
        by_destination[d["destination"]].append(d)
    for destination in sorted(by_destination):
        rows = by_destination[destination]
        states = [str(d["state"]) for d in rows]
        dead = [d for d in rows if d["state"] == "dead"]
        state = "dead" if dead else "pending" if "pending" in states else "delivered"
        if set(states) == {"withdrawn"}:  # a rejected result set that never went out
            state = "withdrawn"
        step = {
            "step": "delivered",
            "destination": destination,
            "state": state,
            "objects": len(rows),
            "delivered": states.count("delivered"),
        }
        if dead:
            step["reason"] = dead[0].get("last_error")
            step["retry"] = [f"/api/deliveries/{d['id']}/retry" for d in dead]
        steps.append(step)
    return steps


def stuck_studies(
    node: NodeView, *, threshold_seconds: float, now: float | None = None, limit: int = 1000
) -> list[dict[str, Any]]:
    """Studies in one state for longer than ``threshold_seconds``, longest first.

    Each: ``study_uid``, ``state`` (``open``, ``not routed``, ``job queued``, ``job running``,
    ``delivery pending``), ``since`` (epoch seconds), ``detail`` (model or destination).  An
    open study counts once it is idle for the stable window plus the threshold; a complete
    study without a routing record for its completion once it is complete for the threshold.
    """
    now = time.time() if now is None else now
    cutoff = now - threshold_seconds
    out: list[dict[str, Any]] = []
    open_cutoff = cutoff - node.config.study.stable_seconds
    for study_uid, last in node.index.open_studies():
        if last < open_cutoff:
            out.append({"study_uid": study_uid, "state": "open", "since": last, "detail": ""})
    for study_uid, completed in node.index.unrouted_studies(completed_before=cutoff, limit=limit):
        out.append(
            {
                "study_uid": study_uid,
                "state": "not routed",
                "since": completed,
                "detail": "complete, never routed",
            }
        )
    for rec in node.jobs.list_jobs(states=[JobState.QUEUED, JobState.RUNNING], limit=limit):
        running = rec.state is JobState.RUNNING and rec.started_at is not None
        since = rec.started_at if running and rec.started_at is not None else rec.updated_at
        if since < cutoff:
            out.append(
                {
                    "study_uid": rec.job.study_uid,
                    "state": f"job {rec.state.value}",
                    "since": since,
                    "detail": rec.job.model,
                }
            )
    for d in node.outbox.list(state="pending", limit=limit):
        if d.created_at < cutoff:
            out.append(
                {
                    "study_uid": d.study_uid,
                    "state": "delivery pending",
                    "since": d.created_at,
                    "detail": d.destination,
                }
            )
    seen: set[tuple[str, str, str]] = set()
    unique = []
    for s in sorted(out, key=lambda s: s["since"]):
        key = (s["study_uid"], s["state"], s["detail"])
        if key not in seen:
            seen.add(key)
            unique.append(s)
    return unique
