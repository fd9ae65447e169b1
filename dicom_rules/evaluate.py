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
from dicom_rules.explain import Explanation, SeriesExplanation, Status, Verdict
from dicom_rules.model import (
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

__all__ = ["Plan", "compile_ruleset"]

_NOT_MATCHED = Status.NOT_MATCHED


class _CompiledRule:
    __slots__ = ("claims", "prefer", "rule", "select", "when", "where")

    def __init__(self, rule: Rule, comp: Callable[[Condition | None], Node]) -> None:
        self.rule = rule
        self.claims = rule.stop or rule.is_ignore
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
                    self.prefer.append((p.kind, make_compare(Compare(p.path, Op.EXISTS, True), 0)))

    def sort_key(self, ctx: Context, paths: Callable[[AttributePath], int]) -> tuple[Any, ...]:
        key: list[Any] = []
        for kind, node in self.prefer:
            if kind == "matching":
                key.append(0 if node.test(ctx) else 1)
                continue
            vals = ctx.values(paths(node.path), node.path) or []
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
        compiled = [_CompiledRule(r, self._compile) for r in ruleset.rules]
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
        all_dest = tuple(sorted(destinations if destinations is not None else ruleset.destinations))
        npaths = len(self._paths)
        ctxs = [
            Context(i, uid, header, count, npaths, self.table)
            for i, (uid, header, count) in enumerate(_series_of(s) for s in study)
        ]
        # fix up prefer paths registered lazily
        verdicts: list[dict[str, Verdict]] = [{} for _ in ctxs]
        claimed: dict[int, str] = {}
        matched: dict[int, str] = {}
        decisions: list[tuple[tuple[Any, ...], RouteDecision]] = []

        def level_pass(levels: list[list[_CompiledRule]], pool: list[Context]) -> None:
            for level in levels:
                active = [c for c in pool if c.index not in claimed]
                newly: dict[int, str] = {}
                for cr in level:
                    rule = cr.rule
                    name = rule.name
                    if claimed:
                        for c in pool:
                            if c.index in claimed:
                                verdicts[c.index][name] = Verdict(
                                    name,
                                    Status.SKIPPED,
                                    f"claimed by rule '{claimed[c.index]}' (higher priority, "
                                    "stop or ignore)",
                                    rule.priority,
                                )
                    hits = []
                    when = cr.when
                    for c in active:
                        if when.test(c):
                            hits.append(c)
                        else:
                            verdicts[c.index][name] = Verdict(
                                name, _NOT_MATCHED, None, rule.priority, ("", when, c)
                            )
                    if not hits:
                        continue
                    if rule.scope is Scope.SERIES:
                        groups = [[c] for c in hits]
                        for c in hits:
                            verdicts[c.index][rule.name] = Verdict(
                                rule.name, Status.MATCHED, "matched", rule.priority
                            )
                    else:
                        chosen = self._select(cr, hits)
                        if not chosen:
                            for c in hits:
                                verdicts[c.index][rule.name] = Verdict(
                                    rule.name,
                                    Status.NOT_MATCHED,
                                    None,
                                    rule.priority,
                                    ("select found no series: ", cr.where, c),
                                )
                            continue
                        chosen_ids = {c.index for c in chosen}
                        for c in hits:
                            verdicts[c.index][rule.name] = (
                                Verdict(
                                    rule.name, Status.MATCHED, "matched and selected", rule.priority
                                )
                                if c.index in chosen_ids
                                else Verdict(
                                    rule.name,
                                    Status.NOT_SELECTED,
                                    "matched, but select preferred "
                                    + ", ".join(s.uid for s in chosen),
                                    rule.priority,
                                )
                            )
                        groups = [chosen]
                    for c in hits:
                        matched.setdefault(c.index, rule.name)
                        if cr.claims:
                            newly.setdefault(c.index, rule.name)
                    for g in groups:
                        uids = tuple(sorted(c.uid for c in g))
                        for ai, action in enumerate(rule.actions):
                            if action.deliver is not None:
                                deliver, src = action.deliver, DeliverSource.RULE
                            elif ruleset.defaults.deliver is not None:
                                deliver, src = ruleset.defaults.deliver, DeliverSource.DEFAULTS
                            else:
                                deliver, src = all_dest, DeliverSource.CONFIG
                            d = RouteDecision(
                                rule=rule.name,
                                model=action.model,
                                parameters=action.parameters,
                                series_uids=uids,
                                deliver=() if action.ignore else deliver,
                                deliver_source=src,
                                send_to=action.send_to,
                                priority=rule.priority,
                                ignored=action.ignore,
                            )
                            decisions.append(((-rule.priority, rule.name, uids, ai), d))
                claimed.update(newly)

        level_pass(self.levels, ctxs)
        for c in ctxs:
            if c.index in matched:
                for lv in self.fallback_levels:
                    for cr in lv:
                        verdicts[c.index][cr.rule.name] = Verdict(
                            cr.rule.name,
                            Status.NOT_NEEDED,
                            f"fallback not needed: rule '{matched[c.index]}' matched",
                            cr.rule.priority,
                        )
        level_pass(self.fallback_levels, [c for c in ctxs if c.index not in matched])

        decisions.sort(key=lambda kd: kd[0])
        final = [d for _, d in decisions]
        series_expl = []
        for c in ctxs:
            v = verdicts[c.index]
            series_expl.append(
                SeriesExplanation(
                    series_uid=c.uid,
                    instance_count=c.count,
                    modality=_firsttext_of(c.values(self._modality, MODALITY)),
                    body_part=c.body,
                    orientation=c.orientation,
                    verdicts=tuple(v[r.name] for r in self.order),
                    outcome=_outcome(c, final),
                )
            )
        explanation = Explanation(ruleset.source, tuple(series_expl), tuple(final))
        out = [
            RouteDecision(
                rule=d.rule,
                model=d.model,
                parameters=d.parameters,
                series_uids=d.series_uids,
                deliver=d.deliver,
                deliver_source=d.deliver_source,
                send_to=d.send_to,
                priority=d.priority,
                ignored=d.ignored,
                explanation=explanation,
            )
            for d in final
        ]
        return out, explanation

    def _select(self, cr: _CompiledRule, hits: list[Context]) -> list[Context]:
        pool = [c for c in hits if cr.where.test(c)]
        if cr.select is None:
            return sorted(pool, key=lambda c: (c.uid, c.index))
        pool.sort(key=lambda c: cr.sort_key(c, self._path_index_of))
        count = cr.select.count
        return pool if count is None else pool[:count]

    def _path_index_of(self, path: AttributePath) -> int:
        return self._paths[path]


def _firsttext_of(vals: list[Any] | None) -> str | None:
    for v in vals or ():
        t = text_of(v)
        if t is not None:
            return t.strip()
    return None


def _outcome(c: Context, decisions: list[RouteDecision]) -> str:
    mine = [d for d in decisions if c.uid in d.series_uids]
    if not mine:
        return "no rule acted on this series"
    parts = []
    for d in mine:
        if d.ignored:
            parts.append(f"ignored by '{d.rule}'")
        elif d.model is not None:
            parts.append(f"model '{d.model}' by '{d.rule}'")
        if d.send_to is not None:
            parts.append(f"forwarded to '{d.send_to}' by '{d.rule}'")
    return "; ".join(parts)


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
    """Compile ``ruleset`` (called once per RuleSet by ``RuleSet.route``)."""
    plan = Plan(ruleset)
    # preference paths need indexes too
    for lv in plan.levels + plan.fallback_levels:
        for cr in lv:
            for kind, node in cr.prefer:
                if kind != "matching":
                    node.idx = plan._path_index(node.path)
    return plan
