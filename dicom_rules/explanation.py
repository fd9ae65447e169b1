"""The explanation of one routing: per series, the body part and every rule's verdict and reason.

``Explanation.to_json()`` is what ``ainode rules explain`` prints and what the node stores with
each routing (see docs/rules.md, "Reading explain").
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any

from dicom_rules.bodypart import BodyPart
from dicom_rules.model import Priors, RouteDecision
from dicom_rules.render import condition_data

__all__ = ["Explanation", "SeriesExplanation", "Status", "Verdict", "decision_json"]


class Status(enum.StrEnum):
    """A rule's verdict on one series."""

    MATCHED = "matched"  #: condition true and the rule acted on this series
    NOT_MATCHED = "not matched"  #: condition false (reason says which part, with the value seen)
    NOT_SELECTED = "not selected"  #: study rule matched but ``select`` chose other series
    SKIPPED = "skipped"  #: a higher-priority rule claimed the series (``stop`` or ``ignore``)
    NOT_NEEDED = "not needed"  #: fallback rule; another rule already matched the series


@dataclass(slots=True)
class Verdict:
    """One rule on one series (not frozen only so that the lazy reason can be cached).

    ``reason`` is computed on first access (routing builds thousands of verdicts, and most are
    never read); ``lazy`` is the (prefix, condition, series) it is computed from.
    """

    rule: str
    status: Status
    text: str | None = field(default=None, compare=False, repr=False)
    priority: int = 0
    lazy: Any = field(default=None, compare=False, repr=False)

    @property
    def reason(self) -> str:
        """Why: which condition failed, with the value seen ("tag absent" when absent)."""
        text = self.text
        if text is None:
            prefix, node, ctx = self.lazy
            text = prefix + node.why(ctx)
            self.text = text
            self.lazy = None
        return text

    def to_json(self) -> dict[str, Any]:
        """JSON form."""
        return {
            "rule": self.rule,
            "priority": self.priority,
            "verdict": str(self.status),
            "reason": self.reason,
        }


@dataclass(frozen=True, slots=True)
class SeriesExplanation:
    """Everything the rules saw and decided for one series."""

    series_uid: str
    instance_count: int
    modality: str | None
    body_part: BodyPart
    orientation: str | None
    verdicts: tuple[Verdict, ...]
    outcome: str

    def to_json(self) -> dict[str, Any]:
        """JSON form."""
        return {
            "series_uid": self.series_uid,
            "instance_count": self.instance_count,
            "modality": self.modality,
            "body_part": self.body_part.to_json(),
            "orientation": self.orientation,
            "outcome": self.outcome,
            "rules": [v.to_json() for v in self.verdicts],
        }

    def verdict(self, rule: str) -> Verdict:
        """The verdict of the rule called ``rule`` (KeyError if none)."""
        for v in self.verdicts:
            if v.rule == rule:
                return v
        raise KeyError(rule)


@dataclass(frozen=True, slots=True)
class Explanation:
    """The whole routing of one study."""

    source: str
    series: tuple[SeriesExplanation, ...]
    decisions: tuple[RouteDecision, ...]

    def to_json(self) -> dict[str, Any]:
        """JSON form (``ainode rules explain``)."""
        return {
            "rules": self.source,
            "decisions": [decision_json(d) for d in self.decisions],
            "series": [s.to_json() for s in self.series],
        }

    def for_series(self, series_uid: str) -> SeriesExplanation:
        """The explanation of one series (KeyError if not in the study)."""
        for s in self.series:
            if s.series_uid == series_uid:
                return s
        raise KeyError(series_uid)


def decision_json(d: RouteDecision) -> dict[str, Any]:
    """JSON form of a decision (without the explanation)."""
    out: dict[str, Any] = {
        "rule": d.rule,
        "model": d.model,
        "parameters": dict(d.parameters),
        "series_uids": list(d.series_uids),
        "deliver": list(d.deliver),
        "deliver_source": str(d.deliver_source),
        "send_to": d.send_to,
        "priority": d.priority,
        "ignored": d.ignored,
    }
    if d.volume is not None:  # select.volume: the node applies it to the series' volumes
        v = d.volume
        out["volume"] = {
            "orientation": list(v.orientation),
            "echo": v.echo,
            "uniform": v.uniform,
            "prefer": list(v.prefer),
            "partial": "allow" if v.partial else "refuse",
        }
    if d.combine is not None or d.prefer:  # the rule's results: {combine, prefer}
        out["results"] = {"combine": d.combine, "prefer": list(d.prefer)}
    if d.workitem is not None:  # a UPS workitem to schedule (issue 23)
        w = d.workitem
        out["workitem"] = {
            "code": w.code,
            "meaning": w.meaning,
            "scheme": w.scheme,
            "station": w.station,
            "priority": w.priority,
        }
    if d.priors is not None:  # the node fetches prior studies before the jobs run
        out["priors"] = priors_json(d.priors)
    return out


def priors_json(p: Priors) -> dict[str, Any]:
    """JSON form of a rule's ``priors`` (the match condition in rule-file syntax)."""
    return {
        "from": p.source,
        "max": p.max,
        "within_days": p.within_days,
        "match": condition_data(p.match) if p.match is not None else None,
    }
