"""Routing stage: the node-side adapter around ``dicom_rules`` (dispatch, hot reload) and the
owner of job planning (``plan``: decisions -> jobs; ``study_plan``: a study -> its routing)."""

from pathlib import Path

from node.imaging.dicom_json import header_from_dataset, header_from_file
from node.routing.dispatch import prior_study_record, route_study, routing_record, series_inputs
from node.routing.plan import Plan, Stale, no_longer_routed, plan_jobs, series_number_base
from node.routing.reload import RuleHolder, RuleStatus
from node.routing.study_plan import (
    PriorQuery,
    PriorWait,
    SeriesLookup,
    StudyPlan,
    plan_study,
    prior_query,
    qualify_decisions,
)

#: The packaged copy of deploy/rules.example.yaml (for `ainode demo` and configs without
#: `rules:`); a test keeps the two identical.
DEFAULT_RULES = Path(__file__).with_name("default_rules.yaml")

__all__ = [
    "DEFAULT_RULES",
    "Plan",
    "PriorQuery",
    "PriorWait",
    "RuleHolder",
    "RuleStatus",
    "SeriesLookup",
    "Stale",
    "StudyPlan",
    "header_from_dataset",
    "header_from_file",
    "no_longer_routed",
    "plan_jobs",
    "plan_study",
    "prior_query",
    "prior_study_record",
    "qualify_decisions",
    "route_study",
    "routing_record",
    "series_inputs",
    "series_number_base",
]
