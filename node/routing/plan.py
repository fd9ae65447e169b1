"""Routing decisions -> jobs (one per model and series) and forwards of originals: routing
owns job planning (``node.routing.study_plan`` plans a whole study with it).

Each job of a study gets a deterministic ordinal (its place in the routing decisions, which
follow the rule file and the series order); its result series are numbered from
``series_number_base(ordinal)`` (``Job.series_number_base``; job 0: 9001, 9002...; job 1:
10001...), so the SEG/SR/SC series
of different jobs in one study never share a Series Number.

A job's id comes from study, rule, model, series and the exact stored instances of that series
(SOP UID + content hash), so a study that completes again unchanged creates no new work, and a
late instance creates a new job that supersedes the previous one (``JobStore.submit``).

Combining (``combine``, a rule's ``results.combine``): when a rule runs two or more models on a
series, its model jobs carry ``_combined_by`` (their own objects are not delivered) and one more
job, of "model" ``COMBINE_MODEL``, lists them in ``_combine_of`` (rule order).  It runs once they
are all final and delivers one SEG, SR, key-image series and KOS (``node.jobs.pipeline``).  Its
id comes from the ids it combines, so a re-routing with the same inputs adds nothing; its Series
Numbers start at the base of the rule's first model job.  A rule with one model delivers that
model's objects as they are.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Protocol

from node.types import COMBINE_MODEL, Instance, Job, job_id_for

__all__ = [
    "Plan",
    "Stale",
    "no_longer_routed",
    "plan_jobs",
    "series_number_base",
    "with_model_versions",
]

#: Result series numbers per job: job ``k`` numbers its series ``9000 + 1000 k + 1, + 2...``
SERIES_NUMBER_START = 9000
SERIES_NUMBERS_PER_JOB = 1000


def series_number_base(ordinal: int) -> int:
    """Series Number base of the ``ordinal``-th job (0-based) routed for a study."""
    return SERIES_NUMBER_START + SERIES_NUMBERS_PER_JOB * ordinal


class _Decision(Protocol):
    @property
    def rule(self) -> str: ...
    @property
    def model(self) -> str | None: ...
    @property
    def parameters(self) -> object: ...
    @property
    def series_uids(self) -> tuple[str, ...]: ...
    @property
    def deliver(self) -> tuple[str, ...]: ...
    @property
    def send_to(self) -> str | None: ...
    @property
    def priority(self) -> int: ...
    @property
    def ignored(self) -> bool: ...


class _Choice(Protocol):
    @property
    def volume_id(self) -> str | None: ...
    @property
    def reason(self) -> object: ...
    @property
    def detail(self) -> str | None: ...
    @property
    def dropped(self) -> tuple[str, ...]: ...


@dataclass(frozen=True, slots=True)
class Plan:
    """What one routing of a study asks for."""

    jobs: tuple[Job, ...] = ()
    forwards: tuple[tuple[str, str], ...] = ()  # (destination, series_uid)
    ignored_rules: tuple[str, ...] = field(default=())
    #: (rule, model, series_uid, reason, detail) of model decisions that create no job
    not_applicable: tuple[tuple[str, str, str, str, str], ...] = ()
    #: (rule, series_uid, the rule's ``workitem`` request) of decisions that schedule a workitem
    workitems: tuple[tuple[str, str, Any], ...] = ()


def _fingerprint(instances: Sequence[Instance]) -> str:
    h = hashlib.sha256()
    for inst in sorted(instances, key=lambda i: i.sop_uid):
        h.update(f"{inst.sop_uid}\x1f{inst.sha256}\n".encode())
    return h.hexdigest()


def plan_jobs(
    study_uid: str,
    decisions: Sequence[_Decision],
    *,
    series_instances: Callable[[str], Sequence[Instance]],
    now: float | None = None,
    choose: Callable[[_Decision, str], _Choice | None] | None = None,
    combine: bool = False,
    taken_series_numbers: Collection[int] = (),
) -> Plan:
    """Turn routing decisions into jobs and forwards.

    Parameters
    ----------
    study_uid:
        The routed study.
    decisions:
        ``dicom_rules.RouteDecision`` values for the study.
    series_instances:
        Stored instances of a series (``Index.series_instances``; ``study_plan`` passes one
        lookup per series for the whole routing).
    now:
        Creation time frozen into the job (``Job.created_at``, and so into its result objects'
        content date).
    choose:
        The volume a decision's model gets on a series (``node.routing.qualify``): a volume id
        goes into the job (``_volume``); a reason means "not applicable": no job.
    combine:
        Combine the results of a rule's models (the node's ``results.combine``), for rules that
        do not say (their ``results.combine``).
    taken_series_numbers:
        Series Numbers of the study's own series (a combined set avoids them).
    """
    created = time.time() if now is None else now
    jobs: list[Job] = []
    forwards: list[tuple[str, str]] = []
    workitems: list[tuple[str, str, Any]] = []
    ignored: list[str] = []
    not_applicable: list[tuple[str, str, str, str, str]] = []
    #: (rule, series) -> [combine, prefer, model count, {model: why it did not run}]
    groups: dict[tuple[str, str], list[Any]] = {}
    job_group: list[tuple[str, str] | None] = []
    for d in decisions:
        if d.ignored:
            ignored.append(d.rule)
            continue
        for series_uid in d.series_uids:
            if d.send_to:
                forwards.append((d.send_to, series_uid))
            request = getattr(d, "workitem", None)
            if request is not None:
                workitems.append((d.rule, series_uid, request))
            if d.model is None:
                continue
            wanted = getattr(d, "combine", None)
            group = groups.setdefault(
                (d.rule, series_uid),
                [combine if wanted is None else bool(wanted), getattr(d, "prefer", ()), 0, {}],
            )
            group[2] += 1
            choice = choose(d, series_uid) if choose is not None else None
            if choice is not None and choice.reason is not None:
                not_applicable.append(
                    (d.rule, d.model, series_uid, str(choice.reason), choice.detail or "")
                )
                why = f"not applicable: {choice.reason}"
                group[3][d.model] = why + (f" ({choice.detail})" if choice.detail else "")
                continue
            fp = series_uid + ":" + _fingerprint(series_instances(series_uid))
            params = dict(d.parameters) if isinstance(d.parameters, dict) else {}
            if choice is not None and choice.volume_id is not None:
                params["_volume"] = choice.volume_id
                if choice.volume_id != series_uid:  # one volume of several: its own job id
                    fp += ":" + choice.volume_id
                if choice.dropped:
                    params["_dropped"] = list(choice.dropped)
            jobs.append(
                Job(
                    job_id=job_id_for(
                        study_uid=study_uid, rule=d.rule, model=d.model, input_fingerprint=fp
                    ),
                    study_uid=study_uid,
                    series_uids=(series_uid,),
                    model=d.model,
                    rule=d.rule,
                    parameters=params,
                    destinations=tuple(d.deliver),
                    priority=d.priority,
                    created_at=int(created),
                    series_number_base=series_number_base(len(jobs)),
                )
            )
            job_group.append((d.rule, series_uid))
    jobs += _combine_jobs(
        study_uid, jobs, job_group, groups, created=created, taken=taken_series_numbers
    )
    return Plan(
        jobs=tuple(jobs),
        forwards=tuple(forwards),
        ignored_rules=tuple(ignored),
        not_applicable=tuple(not_applicable),
        workitems=tuple(workitems),
    )


def _combine_jobs(
    study_uid: str,
    jobs: list[Job],
    job_group: Sequence[tuple[str, str] | None],
    groups: dict[tuple[str, str], list[Any]],
    *,
    created: float,
    taken: Collection[int],
) -> list[Job]:
    """One combine job per (rule, series) whose rule combines two or more models; the model
    jobs it combines (in ``jobs``) get ``_combined_by``.  Models that got different volumes of
    the series cannot share one SEG: they keep their own results."""
    members: dict[tuple[str, str], list[int]] = {}
    for n, key in enumerate(job_group):
        if key is None:
            continue
        wanted, _, count, _ = groups[key]
        if wanted and count >= 2:
            members.setdefault(key, []).append(n)
    out: list[Job] = []
    for (rule, series_uid), indices in members.items():
        _, prefer, _, not_run = groups[(rule, series_uid)]
        group = [jobs[n] for n in indices]
        if len({str(j.parameters.get("_volume", "")) for j in group}) > 1:
            continue
        ids = [j.job_id for j in group]
        combine_id = job_id_for(
            study_uid=study_uid,
            rule=rule,
            model=COMBINE_MODEL,
            input_fingerprint="\x1e".join(ids),
        )
        first = group[0]
        params: dict[str, Any] = {
            "_combine_of": ids,
            "_prefer": list(prefer),
            "_not_run": dict(sorted(not_run.items())),
            "_taken_series_numbers": sorted({int(n) for n in taken}),
        }
        for name in ("_volume", "_dropped"):
            if name in first.parameters:
                params[name] = first.parameters[name]
        destinations: list[str] = []
        for j in group:
            destinations += [d for d in j.destinations if d not in destinations]
        out.append(
            Job(
                job_id=combine_id,
                study_uid=study_uid,
                series_uids=(series_uid,),
                model=COMBINE_MODEL,
                rule=rule,
                parameters=params,
                destinations=tuple(destinations),
                priority=max(j.priority for j in group),
                created_at=int(created),
                series_number_base=first.series_number_base,
            )
        )
        for n in indices:
            jobs[n] = replace(
                jobs[n], parameters={**jobs[n].parameters, "_combined_by": combine_id}
            )
    return out


def with_model_versions(jobs: Sequence[Job], versions: Mapping[str, str]) -> tuple[Job, ...]:
    """``jobs`` with the version of their model recorded (``Job.model_version``; a combine
    job: the parameter ``_model_versions`` of the models it combines), when the router knows it.

    A re-routing whose model version differs from the one a finished job ran with runs that
    job again (``node.jobs.store.rerun_reason``); its new result objects have new UIDs (they
    derive from job id and model version) and replace the old ones (docs/results.md).
    """
    out = [replace(j, model_version=versions[j.model]) if j.model in versions else j for j in jobs]
    by_id = {j.job_id: j for j in out}
    for n, j in enumerate(out):
        if j.model != COMBINE_MODEL:
            continue
        combined = [by_id.get(str(i)) for i in j.parameters.get("_combine_of", [])]
        known = {c.model: versions[c.model] for c in combined if c and c.model in versions}
        if known:
            out[n] = replace(j, parameters={**j.parameters, "_model_versions": known})
    return tuple(out)


class _Stored(Protocol):
    @property
    def job(self) -> Job: ...
    @property
    def superseded_by(self) -> str | None: ...


@dataclass(frozen=True, slots=True)
class Stale:
    """What a re-routing of a study no longer asks for (``no_longer_routed``)."""

    #: jobs whose delivered or queued results, if they have any, are to be rejected (a job
    #: part of a combined set delivers none of its own: nothing of it is in the outbox)
    reject: tuple[str, ...] = ()
    #: jobs not routed any more at all: not to run, not to deliver (``JobStore.retire``)
    retire: tuple[str, ...] = ()


def _key(job: Job) -> tuple[str, str, tuple[str, ...]]:
    return (job.rule, job.model, tuple(job.series_uids))


def no_longer_routed(stored: Sequence[_Stored], planned: Sequence[Job]) -> Stale:
    """The stored jobs of a study whose results a new routing ``planned`` does not produce.

    A job delivers its own results unless it is part of a combined set (``_combined_by``).
    A stored job is stale when no planned job that delivers has its id, and none has its
    study, rule, model and series either: those older runs of the same work (late instances)
    are rejected when their successor succeeds (``JobStore.predecessors``), not here.  So a
    rule renamed or removed, a model taken out of a rule, ``combine`` switched either way, or
    a series no longer matched make their earlier results stale.
    """
    delivering = {j.job_id for j in planned if not j.parameters.get("_combined_by")}
    keys = {_key(j) for j in planned if j.job_id in delivering}
    planned_ids = {j.job_id for j in planned}
    reject: list[str] = []
    retire: list[str] = []
    for record in stored:
        job = record.job
        if job.job_id in delivering or _key(job) in keys:
            continue
        reject.append(job.job_id)
        if job.job_id not in planned_ids:
            retire.append(job.job_id)
    return Stale(reject=tuple(sorted(reject)), retire=tuple(sorted(retire)))
