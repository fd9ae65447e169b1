"""dicom_rules: a safe, explainable routing-rule language for DICOM headers.

Load a rule file, then route a study (its series' DICOM JSON headers)::

    rules = dicom_rules.load("rules.yaml", destinations={"pacs"})
    for decision in dicom_rules.route(rules, series):
        ...

See docs/rules.md for the language.  Nothing here performs I/O besides reading the rule file, and
nothing in a rule file can execute code.
"""

from dicom_rules.bodypart import BodyPart, BodyPartTable
from dicom_rules.errors import Problem, RuleError
from dicom_rules.evaluate import explain, route
from dicom_rules.explanation import Explanation, SeriesExplanation, Status, Verdict
from dicom_rules.model import (
    Action,
    AllOf,
    AnyOf,
    AttributePath,
    Compare,
    Condition,
    Defaults,
    DeliverSource,
    Not,
    Op,
    Preference,
    Priors,
    PrivateTag,
    ResultsOptions,
    RouteDecision,
    Rule,
    RuleKind,
    RuleSet,
    Scope,
    Select,
    SeriesInput,
    VolumeSelect,
    WorkitemRequest,
)
from dicom_rules.parse import load, parse
from dicom_rules.paths import parse_path
from dicom_rules.priors import PriorMatch, body_part_of, match_prior
from dicom_rules.render import render

__all__ = [
    "Action",
    "AllOf",
    "AnyOf",
    "AttributePath",
    "BodyPart",
    "BodyPartTable",
    "Compare",
    "Condition",
    "Defaults",
    "DeliverSource",
    "Explanation",
    "Not",
    "Op",
    "Preference",
    "PriorMatch",
    "Priors",
    "PrivateTag",
    "Problem",
    "ResultsOptions",
    "RouteDecision",
    "Rule",
    "RuleError",
    "RuleKind",
    "RuleSet",
    "Scope",
    "Select",
    "SeriesExplanation",
    "SeriesInput",
    "Status",
    "Verdict",
    "VolumeSelect",
    "WorkitemRequest",
    "body_part_of",
    "explain",
    "load",
    "match_prior",
    "parse",
    "parse_path",
    "render",
    "route",
]
