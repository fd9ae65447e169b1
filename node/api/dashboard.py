"""The console dashboard: activity per hour, queue depth and failures, from the SQLite index.

Counts come from a read-only connection with a few ``GROUP BY`` queries (like ``/metrics``);
the charts are small server-rendered SVG bar charts, so no front-end build is needed.
"""

from __future__ import annotations

import math
import sqlite3
import time
from collections.abc import Callable
from dataclasses import dataclass
from html import escape
from pathlib import Path

from node.delivery import queries as delivery_queries
from node.jobs import queries as job_queries
from node.store import queries as store_queries

__all__ = ["Activity", "bar_chart_svg", "read_activity"]

#: series name -> (the owning component's query of timestamps since a time, what it counts)
_SERIES: dict[str, tuple[Callable[[sqlite3.Connection, float], list[float]], str]] = {
    "studies_received": (store_queries.study_arrival_times, "studies first received"),
    "studies_completed": (store_queries.completion_times, "study completions"),
    "jobs_succeeded": (job_queries.succeeded_times, "jobs succeeded"),
    "jobs_failed": (job_queries.failure_times, "job failures (failed or dead)"),
    "deliveries_delivered": (delivery_queries.delivered_times, "objects delivered"),
}


@dataclass(frozen=True, slots=True)
class Activity:
    """Per-hour counts (oldest hour first) plus the current queue and failure figures."""

    hours: list[float]
    series: dict[str, list[int]]
    labels: dict[str, str]
    jobs_by_state: dict[str, int]
    deliveries_by_state: dict[str, int]
    dead_deliveries_by_destination: dict[str, int]


def read_activity(db_path: Path, *, hours: int = 24, now: float | None = None) -> Activity:
    """Count the index's activity in each of the last ``hours`` hours (UTC hour boundaries).

    Parameters
    ----------
    db_path:
        ``data_dir/index.sqlite``.
    hours:
        How many hours, the current (partial) one included.
    now:
        Seconds since the epoch (default: now).
    """
    now = time.time() if now is None else now
    current = float(math.floor(now / 3600) * 3600)
    starts = [current - 3600 * (hours - 1 - i) for i in range(hours)]
    series: dict[str, list[int]] = {}
    conn = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True, timeout=10)
    try:
        for name, (query, _) in _SERIES.items():
            counts = [0] * hours
            for ts in query(conn, starts[0]):
                slot = int((float(ts) - starts[0]) // 3600)
                if 0 <= slot < hours:
                    counts[slot] += 1
            series[name] = counts
        jobs = job_queries.count_by_state(conn)
        deliveries = delivery_queries.count_by_state(conn)
        dead = delivery_queries.dead_by_destination(conn)
    finally:
        conn.close()
    return Activity(
        hours=starts,
        series=series,
        labels={name: label for name, (_, label) in _SERIES.items()},
        jobs_by_state=jobs,
        deliveries_by_state=deliveries,
        dead_deliveries_by_destination=dead,
    )


def bar_chart_svg(
    values: list[int], hour_starts: list[float], *, title: str, colour: str = "#3b6fd8"
) -> str:
    """A small SVG bar chart (one bar per hour, hour labels every 6 bars, max on the axis)."""
    width, height, left, bottom, top = 480, 120, 28, 18, 16
    n = max(len(values), 1)
    peak = max(values, default=0)
    scale = (height - bottom - top) / peak if peak else 0.0
    bar = (width - left) / n
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" class="chart" role="img" width="{width}"'
        f' height="{height}" viewBox="0 0 {width} {height}"><title>{escape(title)}</title>',
        f'<text x="0" y="11" font-size="11">{escape(title)}</text>',
        f'<text x="0" y="{top + 10}" font-size="10" fill="#8a92a6">{peak}</text>',
        f'<line x1="{left}" y1="{height - bottom}" x2="{width}" y2="{height - bottom}"'
        ' stroke="#c9ceda"/>',
    ]
    for i, (v, start) in enumerate(zip(values, hour_starts, strict=True)):
        h = v * scale
        x = left + i * bar
        hour = time.strftime("%H:00", time.gmtime(start))
        parts.append(
            f'<rect x="{x + 1:.1f}" y="{height - bottom - h:.1f}" width="{max(bar - 2, 1):.1f}"'
            f' height="{h:.1f}" fill="{colour}" data-count="{v}"><title>{hour} UTC: {v}</title>'
            "</rect>"
        )
        if i % 6 == 0:
            parts.append(
                f'<text x="{x:.1f}" y="{height - 4}" font-size="10" fill="#8a92a6">{hour}</text>'
            )
    parts.append("</svg>")
    return "".join(parts)
