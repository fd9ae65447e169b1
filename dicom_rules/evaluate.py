"""Evaluation: the routing algorithm over compiled conditions (see ``conditions``).

Routing (documented in docs/rules.md):

* ``route`` rules run in *priority levels*, highest first.  Rules of one level all see the same
  series, so the order of rules in the file never matters; only ``priority`` does.
* A series matched by a rule with ``stop: true`` or an ``ignore`` action is *claimed*: rules of
  lower levels skip it.
* ``scope: series`` gives one decision per matching series.  ``scope: study`` evaluates ``when``
  per series, then ``select`` picks among the matching series: one decision for the study.
* ``fallback`` rules run afterwards, the same way, on the series no ``route`` rule matched.

Nothing here raises on header content: comparisons on absent, empty or ill-typed values are
false and say so in their reason.
"""

from __future__ import annotations

import copy
import threading
import weakref
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from dicom_rules.conditions import (
    MODALITY,
    Always,
    Context,
    Node,
    compile_condition,
    make_compare,
    number_of,
    table_for,
    text_of,
)
from dicom_rules.explanation import Explanation, SeriesExplanation, Status, Verdict
from dicom_rules.model import (
    Action,
    AttributePath,
    Compare,
    Condition,
    DeliverSource,
    Op,
    RouteDecision,
    Rule,
    RuleKind,
    RuleSet,
    Scope,
    Select,
)

__all__ = ["Plan", "compile_ruleset", "explain", "route"]

_NOT_MATCHED = Status.NOT_MATCHED
_MATCHED = Status.MATCHED


def _note(rule: str, action: Action) -> str:
    """One-line outcome of an action, for ``SeriesExplanation.outcome``."""
    parts = []
    if action.ignore:
        parts.append(f"ignored by '{rule}'")
    if action.model is not None:
        parts.append(f"model '{action.model}' by '{rule}'")
    if action.send_to is not None:
        parts.append(f"forwarded to '{action.send_to}' by '{rule}'")
    if action.workitem is not None:
        parts.append(f"workitem '{action.workitem.code}' scheduled by '{rule}'")
    return "; ".join(parts)


class _CompiledRule:
    __slots__ = ("claims", "notes", "pos", "prefer", "rule", "select", "when", "where")

    def __init__(
        self,
        rule: Rule,
        comp: Callable[[Condition | None], Node],
        path_index: Callable[[AttributePath], int],
    ) -> None:
        self.rule = rule
        self.pos = 0  # index in Plan.order (verdict position), set by Plan
        self.claims = rule.stop or rule.is_ignore
        self.notes = [_note(rule.name, a) for a in rule.actions]
        self.when = comp(rule.when)
        sel = rule.select
        self.select: Select | None = sel
        self.where = comp(sel.where) if sel is not None else Always()
        self.prefer: list[tuple[str, Any]] = []
        if sel is not None:
            for p in sel.prefer:
                if p.kind == "matching":
                    self.prefer.append((p.kind, comp(p.condition)))
                else:
                    assert p.path is not None
                    probe = Compare(p.path, Op.EXISTS, True)
                    self.prefer.append((p.kind, make_compare(probe, path_index(p.path))))

    def sort_key(self, ctx: Context) -> tuple[Any, ...]:
        """Preference order of a series (smaller first); ties end with the series UID."""
        key: list[Any] = []
        for kind, node in self.prefer:
            if kind == "matching":
                key.append(0 if node.test(ctx) else 1)
                continue
            vals = ctx.values(node.idx, node.path) or []
            nums = [n for n in (number_of(v) for v in vals) if n is not None]
            if not nums:
                key.append((1, 0.0))
            else:
                key.append((0, nums[0] if kind == "lowest" else -nums[0]))
        key.append(ctx.uid)
        key.append(ctx.index)
        return tuple(key)


class Plan:
    """A rule set compiled for evaluation (built once per ``RuleSet``, then reused)."""

    def __init__(self, ruleset: RuleSet) -> None:
        self._paths: dict[AttributePath, int] = {}
        self.table = table_for(ruleset.body_parts)
        self.levels: list[list[_CompiledRule]] = []
        self.fallback_levels: list[list[_CompiledRule]] = []
        compiled = [_CompiledRule(r, self._compile, self._path_index) for r in ruleset.rules]
        self._modality = self._path_index(MODALITY)
        for kind, levels in (
            (RuleKind.ROUTE, self.levels),
            (RuleKind.FALLBACK, self.fallback_levels),
        ):
            rules = sorted(
                (c for c in compiled if c.rule.kind == kind),
                key=lambda c: (-c.rule.priority, c.rule.name),
            )
            for c in rules:
                if levels and levels[-1][0].rule.priority == c.rule.priority:
                    levels[-1].append(c)
                else:
                    levels.append([c])
        self.order = [c.rule for lv in self.levels + self.fallback_levels for c in lv]
        for pos, c in enumerate(cr for lv in self.levels + self.fallback_levels for cr in lv):
            c.pos = pos

    def _path_index(self, path: AttributePath) -> int:
        idx = self._paths.get(path)
        if idx is None:
            idx = self._paths[path] = len(self._paths)
        return idx

    def _compile(self, cond: Condition | None) -> Node:
        return compile_condition(cond, self._path_index)

    # ------------------------------------------------------------------ routing
    def run(
        self, ruleset: RuleSet, study: Sequence[Any], destinations: Sequence[str] | None
    ) -> tuple[list[RouteDecision], Explanation]:
        """Route ``study``; see the module docstring for the algorithm."""
        npaths = len(self._paths)
        ctxs = [
            Context(i, uid, header, count, npaths, self.table)
            for i, (uid, header, count) in enumerate(_series_of(s) for s in study)
        ]
        run = _Run(self, ruleset, ctxs, destinations)
        run.level_pass(self.levels, ctxs)
        run.fallback_not_needed(self.fallback_levels)
        run.level_pass(self.fallback_levels, [c for c in ctxs if c.index not in run.matched])
        return run.result(ruleset.source, self._modality)

    def _select(self, cr: _CompiledRule, hits: list[Context]) -> list[Context]:
        pool = [c for c in hits if cr.where.test(c)]
        if cr.select is None:
            return sorted(pool, key=lambda c: (c.uid, c.index))
        pool.sort(key=cr.sort_key)
        count = cr.select.count
        return pool if count is None else pool[:count]


class _Run:
    """One evaluation of a plan on one study: the verdicts, outcomes and decisions so far."""

    def __init__(
        self,
        plan: Plan,
        ruleset: RuleSet,
        ctxs: list[Context],
        destinations: Sequence[str] | None,
    ) -> None:
        self.plan = plan
        self.ctxs = ctxs
        self.all_dest = tuple(
            sorted(destinations if destinations is not None else ruleset.destinations)
        )
        self.defaults_deliver = ruleset.defaults.deliver
        self.verdicts: list[list[Any]] = [[None] * len(plan.order) for _ in ctxs]
        self.outcomes: list[list[str]] = [[] for _ in ctxs]
        self.claimed: dict[int, str] = {}
        self.matched: dict[int, str] = {}
        self.decisions: list[tuple[tuple[Any, ...], RouteDecision]] = []

    def decide(self, cr: _CompiledRule, group: list[Context]) -> None:
        """One decision per action of ``cr`` for ``group`` (one series, or a study's choice)."""
        rule = cr.rule
        uids = (group[0].uid,) if len(group) == 1 else tuple(sorted(c.uid for c in group))
        for ai, action in enumerate(rule.actions):
            if action.deliver is not None:
                deliver, src = action.deliver, DeliverSource.RULE
            elif self.defaults_deliver is not None:
                deliver, src = self.defaults_deliver, DeliverSource.DEFAULTS
            else:
                deliver, src = self.all_dest, DeliverSource.CONFIG
            params = action.parameters
            d = RouteDecision(
                rule.name,
                action.model,
                copy.deepcopy(dict(params)) if params else {},
                uids,
                () if action.ignore else deliver,
                src,
                action.send_to,
                rule.priority,
                action.ignore,
                volume=None if rule.select is None else rule.select.volume,
                combine=None if rule.results is None else rule.results.combine,
                prefer=() if rule.results is None else rule.results.prefer,
                workitem=action.workitem,
                priors=None if action.model is None else rule.priors,
            )
            self.decisions.append(((-rule.priority, rule.name, uids, ai), d))
            note = cr.notes[ai]
            for c in group:
                self.outcomes[c.index].append(note)

    def level_pass(self, levels: list[list[_CompiledRule]], pool: list[Context]) -> None:
        """Run priority levels in order; what a level claims, lower levels skip."""
        for level in levels:
            active = [c for c in pool if c.index not in self.claimed]
            newly: dict[int, str] = {}
            for cr in level:
                self._skip_claimed(cr, pool)
                hits = self._apply(cr, active)
                for c in hits:
                    self.matched.setdefault(c.index, cr.rule.name)
                    if cr.claims:
                        newly.setdefault(c.index, cr.rule.name)
            self.claimed.update(newly)

    def _skip_claimed(self, cr: _CompiledRule, pool: list[Context]) -> None:
        rule = cr.rule
        for c in pool:
            if c.index in self.claimed:
                self.verdicts[c.index][cr.pos] = Verdict(
                    rule.name,
                    Status.SKIPPED,
                    f"claimed by rule '{self.claimed[c.index]}' (higher priority, stop or ignore)",
                    rule.priority,
                )

    def _apply(self, cr: _CompiledRule, active: list[Context]) -> list[Context]:
        """Test ``cr`` on the active series, record verdicts and decisions; the series whose
        ``when`` matched (selected or not)."""
        rule = cr.rule
        name, pos, prio, when = rule.name, cr.pos, rule.priority, cr.when
        hits = []
        for c in active:
            if when.test(c):
                hits.append(c)
            else:
                self.verdicts[c.index][pos] = Verdict(name, _NOT_MATCHED, None, prio, ("", when, c))
        if not hits:
            return hits
        if rule.scope is Scope.SERIES:
            for c in hits:
                self.verdicts[c.index][pos] = Verdict(name, _MATCHED, "matched", prio)
                self.decide(cr, [c])
            return hits
        chosen = self.plan._select(cr, hits)
        if not chosen:
            for c in hits:
                self.verdicts[c.index][pos] = Verdict(
                    name, _NOT_MATCHED, None, prio, ("select found no series: ", cr.where, c)
                )
            return []
        chosen_ids = {c.index for c in chosen}
        others = "matched, but select preferred " + ", ".join(s.uid for s in chosen)
        for c in hits:
            self.verdicts[c.index][pos] = (
                Verdict(name, _MATCHED, "matched and selected", prio)
                if c.index in chosen_ids
                else Verdict(name, Status.NOT_SELECTED, others, prio)
            )
        self.decide(cr, chosen)
        return hits

    def fallback_not_needed(self, fallback_levels: list[list[_CompiledRule]]) -> None:
        for c in self.ctxs:
            if c.index in self.matched:
                reason = f"fallback not needed: rule '{self.matched[c.index]}' matched"
                for lv in fallback_levels:
                    for cr in lv:
                        self.verdicts[c.index][cr.pos] = Verdict(
                            cr.rule.name, Status.NOT_NEEDED, reason, cr.rule.priority
                        )

    def result(self, source: str, modality: int) -> tuple[list[RouteDecision], Explanation]:
        """The decisions in order, and the explanation that lists them."""
        self.decisions.sort(key=lambda kd: kd[0])
        final = [d for _, d in self.decisions]
        series_expl = tuple(
            SeriesExplanation(
                series_uid=c.uid,
                instance_count=c.count,
                modality=_first_text(c.values(modality, MODALITY)),
                body_part=c.body,
                orientation=c.orientation,
                verdicts=tuple(self.verdicts[c.index]),
                outcome="; ".join(self.outcomes[c.index]) or "no rule acted on this series",
            )
            for c in self.ctxs
        )
        explanation = Explanation(source, series_expl, tuple(final))
        for d in final:  # built once; the explanation is attached afterwards (it lists them)
            object.__setattr__(d, "explanation", explanation)
        return final, explanation


def _first_text(vals: list[Any] | None) -> str | None:
    for v in vals or ():
        t = text_of(v)
        if t is not None:
            return t.strip()
    return None


def _series_of(s: Any) -> tuple[str, Any, int]:
    """(uid, header, instance_count) of a SeriesInput, any object or mapping alike."""
    if isinstance(s, Mapping):
        uid, header, count = s.get("series_uid"), s.get("header"), s.get("instance_count", 1)
    else:
        uid = getattr(s, "series_uid", None)
        header = getattr(s, "header", None)
        count = getattr(s, "instance_count", 1)
    if not isinstance(uid, str):
        uid = "" if uid is None else str(uid)
    if not isinstance(count, int) or isinstance(count, bool):
        count = 0
    return uid, header, count


def compile_ruleset(ruleset: RuleSet) -> Plan:
    """Compile ``ruleset`` (``route`` and ``explain`` do it once per RuleSet object)."""
    return Plan(ruleset)


#: Compiled plans by RuleSet object (its id, checked through a weak reference): a rule set is
#: compiled once however often it routes, and its plan goes when the rule set does.
_PLANS: dict[int, tuple[weakref.ReferenceType[RuleSet], Plan]] = {}
_PLANS_LOCK = threading.Lock()


def _plan_of(ruleset: RuleSet) -> Plan:
    key = id(ruleset)
    with _PLANS_LOCK:
        hit = _PLANS.get(key)
    if hit is not None and hit[0]() is ruleset:
        return hit[1]
    plan = compile_ruleset(ruleset)

    def forget(ref: weakref.ReferenceType[RuleSet]) -> None:
        with _PLANS_LOCK:
            if key in _PLANS and _PLANS[key][0] is ref:
                del _PLANS[key]

    with _PLANS_LOCK:
        _PLANS[key] = (weakref.ref(ruleset, forget), plan)
    return plan


def route(
    ruleset: RuleSet, study: Sequence[Any], *, destinations: Sequence[str] | None = None
) -> list[RouteDecision]:
    """Decide what to do with a study under ``ruleset``.

    Parameters
    ----------
    ruleset:
        A validated rule file (``dicom_rules.load`` / ``parse``).
    study:
        The series: ``SeriesInput`` objects, or any objects/mappings with ``series_uid``,
        ``header`` (DICOM JSON, PS3.18 F.2) and ``instance_count``.
    destinations:
        Every destination in the config, used when neither the rule nor ``defaults`` has a
        ``deliver`` list (default: the rule set's ``destinations``, given to ``load``).

    Returns
    -------
    list[RouteDecision]
        Ordered by priority (high first), rule name, series UIDs.  Never raises on header
        content: absent, empty or malformed values make comparisons false.
    """
    decisions, _ = _plan_of(ruleset).run(ruleset, study, destinations)
    return decisions


def explain(
    ruleset: RuleSet, study: Sequence[Any], *, destinations: Sequence[str] | None = None
) -> Explanation:
    """Route ``study`` as ``route`` does and return the full explanation (decisions included)."""
    _, explanation = _plan_of(ruleset).run(ruleset, study, destinations)
    return explanation
