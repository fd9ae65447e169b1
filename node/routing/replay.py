"""Rule replay: what a candidate rule file would have done to the studies already stored.

For every study whose last instance arrived in the window, the *current* routing (the routing
record stored when the study was routed, i.e. what actually happened; else, for a study not
routed yet, the active rules) is set beside the *new* routing (the candidate rules evaluated
exactly as the live router evaluates them: ``RuleSet.route`` on ``series_inputs(study)``).
The diff lists, per study, the models added and removed per series, the destinations changed,
the forwards added and removed and the series newly ignored or no longer ignored; the totals
count the model runs (one per model and series) per day, before and after.

Stored headers only: the studies come from the index (``Index.studies_received_raw``); no instance
file is opened, so the volume qualification of the live router (``node.routing.qualify``,
which reads the instances' headers and asks the model registry) is *not* re-run.  A (model,
series) pair that the stored routing found "not applicable" stays not applicable in the new
routing (the series and the model did not change); a pair the stored routing never qualified
counts as a run, so ``new_runs`` is an upper bound when a new model would refuse a series.
Nothing is queued or written.  The output holds UIDs, dates, rule, model and destination names:
no patient data.
"""

from __future__ import annotations

import contextlib
import gc
import logging
import multiprocessing
import os
import re
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

import dicom_rules
from dicom_rules import RuleSet
from node.routing.dispatch import series_inputs
from node.store.index import ReceivedStudy, decode_received
from node.types import Study

__all__ = [
    "PARALLEL_MIN",
    "Replay",
    "Routing",
    "StoredStudies",
    "StudyReplay",
    "default_workers",
    "parse_since",
    "replay",
]


class StoredStudies(Protocol):
    """The index query replay reads (``node.store.index.Index.studies_received_raw``)."""

    def studies_received_raw(self, since: float, until: float) -> list[ReceivedStudy]: ...


log = logging.getLogger(__name__)

#: While a replay runs, the cyclic collector's oldest generation is examined this rarely.
_FULL_COLLECTION_THRESHOLD = 1000


_gc_lock = threading.Lock()
_gc_users = 0
_gc_saved: tuple[int, ...] = ()


@contextlib.contextmanager
def _rare_full_collections() -> Iterator[None]:
    """Make full (generation 2) garbage collections rare while a replay builds its result.

    A replay keeps tens of thousands of small objects alive (one ``StudyReplay`` per study)
    while it allocates many short-lived ones (decoded headers, explanations); with CPython's
    default thresholds each full collection walks everything kept so far, which cost about
    40 % of a 10,000-study replay (bench/replay.py).  Young generations are still collected
    (the explanations ``RuleSet.route`` builds are reference cycles), so memory stays flat.
    Process-wide while it lasts: the serving process's other threads see only fewer full
    collections for those seconds.  Counted, so that overlapping replays (two API requests)
    put the previous thresholds back only when the last one ends.
    """
    global _gc_users, _gc_saved
    with _gc_lock:
        if _gc_users == 0:
            _gc_saved = gc.get_threshold()
            t0, t1, t2 = _gc_saved
            gc.set_threshold(t0, t1, max(t2, _FULL_COLLECTION_THRESHOLD))
        _gc_users += 1
    try:
        yield
    finally:
        with _gc_lock:
            _gc_users -= 1
            if _gc_users == 0:
                gc.set_threshold(*_gc_saved)


_SINCE = re.compile(r"^\s*(\d+)\s*([dhm])\s*$")
_UNIT = {"d": 86400, "h": 3600, "m": 60}


def parse_since(text: str, *, now: float | None = None) -> float:
    """``7d`` / ``24h`` / ``90m`` (ago) or an ISO date/time (UTC when no zone) -> epoch seconds.

    Raises
    ------
    ValueError
        With a message naming the accepted forms.
    """
    now = time.time() if now is None else now
    m = _SINCE.match(text)
    if m is not None:
        amount = int(m.group(1))
        if amount <= 0:
            raise ValueError(f"since {text!r}: the duration must be positive")
        return now - amount * _UNIT[m.group(2)]
    try:
        when = datetime.fromisoformat(text.strip())
    except ValueError:
        raise ValueError(
            f"since {text!r}: give a duration (7d, 24h, 90m) or an ISO date (2026-12-01 or "
            "2026-12-01T08:00:00Z)"
        ) from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return when.timestamp()


@dataclass(frozen=True, slots=True)
class Routing:
    """One routing of a study, reduced to what replay compares.

    ``runs``: (series UID, model) -> sorted destinations of its results; ``forwards``:
    (series UID, destination) pairs; ``ignored``: series UIDs an ``ignore`` rule covered;
    ``not_applicable``: (series UID, model) pairs the live router's volume check refused.
    """

    runs: Mapping[tuple[str, str], tuple[str, ...]]
    forwards: frozenset[tuple[str, str]]
    ignored: frozenset[str]
    not_applicable: frozenset[tuple[str, str]] = frozenset()

    @property
    def run_count(self) -> int:
        """Model runs: one per (series, model) not refused as not applicable."""
        return sum(1 for key in self.runs if key not in self.not_applicable)

    def to_json(self) -> dict[str, Any]:
        """Models per series, forwards, ignored series and not-applicable pairs."""
        models: dict[str, list[dict[str, Any]]] = defaultdict(list)
        for (series_uid, model), deliver in sorted(self.runs.items()):
            models[series_uid].append(
                {
                    "model": model,
                    "deliver": list(deliver),
                    "not_applicable": (series_uid, model) in self.not_applicable,
                }
            )
        return {
            "models": dict(models),
            "forwards": [{"series_uid": s, "destination": d} for s, d in sorted(self.forwards)],
            "ignored_series": sorted(self.ignored),
            "model_runs": self.run_count,
        }


def _routing(
    decisions: Iterable[Mapping[str, Any]], not_applicable: frozenset[tuple[str, str]]
) -> Routing:
    runs: dict[tuple[str, str], set[str]] = defaultdict(set)
    forwards: set[tuple[str, str]] = set()
    ignored: set[str] = set()
    for d in decisions:
        uids = [str(u) for u in d.get("series_uids") or ()]
        if d.get("ignored"):
            ignored.update(uids)
            continue
        send_to = d.get("send_to")
        model = d.get("model")
        for uid in uids:
            if send_to:
                forwards.add((uid, str(send_to)))
            if model:
                runs[(uid, str(model))].update(str(x) for x in d.get("deliver") or ())
    return Routing(
        runs={k: tuple(sorted(v)) for k, v in runs.items()},
        forwards=frozenset(forwards),
        ignored=frozenset(ignored),
        not_applicable=frozenset(k for k in not_applicable if k in runs),
    )


def _from_rules(
    rules: RuleSet,
    study: Study,
    destinations: Sequence[str] | None,
    not_applicable: frozenset[tuple[str, str]],
) -> Routing:
    decisions = dicom_rules.route(rules, series_inputs(study), destinations=destinations)
    return _routing(
        (
            {
                "model": d.model,
                "series_uids": d.series_uids,
                "deliver": d.deliver,
                "send_to": d.send_to,
                "ignored": d.ignored,
            }
            for d in decisions
        ),
        not_applicable,
    )


def _stored_not_applicable(record: Mapping[str, Any] | None) -> frozenset[tuple[str, str]]:
    if record is None:
        return frozenset()
    decisions = record.get("decisions")
    items = decisions.get("not_applicable") if isinstance(decisions, dict) else None
    return frozenset(
        (str(n["series_uid"]), str(n["model"]))
        for n in items or ()
        if isinstance(n, dict) and n.get("series_uid") and n.get("model")
    )


def _diff(cur: Routing, new: Routing) -> dict[str, Any]:
    """Models added/removed, destinations changed, forwards and ignored series changed."""
    added = [
        {"series_uid": s, "model": m, "deliver": list(new.runs[(s, m)])}
        for s, m in sorted(new.runs.keys() - cur.runs.keys())
    ]
    removed = [
        {"series_uid": s, "model": m, "deliver": list(cur.runs[(s, m)])}
        for s, m in sorted(cur.runs.keys() - new.runs.keys())
    ]
    changed = [
        {
            "series_uid": s,
            "model": m,
            "before": list(cur.runs[(s, m)]),
            "after": list(new.runs[(s, m)]),
        }
        for s, m in sorted(cur.runs.keys() & new.runs.keys())
        if cur.runs[(s, m)] != new.runs[(s, m)]
    ]
    return {
        "models_added": added,
        "models_removed": removed,
        "destinations_changed": changed,
        "forwards_added": [
            {"series_uid": s, "destination": d} for s, d in sorted(new.forwards - cur.forwards)
        ],
        "forwards_removed": [
            {"series_uid": s, "destination": d} for s, d in sorted(cur.forwards - new.forwards)
        ],
        "newly_ignored": sorted(new.ignored - cur.ignored),
        "no_longer_ignored": sorted(cur.ignored - new.ignored),
    }


@dataclass(frozen=True, slots=True)
class StudyReplay:
    """One study: its current and new routing and the difference."""

    study_uid: str
    received: float
    current_source: str  # "stored" (the routing record) or "rules" (the active rules)
    current: Routing
    new: Routing
    diff: Mapping[str, Any]

    @property
    def changed(self) -> bool:
        """True when anything in ``diff`` is not empty."""
        return any(self.diff.values())

    @classmethod
    def of(
        cls, study_uid: str, received: float, source: str, current: Routing, new: Routing
    ) -> StudyReplay:
        """The replay of one study, its diff computed once."""
        return cls(study_uid, received, source, current, new, _diff(current, new))

    @property
    def extra_runs(self) -> int:
        """New model runs minus current ones (negative: fewer)."""
        return self.new.run_count - self.current.run_count

    def to_json(self) -> dict[str, Any]:
        """The JSON of one study (UIDs, date, names: no patient data)."""
        diff = dict(self.diff)
        return {
            "study_uid": self.study_uid,
            "received": _iso(self.received),
            "current_source": self.current_source,
            "changed": any(diff.values()),
            "current": self.current.to_json(),
            "new": self.new.to_json(),
            "diff": diff,
            "extra_runs": self.extra_runs,
        }


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def _day(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).date().isoformat()


@dataclass(frozen=True, slots=True)
class Replay:
    """The outcome of a replay: every study of the window (oldest first) and the totals."""

    since: float
    until: float
    studies: tuple[StudyReplay, ...]
    seconds: float = 0.0
    days: tuple[str, ...] = field(default=())

    def per_day(self) -> list[dict[str, Any]]:
        """Per UTC day of the window: studies, changed studies, current/new/extra model runs."""
        rows: dict[str, dict[str, int]] = {
            d: {"studies": 0, "changed": 0, "current_runs": 0, "new_runs": 0} for d in self.days
        }
        for s in self.studies:
            row = rows.setdefault(
                _day(s.received), {"studies": 0, "changed": 0, "current_runs": 0, "new_runs": 0}
            )
            row["studies"] += 1
            row["changed"] += int(s.changed)
            row["current_runs"] += s.current.run_count
            row["new_runs"] += s.new.run_count
        return [
            {"day": d, **r, "extra_runs": r["new_runs"] - r["current_runs"]}
            for d, r in sorted(rows.items())
        ]

    def totals(self, days: list[dict[str, Any]] | None = None) -> dict[str, Any]:
        """Over the window: studies, changed, current/new/extra runs, and per-day averages."""
        days = self.per_day() if days is None else days
        cur = sum(d["current_runs"] for d in days)
        new = sum(d["new_runs"] for d in days)
        n_days = max(len(days), 1)
        return {
            "studies": len(self.studies),
            "changed": sum(d["changed"] for d in days),
            "current_runs": cur,
            "new_runs": new,
            "extra_runs": new - cur,
            "days": len(days),
            "extra_runs_per_day": round((new - cur) / n_days, 2),
        }

    def audit_detail(self) -> dict[str, Any]:
        """The fields of the ``rules.replayed`` audit record: the window and the counts only
        (no UID, no header value; the caller adds who, the rule files' sha256 and the face)."""
        t = self.totals()
        return {
            "since": _iso(self.since),
            "until": _iso(self.until),
            "studies": t["studies"],
            "changed": t["changed"],
            "current_runs": t["current_runs"],
            "new_runs": t["new_runs"],
            "extra_runs": t["extra_runs"],
            "seconds": round(self.seconds, 3),
        }

    def to_json(
        self, *, limit: int | None = None, offset: int = 0, changed_only: bool = False
    ) -> dict[str, Any]:
        """The whole replay; ``studies`` paged by ``limit``/``offset`` (totals cover all)."""
        with _rare_full_collections():
            return self._to_json(limit=limit, offset=offset, changed_only=changed_only)

    def _to_json(self, *, limit: int | None, offset: int, changed_only: bool) -> dict[str, Any]:
        listed = [s for s in self.studies if s.changed] if changed_only else list(self.studies)
        page = listed[offset:] if limit is None else listed[offset : offset + limit]
        per_day = self.per_day()
        return {
            "since": _iso(self.since),
            "until": _iso(self.until),
            "seconds": round(self.seconds, 3),
            "totals": self.totals(per_day),
            "per_day": per_day,
            "listed": len(listed),
            "offset": offset,
            "limit": limit,
            "studies": [s.to_json() for s in page],
        }


def _days(since: float, until: float) -> tuple[str, ...]:
    first = datetime.fromtimestamp(since, UTC).date()
    last = datetime.fromtimestamp(max(since, until - 1e-6), UTC).date()
    n = (last - first).days
    if n > 3660:  # a window of ten years and more: list only the days that hold studies
        return ()
    return tuple((first + timedelta(days=i)).isoformat() for i in range(n + 1))


_Item = tuple[ReceivedStudy, Mapping[str, Any] | None]


def _replay_chunk(
    args: tuple[list[_Item], RuleSet, RuleSet | None, Sequence[str] | None],
) -> list[StudyReplay]:
    """Decode and route one run of studies (in this process or a worker process)."""
    with _rare_full_collections():
        return _replay_items(*args)


def _replay_items(
    items: list[_Item],
    rules: RuleSet,
    current_rules: RuleSet | None,
    destinations: Sequence[str] | None,
) -> list[StudyReplay]:
    out: list[StudyReplay] = []
    for raw, record in items:
        study, received = decode_received(raw)
        na = _stored_not_applicable(record)
        decisions = record.get("decisions") if record is not None else None
        if isinstance(decisions, dict) and isinstance(decisions.get("decisions"), list):
            current = _routing(decisions["decisions"], na)
            source = "stored"
        elif current_rules is not None:
            current = _from_rules(current_rules, study, destinations, na)
            source = "rules"
        else:
            current = Routing(runs={}, forwards=frozenset(), ignored=frozenset())
            source = "none"
        new = _from_rules(rules, study, destinations, na)
        out.append(StudyReplay.of(study.study_uid, received, source, current, new))
    return out


def default_workers() -> int:
    """Worker processes of a large replay: one per CPU, at most 4."""
    return max(1, min(os.cpu_count() or 1, 4))


#: Below this many studies a replay runs in the calling process.  Each spawned worker costs
#: about 1-1.5 s of CPU to start (imports) and the header text is pickled to it; on the shared
#: 2-core box a 10,000-study replay took 4.5-4.7 s of CPU in one process against 7.2-8.7 s
#: with two workers, and more wall time under load (bench/replay.py, docs/benchmarks.md).
PARALLEL_MIN = 20_000


def replay(
    index: StoredStudies,
    rules: RuleSet,
    *,
    since: float,
    until: float | None = None,
    current_rules: RuleSet | None = None,
    stored: Callable[[str], Mapping[str, Any] | None] | None = None,
    stored_many: Callable[[Sequence[str]], Mapping[str, Mapping[str, Any]]] | None = None,
    destinations: Sequence[str] | None = None,
    workers: int = 1,
    parallel_min: int = PARALLEL_MIN,
) -> Replay:
    """Replay ``rules`` on the studies whose last instance arrived in ``[since, until)``.

    Parameters
    ----------
    index:
        The node's index (read only; the stored series headers).
    rules:
        The candidate rule set.
    since, until:
        The window, epoch seconds (``until`` default: now).
    current_rules:
        The active rules: the current routing of a study without a stored routing record
        (without them, such a study's current routing is empty).
    stored:
        The stored routing record of a study (``JobStore.routing_decisions``), or None.
    stored_many:
        The same for many studies at once (``JobStore.routing_decisions_many``: study UID ->
        record, absent when none); read once for the window, used instead of ``stored``.
    destinations:
        The config's destinations (where results go when neither rule nor defaults say).
    workers, parallel_min:
        With ``workers`` > 1 and at least ``parallel_min`` studies, the headers are decoded
        and routed in that many worker processes (spawned; the index and the routing records
        are read here, once); the result is the same, in the same order.
    """
    with _rare_full_collections():
        return _replay(
            index,
            rules,
            since=since,
            until=until,
            current_rules=current_rules,
            stored=stored,
            stored_many=stored_many,
            destinations=destinations,
            workers=workers,
            parallel_min=parallel_min,
        )


def _replay(
    index: StoredStudies,
    rules: RuleSet,
    *,
    since: float,
    until: float | None,
    current_rules: RuleSet | None,
    stored: Callable[[str], Mapping[str, Any] | None] | None,
    stored_many: Callable[[Sequence[str]], Mapping[str, Mapping[str, Any]]] | None,
    destinations: Sequence[str] | None,
    workers: int,
    parallel_min: int,
) -> Replay:
    start = time.perf_counter()
    until = time.time() if until is None else until
    raws = index.studies_received_raw(since, until)
    if stored_many is not None:
        records = stored_many([raw[0] for raw in raws])
        items: list[_Item] = [(raw, records.get(raw[0])) for raw in raws]
    else:
        items = [(raw, stored(raw[0]) if stored is not None else None) for raw in raws]
    if workers > 1 and len(items) >= max(parallel_min, 2):
        size = -(-len(items) // workers)
        chunks = [items[i : i + size] for i in range(0, len(items), size)]
        with ProcessPoolExecutor(
            max_workers=len(chunks), mp_context=multiprocessing.get_context("spawn")
        ) as pool:
            parts = list(
                pool.map(_replay_chunk, [(c, rules, current_rules, destinations) for c in chunks])
            )
        out = [s for part in parts for s in part]
    else:
        out = _replay_chunk((items, rules, current_rules, destinations))
    result = Replay(
        since=since,
        until=until,
        studies=tuple(out),
        seconds=time.perf_counter() - start,
        days=_days(since, until),
    )
    log.info(  # counts only: no UID, no header value
        "rules.replayed",
        extra={
            "studies": len(out),
            "changed": sum(1 for s in out if s.changed),
            "seconds": round(result.seconds, 3),
            "workers": workers if len(items) >= max(parallel_min, 2) else 1,
        },
    )
    return result
