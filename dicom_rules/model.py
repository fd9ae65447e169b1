"""The rule language as plain frozen dataclasses (what ``parse`` builds and ``render`` writes).

Positions (line/column in the source file) are kept for explanations and error messages but are
excluded from equality, so that ``parse(render(rules)) == rules`` compares meaning only.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from dicom_rules.explanation import Explanation

__all__ = [
    "SPECIAL_ATTRIBUTES",
    "Action",
    "AllOf",
    "AnyOf",
    "AttributePath",
    "Compare",
    "Condition",
    "Defaults",
    "DeliverSource",
    "Not",
    "Op",
    "Position",
    "Preference",
    "Priors",
    "PrivateTag",
    "ResultsOptions",
    "RouteDecision",
    "Rule",
    "RuleKind",
    "RuleSet",
    "Scalar",
    "Scope",
    "Select",
    "SeriesInput",
    "VolumeSelect",
    "WORKITEM_PRIORITIES",
    "WorkitemRequest",
]

#: Orders of ``select.volume.prefer`` (applied by the node to the volumes of a series).
VOLUME_PREFERENCES = (
    "thinnest",
    "thickest",
    "most_slices",
    "fewest_slices",
    "lowest_echo",
    "highest_echo",
    "lowest_b",
    "highest_b",
    "first",
    "last",
)
#: Values of ``select.volume.orientation``.
VOLUME_ORIENTATIONS = ("AXIAL", "CORONAL", "SAGITTAL", "OBLIQUE")

#: A value in a rule: a string or a number (never a bool).
Scalar = str | int | float

#: Attributes computed by dicom_rules rather than read from one tag (lower case: DICOM keywords
#: are CamelCase, so they can never collide).
SPECIAL_ATTRIBUTES = ("body_part", "orientation", "instance_count")


@dataclass(frozen=True, slots=True)
class Position:
    """1-based line and column of a YAML node (0, 0 when built in code)."""

    line: int = 0
    column: int = 0


_NOWHERE = Position()


def _pos() -> Any:
    return field(default=_NOWHERE, compare=False, repr=False)


class Op(enum.StrEnum):
    """Comparison operators of a condition."""

    EQUALS = "equals"
    IN = "in"
    NOT_IN = "not_in"
    MATCHES = "matches"
    CONTAINS = "contains"
    STARTSWITH = "startswith"
    LT = "lt"
    LE = "le"
    GT = "gt"
    GE = "ge"
    BETWEEN = "between"
    EXISTS = "exists"
    MISSING = "missing"


NUMERIC_OPS = frozenset({Op.LT, Op.LE, Op.GT, Op.GE, Op.BETWEEN})
STRING_OPS = frozenset({Op.MATCHES, Op.CONTAINS, Op.STARTSWITH})
LIST_OPS = frozenset({Op.IN, Op.NOT_IN})
PRESENCE_OPS = frozenset({Op.EXISTS, Op.MISSING})


class Scope(enum.StrEnum):
    """``series``: one decision per matching series; ``study``: one decision per study."""

    SERIES = "series"
    STUDY = "study"


class RuleKind(enum.StrEnum):
    """``route`` rules are evaluated first; ``fallback`` rules only see series nothing matched."""

    ROUTE = "route"
    FALLBACK = "fallback"


class DeliverSource(enum.StrEnum):
    """Where a decision's ``deliver`` list came from."""

    RULE = "rule"
    DEFAULTS = "defaults"
    CONFIG = "config"


@dataclass(frozen=True, slots=True)
class PrivateTag:
    """A private element addressed by its creator: group, private creator string, element byte.

    The block (``xx`` in ``(gggg,xxee)``) is found at evaluation time from the Private Creator
    element ``(gggg,00xx)`` whose value is ``creator`` (PS3.5 7.8.1).
    """

    group: int
    creator: str
    element: int


#: One step of a path: a tag number or a private tag.
Segment = int | PrivateTag


@dataclass(frozen=True, slots=True)
class AttributePath:
    """A tag, a nested path through sequences, or one of ``SPECIAL_ATTRIBUTES``.

    ``segments`` are empty for a special attribute.  Every segment but the last is a sequence
    (SQ); a path matches values in *any* item of each sequence.
    """

    segments: tuple[Segment, ...] = ()
    special: str | None = None

    def __str__(self) -> str:
        from dicom_rules.paths import format_path

        return format_path(self)


@dataclass(frozen=True, slots=True)
class Compare:
    """``path`` compared with ``op`` against ``value`` (see docs/rules.md for each operator)."""

    path: AttributePath
    op: Op
    value: Any
    case_sensitive: bool = False
    alias: str | None = None
    position: Position = _pos()


@dataclass(frozen=True, slots=True)
class AllOf:
    """True when every item is true (an empty ``all`` is true)."""

    items: tuple[Condition, ...]
    position: Position = _pos()


@dataclass(frozen=True, slots=True)
class AnyOf:
    """True when at least one item is true (an empty ``any`` is false)."""

    items: tuple[Condition, ...]
    position: Position = _pos()


@dataclass(frozen=True, slots=True)
class Not:
    """True when ``item`` is false (including false because a tag is absent)."""

    item: Condition
    position: Position = _pos()


Condition = Compare | AllOf | AnyOf | Not


@dataclass(frozen=True, slots=True)
class Preference:
    """One ordering criterion of ``select.prefer``.

    ``lowest``/``highest``: numeric value of ``path`` (series without it come last);
    ``matching``: series for which ``condition`` is true come first.
    """

    kind: str
    path: AttributePath | None = None
    condition: Condition | None = None
    position: Position = _pos()


@dataclass(frozen=True, slots=True)
class VolumeSelect:
    """Which volume of a series the model gets (a series may hold several: echoes, time
    points, b-values, planes...).  ``dicom_rules`` only parses and explains it; the node applies
    it to the volumes it finds in the headers (docs/rules.md, "Choosing a volume").

    ``orientation``: allowed planes (empty: any); ``echo``: echo number; ``uniform``: only volumes
    loaded as acquired (no filled gap, no tilt); ``prefer``: orders from ``VOLUME_PREFERENCES``,
    first wins; ``partial``: run on the decodable instances when some are not (``allow``).
    """

    orientation: tuple[str, ...] = ()
    echo: int | None = None
    uniform: bool = False
    prefer: tuple[str, ...] = ()
    partial: bool = False
    position: Position = _pos()


@dataclass(frozen=True, slots=True)
class Select:
    """Which of a study rule's matching series the model gets (``where``/``prefer``/``count``,
    study scope only), and which volume of each series (``volume``, any scope)."""

    where: Condition | None = None
    prefer: tuple[Preference, ...] = ()
    count: int | None = 1
    volume: VolumeSelect | None = None
    position: Position = _pos()


#: Scheduled Procedure Step Priority (0074,1200) enumerated values (PS3.3 C.30.1).
WORKITEM_PRIORITIES = ("HIGH", "MEDIUM", "LOW")


@dataclass(frozen=True, slots=True)
class WorkitemRequest:
    """A rule's ``workitem``: schedule a UPS workitem for an external performer (issue 23).

    ``code`` / ``scheme`` / ``meaning`` become the Scheduled Workitem Code Sequence, ``station``
    the Scheduled Station Name Code Sequence (same scheme), ``priority`` the Scheduled Procedure
    Step Priority.  The default scheme ``99AINODE`` is a local one (PS3.16 8.2: ``99`` prefix).
    """

    code: str
    meaning: str | None = None
    scheme: str = "99AINODE"
    station: str | None = None
    priority: str = "MEDIUM"


@dataclass(frozen=True, slots=True)
class Action:
    """What a matching rule does: run a model, forward originals, schedule a workitem, or
    ignore the series."""

    model: str | None = None
    parameters: Mapping[str, Any] = field(default_factory=dict)
    deliver: tuple[str, ...] | None = None
    send_to: str | None = None
    ignore: bool = False
    position: Position = _pos()
    workitem: WorkitemRequest | None = None


@dataclass(frozen=True, slots=True)
class ResultsOptions:
    """A rule's ``results``: combine its models' results into one set (None: the node's
    ``results.combine``), and whose segments win when two models segment the same structure."""

    combine: bool | None = None
    prefer: tuple[str, ...] = ()
    position: Position = _pos()


@dataclass(frozen=True, slots=True)
class Priors:
    """A rule's ``priors``: fetch up to ``max`` prior studies of the patient from the pull source
    ``source`` (a ``sources`` name of the node's config), taken ``within_days`` before the
    current study, whose series satisfy ``match`` and show the same body part.  ``dicom_rules``
    parses, explains and matches it (``dicom_rules.priors``); the node queries and retrieves.
    """

    source: str
    max: int = 1
    within_days: int | None = None
    match: Condition | None = None
    position: Position = _pos()


@dataclass(frozen=True, slots=True)
class Rule:
    """One named rule."""

    name: str
    actions: tuple[Action, ...]
    when: Condition | None = None
    description: str | None = None
    priority: int = 0
    scope: Scope = Scope.SERIES
    select: Select | None = None
    stop: bool = False
    kind: RuleKind = RuleKind.ROUTE
    position: Position = _pos()
    results: ResultsOptions | None = None
    priors: Priors | None = None

    @property
    def is_ignore(self) -> bool:
        """The rule ignores what it matches."""
        return any(a.ignore for a in self.actions)


@dataclass(frozen=True, slots=True)
class Defaults:
    """File-wide defaults: ``deliver`` for decisions without their own, priority and scope."""

    deliver: tuple[str, ...] | None = None
    priority: int = 0
    scope: Scope = Scope.SERIES


@dataclass(frozen=True, slots=True)
class SeriesInput:
    """One series of the study to route: its UID, one header (DICOM JSON), instance count."""

    series_uid: str
    header: Mapping[str, Any]
    instance_count: int = 1


@dataclass(frozen=True, slots=True)
class RouteDecision:
    """One thing to do for a study, with the explanation of the whole routing.

    ``model`` is None for a forward-only (``send_to``) or an ``ignored`` decision.
    ``deliver_source`` says whether ``deliver`` came from the rule, the file's ``defaults`` or
    the config's destinations (every destination when neither gives a list).
    """

    rule: str
    model: str | None
    parameters: Mapping[str, Any]
    series_uids: tuple[str, ...]
    deliver: tuple[str, ...]
    deliver_source: DeliverSource
    send_to: str | None
    priority: int
    ignored: bool = False
    explanation: Explanation | None = field(default=None, compare=False, repr=False)
    volume: VolumeSelect | None = None
    #: the rule's ``results.combine`` (None: the node's default) and ``results.prefer``
    combine: bool | None = None
    prefer: tuple[str, ...] = ()
    #: the action's ``workitem``: a UPS workitem to schedule on the node's worklist
    workitem: WorkitemRequest | None = None
    #: the rule's ``priors`` (None: the jobs do not wait for a prior study)
    priors: Priors | None = None


@dataclass(frozen=True, slots=True, weakref_slot=True)
class RuleSet:
    """A validated rule file: plain data.  ``dicom_rules.route`` and ``dicom_rules.explain``
    (``dicom_rules.evaluate``) evaluate it on a study.

    ``source`` and ``destinations`` (the config's destinations, used when neither the rule nor
    ``defaults`` says where results go) are not part of equality.
    """

    rules: tuple[Rule, ...]
    version: int = 1
    defaults: Defaults = field(default_factory=Defaults)
    aliases: Mapping[str, tuple[Scalar, ...]] = field(default_factory=dict)
    body_parts: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    source: str = field(default="<rules>", compare=False)
    destinations: tuple[str, ...] = field(default=(), compare=False)

    def rule(self, name: str) -> Rule:
        """The rule called ``name`` (KeyError if none)."""
        for r in self.rules:
            if r.name == name:
                return r
        raise KeyError(name)
