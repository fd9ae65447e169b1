"""Routing stage adapter: a ``node.types.Study`` in, ``dicom_rules.RouteDecision``s out.

``dicom_rules`` knows nothing about the node; this module turns each ``Series`` (its DICOM JSON
header and instance count) into the library's input.  When a stored header lacks Modality or
BodyPartExamined but the ``Series`` record has them (from the ingest index), they are added to a
copy of the header so that rules see them.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from typing import Any

import dicom_rules
from dicom_rules import RouteDecision, RuleSet, SeriesInput
from node.types import DicomJson, Series, Study

__all__ = ["prior_study_record", "route_study", "routing_record", "series_inputs"]

log = logging.getLogger(__name__)

_MODALITY = "00080060"
_BODY_PART = "00180015"
_SERIES_DESCRIPTION = "0008103E"
_SERIES_UID = "0020000E"


def _header_of(series: Series) -> DicomJson:
    header = series.header if isinstance(series.header, dict) else {}
    extra: DicomJson = {}
    if series.modality and _MODALITY not in header:
        extra[_MODALITY] = {"vr": "CS", "Value": [series.modality]}
    if series.body_part and _BODY_PART not in header:
        extra[_BODY_PART] = {"vr": "CS", "Value": [series.body_part]}
    if series.series_description and _SERIES_DESCRIPTION not in header:
        extra[_SERIES_DESCRIPTION] = {"vr": "LO", "Value": [series.series_description]}
    if _SERIES_UID not in header:
        extra[_SERIES_UID] = {"vr": "UI", "Value": [series.series_uid]}
    return {**header, **extra} if extra else header


def series_inputs(study: Study) -> list[SeriesInput]:
    """The library input for every series of ``study``."""
    return [
        SeriesInput(series_uid=s.series_uid, header=_header_of(s), instance_count=s.instance_count)
        for s in study.series
    ]


def route_study(
    rules: RuleSet, study: Study, *, destinations: Sequence[str] | None = None
) -> list[RouteDecision]:
    """Route one completed study.

    Parameters
    ----------
    rules:
        The active rule set (see ``node.routing.reload.RuleHolder``).
    study:
        The study the assembly stage declared complete.
    destinations:
        Every destination in the config (used when neither a rule nor the file's ``defaults``
        says where results go); default: the destinations given when the rules were loaded.

    Returns
    -------
    list[RouteDecision]
        Including ``ignored`` decisions (no job) so that the explanation is complete; each
        decision carries the explanation of the whole study.
    """
    decisions = dicom_rules.route(rules, series_inputs(study), destinations=destinations)
    log.info(
        "study.routed",
        extra={
            "study_uid": study.study_uid,
            "generation": study.generation,
            "series": len(study.series),
            "decisions": len(decisions),
            "models": sorted({d.model for d in decisions if d.model is not None}),
        },
    )
    return decisions


def routing_record(
    decisions: Sequence[RouteDecision],
    not_applicable: Iterable[tuple[str | None, str | None, str, str, str]],
    volumes: Any,
) -> dict[str, Any]:
    """What the job store keeps of one routing (``JobStore.record_routing``): the decisions,
    the explanation, the not-applicable series with their reasons and the volumes chosen.

    ``not_applicable`` holds (rule, model, series UID, reason, detail) tuples.
    """
    explanation = decisions[0].explanation if decisions else None
    return {
        "decisions": [
            {
                "rule": d.rule,
                "model": d.model,
                "series_uids": list(d.series_uids),
                "deliver": list(d.deliver),
                "send_to": d.send_to,
                "ignored": d.ignored,
                **({"workitem": d.workitem.code} if d.workitem else {}),
            }
            for d in decisions
        ],
        "explanation": explanation.to_json() if explanation is not None else None,
        "not_applicable": [
            {
                "rule": rule,
                "model": model,
                "series_uid": series_uid,
                "reason": reason,
                "detail": detail,
            }
            for rule, model, series_uid, reason, detail in not_applicable
        ],
        "volumes": volumes,
    }


def prior_study_record(prior_of: str) -> dict[str, Any]:
    """What the job store keeps of a study retrieved as the prior of study ``prior_of``: no
    decision (a prior is stored, never routed as a new study)."""
    return {"decisions": [], "explanation": None, "not_applicable": [], "prior_of": prior_of}
