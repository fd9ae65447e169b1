"""Routing one completed study: rules -> decisions -> qualified series -> planned jobs, and what
the job store keeps of the routing.

``plan_study`` does the routing's thinking; ``Node.route`` (node/app.py) only carries out what
it returns: it queues the forwards, schedules the workitems, submits the jobs, asks for the
priors and records the routing.  The stored instances of each series are looked up once for the
whole routing (``SeriesLookup``): the volume split, the jobs' input fingerprints, the forwards
and the workitems all read the same list.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import dicom_rules
from dicom_rules import Priors, RouteDecision, RuleSet
from node.routing.dispatch import route_study, routing_record, series_inputs
from node.routing.plan import Plan, plan_jobs, with_model_versions
from node.routing.qualify import Refusal, SeriesQualifier, qualify_study, unrouted_series
from node.types import DicomJson, Instance, Job, PriorOutcome, PriorState, Study

__all__ = [
    "PriorQuery",
    "PriorWait",
    "SeriesLookup",
    "StudyPlan",
    "plan_study",
    "prior_query",
    "qualify_decisions",
    "series_numbers",
]

log = logging.getLogger(__name__)


class SeriesLookup:
    """``Index.series_instances`` asked once per series for one routing.

    Parameters
    ----------
    lookup:
        The stored instances of a series (``Index.series_instances``).
    data_dir:
        What relative instance paths are relative to (``paths`` makes them absolute).
    """

    def __init__(self, lookup: Callable[[str], Sequence[Instance]], *, data_dir: Path) -> None:
        self._lookup = lookup
        self._data_dir = data_dir
        self._seen: dict[str, list[Instance]] = {}

    def __call__(self, series_uid: str) -> list[Instance]:
        """The stored instances of ``series_uid`` (looked up at the first call)."""
        if series_uid not in self._seen:
            self._seen[series_uid] = list(self._lookup(series_uid))
        return self._seen[series_uid]

    def paths(self, series_uid: str) -> list[Path]:
        """The instances' files, absolute."""
        return [
            i.path if i.path.is_absolute() else self._data_dir / i.path for i in self(series_uid)
        ]


@dataclass(frozen=True, slots=True)
class PriorWait:
    """The jobs of ``rule`` wait until ``deadline`` while the prior it asks for is fetched."""

    rule: str
    priors: Priors
    series_uids: tuple[str, ...]
    deadline: float


@dataclass(frozen=True, slots=True, eq=False)
class StudyPlan:
    """What one routing of a study asks for, and what the job store keeps of it."""

    #: the rules' decisions (``combine`` off when the node cannot combine)
    decisions: tuple[RouteDecision, ...]
    #: jobs and forwards as planned (``node.routing.plan.plan_jobs``)
    plan: Plan
    #: ``plan.jobs`` with their prior waits and model versions: what to submit
    jobs: tuple[Job, ...]
    #: one per rule with ``priors`` that runs a model
    waits: tuple[PriorWait, ...]
    #: ``JobStore.record_routing``'s ``decisions`` (``node.routing.dispatch.routing_record``)
    record: dict[str, Any]
    #: the instances this routing looked up (forwards and workitems read them again)
    series: SeriesLookup


def series_numbers(study: Study) -> list[int]:
    """Series Numbers (0020,0011) of the study's series, from their DICOM JSON headers."""
    out = []
    for series in study.series:
        values = series.header.get("00200011", {}).get("Value") or []
        try:
            out += [int(values[0])] if values else []
        except (TypeError, ValueError):
            continue
    return out


def plan_study(
    rules: RuleSet,
    study: Study,
    *,
    destinations: Sequence[str],
    series: SeriesLookup,
    refusals: Callable[[], Mapping[str, Refusal]],
    model_versions: Callable[[], Mapping[str, str]],
    can_combine: bool,
    combine: bool,
    prior_timeout_seconds: float,
) -> StudyPlan:
    """Route ``study`` with ``rules`` and plan its jobs, queueing nothing.

    Parameters
    ----------
    rules:
        The active rule set.
    study:
        The completed study.
    destinations:
        Every configured destination (``route_study``).
    series:
        The stored instances of each series, looked up once for this routing.
    refusals:
        Each discovered model's check of a volume (asked only when a decision names a model or
        a series is left unrouted).
    model_versions:
        The version of each model, as last described (asked after ``refusals``).
    can_combine:
        False when the node cannot combine results (remote workers keep no predictions for a
        combine job): every decision's ``combine`` is turned off.
    combine:
        The node's ``results.combine``, for rules that do not say.
    prior_timeout_seconds:
        How long the jobs of a rule with ``priors`` wait for their prior.
    """
    decisions = route_study(rules, study, destinations=list(destinations))
    if not can_combine:
        decisions = [dataclasses.replace(d, combine=False) for d in decisions]
    series_uids = [s.series_uid for s in study.series]
    qualifier = _qualifier(rules, decisions, series_uids, series=series, refusals=refusals)
    plan = plan_jobs(
        study.study_uid,
        decisions,
        series_instances=series,
        choose=qualifier.choose,
        combine=combine,
        taken_series_numbers=series_numbers(study),
    )
    not_applicable = [
        *plan.not_applicable,
        *qualifier.unrouted_records(rules, decisions, series_uids),
    ]
    waits = _prior_waits(decisions, deadline=time.time() + prior_timeout_seconds)
    jobs = _mark_waiting(plan.jobs, waits)
    record = routing_record(decisions, not_applicable, qualifier.volumes_json())
    for rule, model, _, reason, _ in not_applicable:
        log.info(
            "series.not_applicable",
            extra={"study_uid": study.study_uid, "rule": rule, "model": model, "reason": reason},
        )
    return StudyPlan(
        decisions=tuple(decisions),
        plan=plan,
        jobs=with_model_versions(jobs, model_versions()),
        waits=waits,
        record=record,
        series=series,
    )


def _qualifier(
    rules: RuleSet,
    decisions: Sequence[Any],
    series_uids: Sequence[str],
    *,
    series: SeriesLookup,
    refusals: Callable[[], Mapping[str, Refusal]],
) -> SeriesQualifier:
    """The qualifier of one routing; the models are described only when a decision names one
    or a series is left unrouted."""
    unrouted = unrouted_series(rules, decisions, series_uids)
    return SeriesQualifier(
        paths=series.paths,
        refusals=refusals() if unrouted or any(d.model for d in decisions) else {},
    )


def qualify_decisions(
    rules: RuleSet,
    study: Study,
    decisions: Sequence[Any],
    *,
    series: SeriesLookup,
    refusals: Callable[[], Mapping[str, Refusal]],
) -> dict[str, Any]:
    """What routing ``study`` with ``rules`` would record after the rules (volumes,
    not-applicable reasons), queueing nothing: the dry runs' half of ``plan_study``."""
    series_uids = [s.series_uid for s in study.series]
    qualifier = _qualifier(rules, decisions, series_uids, series=series, refusals=refusals)
    return qualify_study(
        rules=rules, decisions=decisions, series_uids=series_uids, qualifier=qualifier
    )


def _prior_waits(decisions: Sequence[RouteDecision], *, deadline: float) -> tuple[PriorWait, ...]:
    """One wait per rule with ``priors`` that runs a model (the last decision of a rule wins, as
    a dict keyed by rule did)."""
    waits = {
        d.rule: PriorWait(d.rule, d.priors, tuple(d.series_uids), deadline)
        for d in decisions
        if d.priors is not None and d.model is not None
    }
    return tuple(waits.values())


def _mark_waiting(jobs: Sequence[Job], waits: Sequence[PriorWait]) -> list[Job]:
    """The jobs of rules with ``priors`` marked waiting (until the priors timeout)."""
    deadline = {w.rule: w.deadline for w in waits}
    return [
        dataclasses.replace(j, prior=PriorOutcome(PriorState.WAITING, wait_until=deadline[j.rule]))
        if j.rule in deadline
        else j
        for j in jobs
    ]


@dataclass(frozen=True, slots=True)
class PriorQuery:
    """What to look for as the prior of a study, for the jobs of one rule with ``priors``: the
    patient and study date from the study's headers, and a check of a candidate series."""

    study_uid: str
    rule: str
    source: str
    patient_id: str | None
    issuer: str | None
    #: the study's Study Date (0008,0020) as sent (a DA value), None when absent
    study_date: str | None
    max_studies: int
    within_days: int | None
    deadline: float
    #: a candidate series' header -> (is it a match, why, its body part)
    is_match: Callable[[DicomJson], tuple[bool, str, str | None]]


def prior_query(
    rules: RuleSet,
    study: Study,
    priors: Priors,
    series_uids: Sequence[str],
    *,
    rule: str,
    deadline: float,
) -> PriorQuery:
    """What to fetch for ``study``'s jobs of a rule with ``priors`` (the patient and date
    from the study's headers, the body part of the decision's first series)."""
    inputs = {s.series_uid: s.header for s in series_inputs(study)}
    header: DicomJson = next(
        (dict(inputs[u]) for u in series_uids if u in inputs),
        dict(next(iter(inputs.values()), {})),
    )
    body_part = dicom_rules.body_part_of(rules, header)

    def is_match(candidate: DicomJson) -> tuple[bool, str, str | None]:
        m = dicom_rules.match_prior(rules, priors, candidate, body_part=body_part)
        return m.is_match, m.reason, m.body_part

    def text(tag: str) -> str | None:
        values = header.get(tag, {}).get("Value") or []
        return str(values[0]).strip() or None if values else None

    return PriorQuery(
        study_uid=study.study_uid,
        rule=rule,
        source=priors.source,
        patient_id=text("00100020"),
        issuer=text("00100021"),
        study_date=text("00080020"),
        max_studies=priors.max,
        within_days=priors.within_days,
        deadline=deadline,
        is_match=is_match,
    )
