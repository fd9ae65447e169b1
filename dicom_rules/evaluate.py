"""Evaluation: conditions compiled to small objects, then the routing algorithm.

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

import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from dicom_rules.bodypart import BodyPart, BodyPartTable
from dicom_rules.explain import Explanation, SeriesExplanation, Status, Verdict
from dicom_rules.model import (
    AllOf,
    AnyOf,
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
from dicom_rules.paths import format_path, read_values
from dicom_rules.regex import compile_pattern

__all__ = ["Plan", "compile_ruleset", "orientation_of"]

_UNSET: Any = object()
_MODALITY = AttributePath(segments=(0x00080060,))
_IOP_PATHS = (
    AttributePath(segments=(0x00200037,)),
    AttributePath(segments=(0x52009229, 0x00209116, 0x00200037)),
    AttributePath(segments=(0x52009230, 0x00209116, 0x00200037)),
)


def _num(v: Any) -> float | None:
    """A finite float from a JSON number or numeric string, else None."""
    if isinstance(v, bool):
        return None
    if isinstance(v, (int, float)):
        f = float(v)
    elif isinstance(v, str):
        try:
            f = float(v.strip())
        except ValueError:
            return None
    else:
        return None
    return f if math.isfinite(f) else None


def _text(v: Any) -> str | None:
    if isinstance(v, str):
        return v
    if isinstance(v, bool):
        return None
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        return str(int(v)) if v.is_integer() and abs(v) < 1e15 else repr(v)
    return None


def _show(values: Sequence[Any]) -> str:
    shown = []
    for v in values[:5]:
        t = _text(v)
        shown.append("(sequence item)" if t is None else repr(t[:64]))
    more = f" and {len(values) - 5} more" if len(values) > 5 else ""
    return ", ".join(shown) + more


def orientation_of(header: Any) -> str | None:
    """AXIAL, CORONAL, SAGITTAL or OBLIQUE from ImageOrientationPatient (PS3.3 C.7.6.2.1.1).

    The slice normal is the cross product of the row and column direction cosines; the plane is
    named after the patient axis the normal is closest to (|cos| >= 0.8), else OBLIQUE.  Enhanced
    objects are read from the functional groups' PlaneOrientationSequence.
    """
    for path in _IOP_PATHS:
        vals = read_values(header, path)
        if not vals:
            continue
        nums = [_num(v) for v in vals[:6]]
        if len(nums) < 6 or any(n is None for n in nums):
            continue
        r0, r1, r2, c0, c1, c2 = (float(n) for n in nums if n is not None)
        nx, ny, nz = r1 * c2 - r2 * c1, r2 * c0 - r0 * c2, r0 * c1 - r1 * c0
        norm = math.sqrt(nx * nx + ny * ny + nz * nz)
        if norm < 1e-6:
            continue
        ax, ay, az = abs(nx) / norm, abs(ny) / norm, abs(nz) / norm
        if az >= 0.8:
            return "AXIAL"
        if ay >= 0.8:
            return "CORONAL"
        if ax >= 0.8:
            return "SAGITTAL"
        return "OBLIQUE"
    return None


_TABLES: dict[tuple[tuple[str, tuple[str, ...]], ...], BodyPartTable] = {}


def _table(overrides: Mapping[str, tuple[str, ...]]) -> BodyPartTable:
    """One BodyPartTable per distinct override set (they are immutable once built)."""
    key = tuple(sorted((k, tuple(v)) for k, v in overrides.items()))
    table = _TABLES.get(key)
    if table is None:
        if len(_TABLES) > 64:
            _TABLES.clear()
        table = _TABLES[key] = BodyPartTable(overrides)
    return table


class _Ctx:
    """One series during routing, with its values cached per path index.

    Besides the raw values, three derived forms are cached per path: the trimmed text of each
    value, the trimmed case-folded text, and the finite numbers among the values.
    """

    __slots__ = (
        "_body",
        "_orient",
        "cache",
        "count",
        "folded",
        "header",
        "index",
        "nums",
        "stripped",
        "table",
        "uid",
    )

    def __init__(
        self, index: int, uid: str, header: Any, count: int, npaths: int, table: BodyPartTable
    ) -> None:
        self.index = index
        self.uid = uid
        self.header = header
        self.count = count
        self.cache: list[Any] = [_UNSET] * npaths
        self.stripped: list[Any] = [None] * npaths
        self.folded: list[Any] = [None] * npaths
        self.nums: list[Any] = [None] * npaths
        self.table = table
        self._body: BodyPart | None = None
        self._orient: Any = _UNSET

    @property
    def body(self) -> BodyPart:
        if self._body is None:
            self._body = self.table.derive(self.header)
        return self._body

    @property
    def orientation(self) -> str | None:
        if self._orient is _UNSET:
            self._orient = orientation_of(self.header)
        return self._orient  # type: ignore[no-any-return]

    def values(self, idx: int, path: AttributePath) -> list[Any] | None:
        got = self.cache[idx]
        if got is _UNSET:
            if path.special == "body_part":
                got = [self.body.value] if self.body.value is not None else None
            elif path.special == "orientation":
                o = self.orientation
                got = [o] if o is not None else None
            elif path.special == "instance_count":
                got = [self.count]
            else:
                got = read_values(self.header, path)
            self.cache[idx] = got
        return got  # type: ignore[no-any-return]

    def texts(self, idx: int, path: AttributePath) -> tuple[str, ...]:
        """Trimmed text of every text/number value."""
        got = self.stripped[idx]
        if got is None:
            got = tuple(
                t.strip() for t in (_text(v) for v in self.values(idx, path) or ()) if t is not None
            )
            self.stripped[idx] = got
        return got  # type: ignore[no-any-return]

    def folds(self, idx: int, path: AttributePath) -> tuple[str, ...]:
        """Trimmed, case-folded text of every text/number value."""
        got = self.folded[idx]
        if got is None:
            got = tuple(t.casefold() for t in self.texts(idx, path))
            self.folded[idx] = got
        return got  # type: ignore[no-any-return]

    def numbers(self, idx: int, path: AttributePath) -> tuple[float, ...]:
        """Finite numbers among the values (numeric strings included)."""
        got = self.nums[idx]
        if got is None:
            got = tuple(n for n in (_num(v) for v in self.values(idx, path) or ()) if n is not None)
            self.nums[idx] = got
        return got  # type: ignore[no-any-return]


class _Node:
    __slots__ = ()

    def test(self, ctx: _Ctx) -> bool:
        raise NotImplementedError

    def why(self, ctx: _Ctx) -> str:
        """Why the node is false on ``ctx``."""
        raise NotImplementedError

    def why_true(self, ctx: _Ctx) -> str:
        """Why the node is true on ``ctx`` (used under ``not``)."""
        raise NotImplementedError


class _Cmp(_Node):
    """A comparison; subclasses implement ``test`` for one operator family."""

    __slots__ = ("case", "desc", "idx", "name", "nums", "op", "path", "pattern", "strs", "target")

    def __init__(self, c: Compare, idx: int) -> None:
        self.path = c.path
        self.idx = idx
        self.op = c.op
        self.case = c.case_sensitive
        self.name = format_path(c.path)
        shown = f"${c.alias}" if c.alias else _value_text(c.value)
        self.desc = f"{self.name} {c.op} {shown}"
        self.pattern: Any = None
        self.target: Any = None
        self.strs: frozenset[str] = frozenset()
        self.nums: frozenset[float] = frozenset()
        if c.op in (Op.IN, Op.NOT_IN, Op.EQUALS):
            items = list(c.value) if c.op is not Op.EQUALS else [c.value]
            self.strs = frozenset(self._norm(t) for t in (_text(i) for i in items) if t is not None)
            self.nums = frozenset(n for n in (_num(i) for i in items) if n is not None)
        elif c.op == Op.MATCHES:
            self.pattern = compile_pattern(str(c.value), case_sensitive=c.case_sensitive)
        elif c.op in (Op.CONTAINS, Op.STARTSWITH):
            self.target = self._norm(str(c.value))
        elif c.op == Op.BETWEEN:
            self.target = (float(c.value[0]), float(c.value[1]))
        elif c.op in (Op.LT, Op.LE, Op.GT, Op.GE):
            self.target = float(c.value)
        elif c.op in (Op.EXISTS, Op.MISSING):
            self.target = bool(c.value) if c.op is Op.EXISTS else not bool(c.value)

    def _norm(self, s: str) -> str:
        return s.strip() if self.case else s.strip().casefold()

    def _texts(self, ctx: _Ctx) -> tuple[str, ...]:
        return ctx.texts(self.idx, self.path) if self.case else ctx.folds(self.idx, self.path)

    def _hits(self, ctx: _Ctx) -> bool:
        """Some value equals one of ``strs``/``nums`` (equals, in, not_in)."""
        strs = self.strs
        for t in self._texts(ctx):
            if t in strs:
                return True
        if self.nums:
            nums = self.nums
            for n in ctx.numbers(self.idx, self.path):
                if n in nums:
                    return True
        return False

    def _absent(self, ctx: _Ctx, vals: list[Any] | None) -> str:
        if self.path.special == "body_part":
            return f"{self.desc}: body_part unknown ({ctx.body.how})"
        if self.path.special == "orientation":
            return f"{self.desc}: orientation unknown (no usable ImageOrientationPatient)"
        if vals is None:
            return f"{self.desc}: tag absent"
        return f"{self.desc}: tag present but empty"

    def why(self, ctx: _Ctx) -> str:
        vals = ctx.values(self.idx, self.path)
        op = self.op
        if op in (Op.EXISTS, Op.MISSING):
            if self.target:
                return self._absent(ctx, vals)
            return f"{self.desc}: present, seen {_show(vals or [])}"
        if not vals:
            return self._absent(ctx, vals)
        if op is Op.NOT_IN:
            hits = [
                v
                for v in vals
                if (t := _text(v)) is not None
                and (self._norm(t) in self.strs or _num(v) in self.nums)
            ]
            return f"{self.desc}: seen {_show(hits)}"
        if op in (Op.LT, Op.LE, Op.GT, Op.GE, Op.BETWEEN) and not ctx.numbers(self.idx, self.path):
            return f"{self.desc}: seen {_show(vals)} (not a number)"
        return f"{self.desc}: seen {_show(vals)}"

    def why_true(self, ctx: _Ctx) -> str:
        vals = ctx.values(self.idx, self.path)
        if not vals:
            return f"{self.desc} is true ({'tag absent' if vals is None else 'empty'})"
        return f"{self.desc} is true (seen {_show(vals)})"


class _Equals(_Cmp):
    __slots__ = ()

    def test(self, ctx: _Ctx) -> bool:
        return self._hits(ctx)


class _NotIn(_Cmp):
    __slots__ = ()

    def test(self, ctx: _Ctx) -> bool:
        return bool(ctx.values(self.idx, self.path)) and not self._hits(ctx)


class _Matches(_Cmp):
    __slots__ = ()

    def test(self, ctx: _Ctx) -> bool:
        full = self.pattern.fullmatch
        return any(full(t) for t in ctx.texts(self.idx, self.path))


class _Contains(_Cmp):
    __slots__ = ()

    def test(self, ctx: _Ctx) -> bool:
        target = self.target
        return any(target in t for t in self._texts(ctx))


class _StartsWith(_Cmp):
    __slots__ = ()

    def test(self, ctx: _Ctx) -> bool:
        target = self.target
        return any(t.startswith(target) for t in self._texts(ctx))


class _Numeric(_Cmp):
    __slots__ = ()

    def test(self, ctx: _Ctx) -> bool:
        nums = ctx.numbers(self.idx, self.path)
        if not nums:
            return False
        t = self.target
        op = self.op
        if op is Op.LT:
            return any(n < t for n in nums)
        if op is Op.LE:
            return any(n <= t for n in nums)
        if op is Op.GT:
            return any(n > t for n in nums)
        if op is Op.GE:
            return any(n >= t for n in nums)
        lo, hi = t
        return any(lo <= n <= hi for n in nums)


class _Presence(_Cmp):
    __slots__ = ()

    def test(self, ctx: _Ctx) -> bool:
        return bool(ctx.values(self.idx, self.path)) is self.target


_CMP_CLASSES: dict[Op, type[_Cmp]] = {
    Op.EQUALS: _Equals,
    Op.IN: _Equals,
    Op.NOT_IN: _NotIn,
    Op.MATCHES: _Matches,
    Op.CONTAINS: _Contains,
    Op.STARTSWITH: _StartsWith,
    Op.LT: _Numeric,
    Op.LE: _Numeric,
    Op.GT: _Numeric,
    Op.GE: _Numeric,
    Op.BETWEEN: _Numeric,
    Op.EXISTS: _Presence,
    Op.MISSING: _Presence,
}


def _make_cmp(c: Compare, idx: int) -> _Cmp:
    return _CMP_CLASSES[c.op](c, idx)


def _value_text(v: Any) -> str:
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(_value_text(i) for i in v) + "]"
    if isinstance(v, str):
        return repr(v)
    return str(v).lower() if isinstance(v, bool) else str(v)


class _All(_Node):
    __slots__ = ("items",)

    def __init__(self, items: list[_Node]) -> None:
        self.items = items

    def test(self, ctx: _Ctx) -> bool:
        return all(i.test(ctx) for i in self.items)

    def why(self, ctx: _Ctx) -> str:
        for i in self.items:
            if not i.test(ctx):
                return i.why(ctx)
        return "all: every condition is true"

    def why_true(self, ctx: _Ctx) -> str:
        return "all of (" + "; ".join(i.why_true(ctx) for i in self.items) + ")"


class _Any(_Node):
    __slots__ = ("items",)

    def __init__(self, items: list[_Node]) -> None:
        self.items = items

    def test(self, ctx: _Ctx) -> bool:
        return any(i.test(ctx) for i in self.items)

    def why(self, ctx: _Ctx) -> str:
        if not self.items:
            return "any: no conditions (an empty any is false)"
        return "none of (" + "; ".join(i.why(ctx) for i in self.items) + ")"

    def why_true(self, ctx: _Ctx) -> str:
        for i in self.items:
            if i.test(ctx):
                return i.why_true(ctx)
        return "any: true"


class _Not(_Node):
    __slots__ = ("item",)

    def __init__(self, item: _Node) -> None:
        self.item = item

    def test(self, ctx: _Ctx) -> bool:
        return not self.item.test(ctx)

    def why(self, ctx: _Ctx) -> str:
        return f"not: {self.item.why_true(ctx)}"

    def why_true(self, ctx: _Ctx) -> str:
        return f"not: {self.item.why(ctx)}"


class _Always(_Node):
    __slots__ = ()

    def test(self, ctx: _Ctx) -> bool:
        return True

    def why(self, ctx: _Ctx) -> str:  # pragma: no cover - never false
        return "always true"

    def why_true(self, ctx: _Ctx) -> str:
        return "no condition"


_NOT_MATCHED = Status.NOT_MATCHED


class _CompiledRule:
    __slots__ = ("claims", "prefer", "rule", "select", "when", "where")

    def __init__(self, rule: Rule, comp: Callable[[Condition | None], _Node]) -> None:
        self.rule = rule
        self.claims = rule.stop or rule.is_ignore
        self.when = comp(rule.when)
        sel = rule.select
        self.select: Select | None = sel
        self.where = comp(sel.where) if sel is not None else _Always()
        self.prefer: list[tuple[str, Any]] = []
        if sel is not None:
            for p in sel.prefer:
                if p.kind == "matching":
                    self.prefer.append((p.kind, comp(p.condition)))
                else:
                    assert p.path is not None
                    self.prefer.append((p.kind, _make_cmp(Compare(p.path, Op.EXISTS, True), 0)))

    def sort_key(self, ctx: _Ctx, paths: Callable[[AttributePath], int]) -> tuple[Any, ...]:
        key: list[Any] = []
        for kind, node in self.prefer:
            if kind == "matching":
                key.append(0 if node.test(ctx) else 1)
                continue
            vals = ctx.values(paths(node.path), node.path) or []
            nums = [n for n in (_num(v) for v in vals) if n is not None]
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
        self.table = _table(ruleset.body_parts)
        self.levels: list[list[_CompiledRule]] = []
        self.fallback_levels: list[list[_CompiledRule]] = []
        compiled = [_CompiledRule(r, self._compile) for r in ruleset.rules]
        self._modality = self._path_index(_MODALITY)
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

    def _compile(self, cond: Condition | None) -> _Node:
        if cond is None:
            return _Always()
        if isinstance(cond, Compare):
            return _make_cmp(cond, self._path_index(cond.path))
        if isinstance(cond, AllOf):
            return _All([self._compile(i) for i in cond.items])
        if isinstance(cond, AnyOf):
            return _Any([self._compile(i) for i in cond.items])
        return _Not(self._compile(cond.item))

    # ------------------------------------------------------------------ routing
    def run(
        self, ruleset: RuleSet, study: Sequence[Any], destinations: Sequence[str] | None
    ) -> tuple[list[RouteDecision], Explanation]:
        """Route ``study``; see the module docstring for the algorithm."""
        all_dest = tuple(sorted(destinations if destinations is not None else ruleset.destinations))
        npaths = len(self._paths)
        ctxs = [
            _Ctx(i, uid, header, count, npaths, self.table)
            for i, (uid, header, count) in enumerate(_series_of(s) for s in study)
        ]
        # fix up prefer paths registered lazily
        verdicts: list[dict[str, Verdict]] = [{} for _ in ctxs]
        claimed: dict[int, str] = {}
        matched: dict[int, str] = {}
        decisions: list[tuple[tuple[Any, ...], RouteDecision]] = []

        def level_pass(levels: list[list[_CompiledRule]], pool: list[_Ctx]) -> None:
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
                    modality=_first_text(c.values(self._modality, _MODALITY)),
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

    def _select(self, cr: _CompiledRule, hits: list[_Ctx]) -> list[_Ctx]:
        pool = [c for c in hits if cr.where.test(c)]
        if cr.select is None:
            return sorted(pool, key=lambda c: (c.uid, c.index))
        pool.sort(key=lambda c: cr.sort_key(c, self._path_index_of))
        count = cr.select.count
        return pool if count is None else pool[:count]

    def _path_index_of(self, path: AttributePath) -> int:
        return self._paths[path]


def _first_text(vals: list[Any] | None) -> str | None:
    for v in vals or ():
        t = _text(v)
        if t is not None:
            return t.strip()
    return None


def _outcome(c: _Ctx, decisions: list[RouteDecision]) -> str:
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
