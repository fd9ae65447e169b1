"""Matching a candidate prior series against a rule's ``priors`` (pure: no I/O).

The node queries a source for the patient's earlier studies and their series (C-FIND or QIDO-RS)
and asks, for each series' DICOM JSON header (PS3.18 F.2), whether it may serve as the prior of
the current study: ``priors.match`` must be true on it, and its body part (derived as the rules
derive it: ``BodyPartExamined``, anatomic region codes, then description keywords; the rule file's
``body_parts`` synonyms apply) must be the current series' body part.  The answer carries the
reason, for the job record and ``explain``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from dicom_rules.conditions import Context, compile_condition, table_for
from dicom_rules.model import AttributePath, Priors, RuleSet

__all__ = ["PriorMatch", "body_part_of", "match_prior"]


@dataclass(frozen=True, slots=True)
class PriorMatch:
    """Whether a candidate series may be the prior, and why (or why not)."""

    is_match: bool
    reason: str
    body_part: str | None


def body_part_of(ruleset: RuleSet, header: Mapping[str, Any]) -> str | None:
    """The canonical body part of the series whose DICOM JSON header is ``header`` (never
    raises; None when nothing in the header names one)."""
    return table_for(ruleset.body_parts).derive(header).value


def match_prior(
    ruleset: RuleSet,
    priors: Priors,
    header: Mapping[str, Any],
    *,
    body_part: str | None,
) -> PriorMatch:
    """Does the candidate series ``header`` satisfy ``priors`` for a study of ``body_part``?

    Parameters
    ----------
    ruleset:
        The rules ``priors`` came from (their ``body_parts`` synonyms apply).
    priors:
        The rule's ``priors``.
    header:
        The candidate series' DICOM JSON header, as answered by the source's query.
    body_part:
        The canonical body part of the current study's series (``body_part_of``); None: the
        body part is not compared (only ``match`` decides).

    Returns
    -------
    PriorMatch
        Never raises on header content: absent or malformed values make comparisons false.
    """
    table = table_for(ruleset.body_parts)
    paths: dict[AttributePath, int] = {}

    def index(path: AttributePath) -> int:
        return paths.setdefault(path, len(paths))

    node = compile_condition(priors.match, index)
    ctx = Context(0, "", header, 1, len(paths), table)
    theirs = ctx.body.value
    if not node.test(ctx):
        return PriorMatch(False, f"match: {node.why(ctx)}", theirs)
    if body_part is not None and theirs != body_part:
        return PriorMatch(
            False,
            f"body part {theirs or 'unknown'} is not the current study's {body_part}",
            theirs,
        )
    return PriorMatch(True, f"match: {node.why_true(ctx)}", theirs)
