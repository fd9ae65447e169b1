"""Conditions compiled to small objects that test one series quickly and explain themselves.

``Context`` is one series during routing: its header, with the values of every attribute path
cached (raw, trimmed text, case-folded text, numbers) so that 200 rules reading ``Modality`` read
it once.  Each ``Node`` answers ``test`` (bool, fast) and, only when an explanation is read,
``why`` (why it is false) or ``why_true`` (why it is true, for ``not``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from dicom_rules.bodypart import BodyPart, BodyPartTable
from dicom_rules.model import AllOf, AnyOf, AttributePath, Compare, Condition, Op
from dicom_rules.paths import format_path, read_values
from dicom_rules.regex import compile_pattern

__all__ = [
    "MODALITY",
    "Always",
    "Context",
    "Node",
    "compile_condition",
    "make_compare",
    "number_of",
    "orientation_of",
    "table_for",
    "text_of",
]

_UNSET: Any = object()
MODALITY = AttributePath(segments=(0x00080060,))
_IOP_PATHS = (
    AttributePath(segments=(0x00200037,)),
    AttributePath(segments=(0x52009229, 0x00209116, 0x00200037)),
    AttributePath(segments=(0x52009230, 0x00209116, 0x00200037)),
)


def number_of(v: Any) -> float | None:
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


def text_of(v: Any) -> str | None:
    if isinstance(v, str):
        return v
    if isinstance(v, bool):
        return None
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        return str(int(v)) if v.is_integer() and abs(v) < 1e15 else repr(v)
    return None


def show_values(values: Sequence[Any]) -> str:
    shown = []
    for v in values[:5]:
        t = text_of(v)
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
        nums = [number_of(v) for v in vals[:6]]
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


def table_for(overrides: Mapping[str, tuple[str, ...]]) -> BodyPartTable:
    """One BodyPartTable per distinct override set (they are immutable once built)."""
    key = tuple(sorted((k, tuple(v)) for k, v in overrides.items()))
    table = _TABLES.get(key)
    if table is None:
        if len(_TABLES) > 64:
            _TABLES.clear()
        table = _TABLES[key] = BodyPartTable(overrides)
    return table


class Context:
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
                t.strip()
                for t in (text_of(v) for v in self.values(idx, path) or ())
                if t is not None
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
            got = tuple(
                n for n in (number_of(v) for v in self.values(idx, path) or ()) if n is not None
            )
            self.nums[idx] = got
        return got  # type: ignore[no-any-return]


class Node:
    __slots__ = ()

    def test(self, ctx: Context) -> bool:
        raise NotImplementedError

    def why(self, ctx: Context) -> str:
        """Why the node is false on ``ctx``."""
        raise NotImplementedError

    def why_true(self, ctx: Context) -> str:
        """Why the node is true on ``ctx`` (used under ``not``)."""
        raise NotImplementedError


class _Cmp(Node):
    """A comparison; subclasses implement ``test`` for one operator family."""

    __slots__ = ("case", "desc", "idx", "name", "nums", "op", "path", "pattern", "strs", "target")

    def __init__(self, c: Compare, idx: int) -> None:
        self.path = c.path
        self.idx = idx
        self.op = c.op
        self.case = c.case_sensitive
        self.name = format_path(c.path)
        shown = f"${c.alias}" if c.alias else _valuetext_of(c.value)
        self.desc = f"{self.name} {c.op} {shown}"
        self.pattern: Any = None
        self.target: Any = None
        self.strs: frozenset[str] = frozenset()
        self.nums: frozenset[float] = frozenset()
        if c.op in (Op.IN, Op.NOT_IN, Op.EQUALS):
            items = list(c.value) if c.op is not Op.EQUALS else [c.value]
            self.strs = frozenset(
                self._norm(t) for t in (text_of(i) for i in items) if t is not None
            )
            self.nums = frozenset(n for n in (number_of(i) for i in items) if n is not None)
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

    def _texts(self, ctx: Context) -> tuple[str, ...]:
        return ctx.texts(self.idx, self.path) if self.case else ctx.folds(self.idx, self.path)

    def _hits(self, ctx: Context) -> bool:
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

    def _absent(self, ctx: Context, vals: list[Any] | None) -> str:
        if self.path.special == "body_part":
            return f"{self.desc}: body_part unknown ({ctx.body.how})"
        if self.path.special == "orientation":
            return f"{self.desc}: orientation unknown (no usable ImageOrientationPatient)"
        if vals is None:
            return f"{self.desc}: tag absent"
        return f"{self.desc}: tag present but empty"

    def why(self, ctx: Context) -> str:
        vals = ctx.values(self.idx, self.path)
        op = self.op
        if op in (Op.EXISTS, Op.MISSING):
            if self.target:
                return self._absent(ctx, vals)
            return f"{self.desc}: present, seen {show_values(vals or [])}"
        if not vals:
            return self._absent(ctx, vals)
        if op is Op.NOT_IN:
            hits = [
                v
                for v in vals
                if (t := text_of(v)) is not None
                and (self._norm(t) in self.strs or number_of(v) in self.nums)
            ]
            return f"{self.desc}: seen {show_values(hits)}"
        if op in (Op.LT, Op.LE, Op.GT, Op.GE, Op.BETWEEN) and not ctx.numbers(self.idx, self.path):
            return f"{self.desc}: seen {show_values(vals)} (not a number)"
        return f"{self.desc}: seen {show_values(vals)}"

    def why_true(self, ctx: Context) -> str:
        vals = ctx.values(self.idx, self.path)
        if not vals:
            return f"{self.desc} is true ({'tag absent' if vals is None else 'empty'})"
        return f"{self.desc} is true (seen {show_values(vals)})"


class _Equals(_Cmp):
    __slots__ = ()

    def test(self, ctx: Context) -> bool:
        return self._hits(ctx)


class _NotIn(_Cmp):
    __slots__ = ()

    def test(self, ctx: Context) -> bool:
        return bool(ctx.values(self.idx, self.path)) and not self._hits(ctx)


class _Matches(_Cmp):
    __slots__ = ()

    def test(self, ctx: Context) -> bool:
        full = self.pattern.fullmatch
        return any(full(t) for t in ctx.texts(self.idx, self.path))


class _Contains(_Cmp):
    __slots__ = ()

    def test(self, ctx: Context) -> bool:
        target = self.target
        return any(target in t for t in self._texts(ctx))


class _StartsWith(_Cmp):
    __slots__ = ()

    def test(self, ctx: Context) -> bool:
        target = self.target
        return any(t.startswith(target) for t in self._texts(ctx))


class _Numeric(_Cmp):
    __slots__ = ()

    def test(self, ctx: Context) -> bool:
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

    def test(self, ctx: Context) -> bool:
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


def make_compare(c: Compare, idx: int) -> _Cmp:
    return _CMP_CLASSES[c.op](c, idx)


def _valuetext_of(v: Any) -> str:
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(_valuetext_of(i) for i in v) + "]"
    if isinstance(v, str):
        return repr(v)
    return str(v).lower() if isinstance(v, bool) else str(v)


class _All(Node):
    __slots__ = ("items",)

    def __init__(self, items: list[Node]) -> None:
        self.items = items

    def test(self, ctx: Context) -> bool:
        return all(i.test(ctx) for i in self.items)

    def why(self, ctx: Context) -> str:
        for i in self.items:
            if not i.test(ctx):
                return i.why(ctx)
        return "all: every condition is true"

    def why_true(self, ctx: Context) -> str:
        return "all of (" + "; ".join(i.why_true(ctx) for i in self.items) + ")"


class _Any(Node):
    __slots__ = ("items",)

    def __init__(self, items: list[Node]) -> None:
        self.items = items

    def test(self, ctx: Context) -> bool:
        return any(i.test(ctx) for i in self.items)

    def why(self, ctx: Context) -> str:
        if not self.items:
            return "any: no conditions (an empty any is false)"
        return "none of (" + "; ".join(i.why(ctx) for i in self.items) + ")"

    def why_true(self, ctx: Context) -> str:
        for i in self.items:
            if i.test(ctx):
                return i.why_true(ctx)
        return "any: true"


class _Not(Node):
    __slots__ = ("item",)

    def __init__(self, item: Node) -> None:
        self.item = item

    def test(self, ctx: Context) -> bool:
        return not self.item.test(ctx)

    def why(self, ctx: Context) -> str:
        return f"not: {self.item.why_true(ctx)}"

    def why_true(self, ctx: Context) -> str:
        return f"not: {self.item.why(ctx)}"


class Always(Node):
    __slots__ = ()

    def test(self, ctx: Context) -> bool:
        return True

    def why(self, ctx: Context) -> str:  # pragma: no cover - never false
        return "always true"

    def why_true(self, ctx: Context) -> str:
        return "no condition"


def compile_condition(cond: Condition | None, path_index: Any) -> Node:
    """Compile ``cond`` (None: always true); ``path_index(path)`` numbers the paths."""
    if cond is None:
        return Always()
    if isinstance(cond, Compare):
        return make_compare(cond, path_index(cond.path))
    if isinstance(cond, AllOf):
        return _All([compile_condition(i, path_index) for i in cond.items])
    if isinstance(cond, AnyOf):
        return _Any([compile_condition(i, path_index) for i in cond.items])
    return _Not(compile_condition(cond.item, path_index))
