"""Routing stage: the node-side adapter around ``dicom_rules`` (dispatch, hot reload)."""

from node.routing.dispatch import route_study, series_inputs
from node.routing.headers import header_from_dataset, header_from_file
from node.routing.reload import RuleHolder, RuleStatus

__all__ = [
    "RuleHolder",
    "RuleStatus",
    "header_from_dataset",
    "header_from_file",
    "route_study",
    "series_inputs",
]
