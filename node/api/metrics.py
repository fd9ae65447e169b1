"""``GET /metrics``: Prometheus text exposition; every name starts with ``ainode_``.

Counters of what arrives (instances by calling AE title and spool status, bytes) are counted by
a spool listener since the process started.  Everything else is read from the SQLite index at
scrape time by one custom collector (a read-only connection per scrape, a handful of
``GROUP BY`` queries), so the numbers survive restarts and cost nothing between scrapes:
studies completed, quarantined instances, rule matches, jobs by model and state, model run time
histogram, delivery rows/attempts/failures/queue depth by destination, job queue depth,
radiologist feedback by model and verdict, and free disk.  Association requests (by calling AE
title and outcome) and failed console logins are counted by listeners too.
Each app has its own ``CollectorRegistry`` (no process-global state).
"""

from __future__ import annotations

import contextlib
import shutil
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from node.api.deps import NodeView
from node.delivery import queries as delivery_queries
from node.jobs import queries as job_queries
from node.store import queries as store_queries

__all__ = ["LATENCY_BUCKETS", "NodeMetrics", "router"]

router = APIRouter(tags=["metrics"])

#: Upper bounds (seconds) of the model run-time histogram buckets.
LATENCY_BUCKETS = (0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0)


class _IndexCollector(Collector):
    """Reads the node's SQLite index at scrape time."""

    def __init__(self, db_path: Path, data_dir: Path) -> None:
        self._db_path = db_path
        self._data_dir = data_dir

    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(f"file:{self._db_path}?mode=ro", uri=True, timeout=10)
        conn.execute("PRAGMA busy_timeout=10000")
        return conn

    def collect(self) -> Iterator[Metric]:
        try:
            conn = self._connect()
        except sqlite3.Error:
            return
        try:
            yield from self._index_metrics(conn)
            yield from self._job_metrics(conn)
            yield from self._delivery_metrics(conn)
            yield self._feedback_metric(conn)
        finally:
            conn.close()
        disk = GaugeMetricFamily("ainode_disk_free_bytes", "Free bytes on the data_dir volume")
        with contextlib.suppress(OSError):
            disk.add_metric([], float(shutil.disk_usage(self._data_dir).free))
        yield disk

    def _index_metrics(self, conn: sqlite3.Connection) -> Iterator[Metric]:
        studies = GaugeMetricFamily(
            "ainode_studies", "Studies in the index by state", labels=["state"]
        )
        for state, n in store_queries.studies_by_state(conn):
            studies.add_metric([state], n)
        yield studies
        completed = CounterMetricFamily(
            "ainode_studies_completed", "Study completions (each generation counts)"
        )
        completed.add_metric([], store_queries.count_events(conn, "study-completed"))
        yield completed
        quarantined = CounterMetricFamily(
            "ainode_instances_quarantined", "Instances that could not be stored"
        )
        quarantined.add_metric([], store_queries.count_events(conn, "quarantined"))
        yield quarantined
        stored = GaugeMetricFamily("ainode_stored_bytes", "Bytes of stored instances")
        stored.add_metric([], store_queries.stored_bytes(conn))
        yield stored

    def _job_metrics(self, conn: sqlite3.Connection) -> Iterator[Metric]:
        jobs = GaugeMetricFamily(
            "ainode_jobs", "Jobs by model and state", labels=["model", "state"]
        )
        depth = 0
        for model, state, n in job_queries.count_by_model_and_state(conn):
            jobs.add_metric([model, state], n)
            if state == "queued":
                depth += n
        yield jobs
        queue = GaugeMetricFamily("ainode_queue_depth", "Jobs waiting to run")
        queue.add_metric([], depth)
        yield queue
        running = GaugeMetricFamily(
            "ainode_jobs_running",
            "Running jobs by worker (NAME/DEVICE for remote workers)",
            labels=["worker"],
        )
        for worker, n in job_queries.running_by_worker(conn):
            running.add_metric([worker], n)
        yield running
        matches = CounterMetricFamily(
            "ainode_rule_matches", "Routing decisions that queued work, by rule", labels=["rule"]
        )
        counts: dict[str, int] = {}
        reasons: dict[str, int] = {}
        for record in job_queries.routing_records(conn):
            items = record.get("decisions") or []
            skipped = record.get("not_applicable") or []
            for d in items:
                if isinstance(d, dict) and d.get("rule") and not d.get("ignored"):
                    counts[d["rule"]] = counts.get(d["rule"], 0) + 1
            for na in skipped:
                if isinstance(na, dict) and na.get("reason"):
                    reasons[na["reason"]] = reasons.get(na["reason"], 0) + 1
        for rule, n in sorted(counts.items()):
            matches.add_metric([rule], n)
        yield matches
        not_applicable = CounterMetricFamily(
            "ainode_series_not_applicable",
            "Model decisions that created no job because the model cannot read the series, and "
            "image series no rule sends to a model (no_rule, no_model) or a named rule ignores "
            "(localizer, ignored); headers only, by reason",
            labels=["reason"],
        )
        for reason, n in sorted(reasons.items()):
            not_applicable.add_metric([reason], n)
        yield not_applicable
        latency = HistogramMetricFamily(
            "ainode_model_run_seconds", "Run time of succeeded jobs by model", labels=["model"]
        )
        per_model: dict[str, list[float]] = {}
        for model, seconds in job_queries.run_seconds(conn):
            per_model.setdefault(model, []).append(seconds)
        for model, values in sorted(per_model.items()):
            buckets = [(str(b), sum(v <= b for v in values)) for b in LATENCY_BUCKETS]
            buckets.append(("+Inf", len(values)))
            latency.add_metric([model], buckets, sum_value=sum(values))
        yield latency

    def _feedback_metric(self, conn: sqlite3.Connection) -> Metric:
        feedback = CounterMetricFamily(
            "ainode_feedback",
            "Radiologist verdicts on results (accept, reject, modify), by model",
            labels=["model", "verdict"],
        )
        for model, verdict, n in store_queries.feedback_by_model_and_verdict(conn):
            feedback.add_metric([model, verdict], n)
        return feedback

    def _delivery_metrics(self, conn: sqlite3.Connection) -> Iterator[Metric]:
        rows = GaugeMetricFamily(
            "ainode_deliveries",
            "Outbox rows by destination and state",
            labels=["destination", "state"],
        )
        attempts = CounterMetricFamily(
            "ainode_delivery_attempts", "Send attempts by destination", labels=["destination"]
        )
        failures = CounterMetricFamily(
            "ainode_delivery_failures",
            "Rows whose last attempt failed (pending retry or dead), by destination",
            labels=["destination"],
        )
        pending = GaugeMetricFamily(
            "ainode_delivery_queue_depth",
            "Outbox rows waiting to be sent, by destination",
            labels=["destination"],
        )
        per_dest: dict[str, list[int]] = {}
        for c in delivery_queries.count_by_destination_and_state(conn):
            rows.add_metric([c.destination, c.state], c.rows)
            acc = per_dest.setdefault(c.destination, [0, 0, 0])
            if c.state == "pending":
                acc[2] += c.rows
            acc[0] += c.attempts + (c.rows if c.state == "delivered" and not c.attempts else 0)
            acc[1] += c.failing
        for dest, (tried, failed, waiting) in sorted(per_dest.items()):
            attempts.add_metric([dest], tried)
            failures.add_metric([dest], failed)
            pending.add_metric([dest], waiting)
        yield rows
        yield attempts
        yield failures
        yield pending


class NodeMetrics:
    """The metrics of one app: its own registry, the spool counters and the index collector.

    Parameters
    ----------
    node:
        The node served; its spool gets a listener (when it offers ``add_listener``).
    """

    def __init__(self, node: NodeView) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.instances = Counter(
            "ainode_instances_received",
            "Instances accepted by the spool, by calling AE title and status",
            ["calling_aet", "status"],
            registry=self.registry,
        )
        self.bytes = Counter(
            "ainode_received_bytes",
            "Bytes of accepted instances",
            registry=self.registry,
        )
        self.associations = Counter(
            "ainode_associations",
            "DICOM association requests by calling AE title and outcome (accepted, refused)",
            ["calling_aet", "outcome"],
            registry=self.registry,
        )
        self.login_failures = Counter(
            "ainode_login_failures",
            "Failed console logins (wrong credentials or rate-limited)",
            registry=self.registry,
        )
        data_dir = node.config.node.data_dir
        self.registry.register(_IndexCollector(data_dir / "index.sqlite", data_dir))
        add_listener = getattr(node.spool, "add_listener", None)
        if add_listener is not None:
            add_listener(self.instance_stored)
        add_association = getattr(node, "add_association_listener", None)
        if add_association is not None:
            add_association(self.association)

    def association(self, outcome: str, facts: dict[str, Any]) -> None:
        """Node listener: count one association request."""
        self.associations.labels(facts.get("calling_aet") or "-", outcome).inc()

    def instance_stored(self, outcome: Any) -> None:
        """Spool listener: count one stored/duplicate/replaced instance."""
        inst = outcome.instance
        self.instances.labels(inst.calling_aet or "-", outcome.status).inc()
        if outcome.status != "duplicate":
            self.bytes.inc(inst.size_bytes)

    def render(self) -> bytes:
        """The text exposition format (version 0.0.4)."""
        return generate_latest(self.registry)


@router.get("/metrics", include_in_schema=False)
def metrics(request: Request) -> Response:
    """Prometheus scrape endpoint (open, like ``/api/health``)."""
    node_metrics: NodeMetrics = request.app.state.metrics
    return Response(node_metrics.render(), media_type=CONTENT_TYPE_LATEST)
