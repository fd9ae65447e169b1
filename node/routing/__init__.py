"""Routing stage: the node-side adapter around ``dicom_rules`` (dispatch, hot reload)."""

from pathlib import Path

from node.imaging.dicom_json import header_from_dataset, header_from_file
from node.routing.dispatch import route_study, series_inputs
from node.routing.reload import RuleHolder, RuleStatus

#: The packaged copy of deploy/rules.example.yaml (for `ainode demo` and configs without
#: `rules:`); a test keeps the two identical.
DEFAULT_RULES = Path(__file__).with_name("default_rules.yaml")

__all__ = [
    "DEFAULT_RULES",
    "RuleHolder",
    "RuleStatus",
    "header_from_dataset",
    "header_from_file",
    "route_study",
    "series_inputs",
]
