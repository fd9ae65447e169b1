"""Shared machinery of the rule-file parser: YAML positions, problems, and conditions.

``ConditionParser`` turns condition mappings (``when``, ``select.where``, ``prefer.matching``)
into ``dicom_rules.model`` conditions, checking keywords against the DICOM data dictionary,
operators, value types, VRs and patterns, and recording each problem with its line and column.
``parse.RuleFileParser`` builds on it for the rest of the file.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable
from typing import Any

from pydicom.datadict import keyword_dict
from ruamel.yaml.comments import CommentedMap, CommentedSeq
from ruamel.yaml.scalarint import HexCapsInt, HexInt

from dicom_rules.errors import Problem
from dicom_rules.model import (
    LIST_OPS,
    NUMERIC_OPS,
    PRESENCE_OPS,
    SPECIAL_ATTRIBUTES,
    STRING_OPS,
    AllOf,
    AnyOf,
    AttributePath,
    Compare,
    Condition,
    Not,
    Op,
    Position,
    Scalar,
)
from dicom_rules.paths import PathSyntaxError, format_path, parse_path, vr_of
from dicom_rules.regex import RegexError, compile_pattern

__all__ = ["ConditionParser", "hint", "is_number", "is_scalar", "plain"]

_COMBINATORS = ("all", "any", "not")
_OPS = tuple(str(o) for o in Op)
_NUMERIC_VRS = frozenset({"DS", "IS", "US", "SS", "UL", "SL", "FL", "FD", "UV", "SV"})
_ORIENTATIONS = ("AXIAL", "CORONAL", "SAGITTAL", "OBLIQUE")
_MAX_DEPTH = 32
_KEYWORDS: list[str] | None = None


def _keywords() -> list[str]:
    global _KEYWORDS
    if _KEYWORDS is None:
        _KEYWORDS = sorted(k for k in keyword_dict if k)
    return _KEYWORDS


def hint(word: str, choices: Iterable[str]) -> str:
    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return f"; did you mean '{close[0]}'?" if close else ""


def is_scalar(v: Any) -> bool:
    return isinstance(v, (str, int, float)) and not isinstance(v, bool)


def is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def plain(v: Any) -> Any:
    """ruamel containers -> plain dict/list/scalars (for parameters)."""
    if isinstance(v, dict):
        return {str(k): plain(x) for k, x in v.items()}
    if isinstance(v, list):
        return [plain(x) for x in v]
    if isinstance(v, str):
        return str(v)
    if isinstance(v, bool):
        return bool(v)
    if isinstance(v, int):
        return int(v)
    if isinstance(v, float):
        return float(v)
    return v


def _hex(value: Any) -> int:
    """A hex number as written in YAML: "0019", "0x0c", 0x0c, or digits read as hex (0019)."""
    if isinstance(value, bool):
        raise TypeError("not a number")
    if isinstance(value, (HexInt, HexCapsInt)):
        return int(value)
    if isinstance(value, int):
        return int(str(value), 16)  # 0019 / 19 written without quotes: the digits are hex
    if isinstance(value, str):
        text = value.strip()
        if text[:2] in ("xx", "XX"):  # "xx0c": element byte of any block
            text = text[2:]
        return int(text, 16)
    raise TypeError("not a number")


class ConditionParser:
    """Collects problems; parses attribute paths and conditions."""

    def __init__(self, source: str, models: set[str] | None, destinations: set[str] | None) -> None:
        self.source = source
        self.models = models
        self.destinations = destinations
        self.problems: list[Problem] = []
        self.aliases: dict[str, tuple[Scalar, ...]] = {}

    # ---------------------------------------------------------------- positions
    def err(self, pos: Position, message: str) -> None:
        self.problems.append(Problem(self.source, max(pos.line, 1), max(pos.column, 1), message))

    @staticmethod
    def key_pos(m: Any, key: Any) -> Position:
        lc = getattr(m, "lc", None)
        if lc is None:
            return Position(1, 1)
        try:
            line, col = lc.key(key)
        except (KeyError, TypeError, AttributeError):
            return Position(lc.line + 1, lc.col + 1)
        return Position(line + 1, col + 1)

    @staticmethod
    def value_pos(m: Any, key: Any) -> Position:
        lc = getattr(m, "lc", None)
        if lc is None:
            return Position(1, 1)
        try:
            line, col = lc.value(key)
        except (KeyError, TypeError, AttributeError):
            return ConditionParser.key_pos(m, key)
        return Position(line + 1, col + 1)

    @staticmethod
    def item_pos(s: Any, i: int, default: Position) -> Position:
        lc = getattr(s, "lc", None)
        if lc is None:
            return default
        try:
            line, col = lc.item(i)
        except (KeyError, TypeError, AttributeError, IndexError):
            return default
        return Position(line + 1, col + 1)

    @staticmethod
    def node_pos(node: Any, default: Position) -> Position:
        lc = getattr(node, "lc", None)
        if lc is None:
            return default
        return Position(lc.line + 1, lc.col + 1)

    def check_keys(self, m: CommentedMap, allowed: tuple[str, ...], where: str) -> None:
        for k in m:
            if not isinstance(k, str) or k not in allowed:
                self.err(
                    self.key_pos(m, k),
                    f"unknown key '{k}' in {where}{hint(str(k), allowed)}"
                    f" (allowed: {', '.join(allowed)})",
                )

    # ---------------------------------------------------------------- conditions
    def parse_path(self, text: Any, pos: Position) -> AttributePath | None:
        if not isinstance(text, str):
            self.err(pos, f"expected an attribute (keyword, hex tag or private tag), got {text!r}")
            return None
        try:
            path = parse_path(text)
        except PathSyntaxError as exc:
            msg = str(exc)
            if msg.startswith("unknown DICOM keyword") and text.strip()[:1].islower():
                word = text.strip()
                msg = (
                    f"unknown name '{word}': not a DICOM keyword, a computed attribute "
                    f"({', '.join(SPECIAL_ATTRIBUTES)}) or a combinator (all, any, not)"
                    + hint(word, [*SPECIAL_ATTRIBUTES, *_COMBINATORS])
                )
            elif msg.startswith("unknown DICOM keyword"):
                word = text.strip().split(".")[-1]
                for part in text.strip().split("."):
                    if part.strip() and part.strip()[0].isalpha() and "[" not in part:
                        try:
                            parse_path(part)
                        except PathSyntaxError:
                            word = part.strip()
                            break
                msg = f"unknown DICOM keyword '{word}'" + hint(
                    word, [*_keywords(), *SPECIAL_ATTRIBUTES, *_COMBINATORS]
                )
            self.err(pos, msg)
            return None
        for seg in path.segments[:-1]:
            vr = vr_of(seg)
            if vr is not None and vr != "SQ":
                self.err(
                    pos,
                    f"'{format_path(AttributePath((seg,)))}' is not a sequence (VR {vr}); only "
                    "sequences can be followed by '.'",
                )
                return None
        return path

    def parse_condition(self, node: Any, pos: Position, depth: int) -> Condition | None:
        if depth > _MAX_DEPTH:
            self.err(pos, f"conditions nest deeper than {_MAX_DEPTH} levels")
            return None
        if isinstance(node, CommentedSeq):
            self.err(pos, "a condition is a mapping; use 'all: [...]' or 'any: [...]' for a list")
            return None
        if not isinstance(node, CommentedMap) or not node:
            self.err(
                pos,
                "a condition is a mapping like 'Modality: {equals: CT}', 'all: [...]', "
                "'any: [...]' or 'not: {...}'",
            )
            return None
        pos = self.node_pos(node, pos)
        if "tag" in node:
            return self.parse_explicit(node, pos)
        parts: list[Condition] = []
        ok = True
        for key, val in node.items():
            kpos = self.key_pos(node, key)
            vpos = self.value_pos(node, key)
            c: Condition | None
            if key in ("all", "any"):
                if not isinstance(val, CommentedSeq):
                    self.err(vpos, f"'{key}' needs a list of conditions")
                    ok = False
                    continue
                items = []
                for i, sub in enumerate(val):
                    sc = self.parse_condition(sub, self.item_pos(val, i, vpos), depth + 1)
                    if sc is None:
                        ok = False
                    else:
                        items.append(sc)
                c = (AllOf if key == "all" else AnyOf)(tuple(items), position=kpos)
            elif key == "not":
                sub = self.parse_condition(val, vpos, depth + 1)
                if sub is None:
                    ok = False
                    continue
                c = Not(sub, position=kpos)
            else:
                c = self.parse_compare(key, val, kpos, vpos, node)
                if c is None:
                    ok = False
                    continue
            parts.append(c)
        if not ok:
            return None
        if len(parts) == 1:
            return parts[0]
        return AllOf(tuple(parts), position=pos)

    def parse_explicit(self, node: CommentedMap, pos: Position) -> Condition | None:
        """``{tag: PATH, OP: VALUE, ...}`` where PATH is a string, a ``{private: {...}}``
        mapping, or a list of those (a nested path)."""
        tpos = self.value_pos(node, "tag")
        raw = node["tag"]
        parts = list(raw) if isinstance(raw, CommentedSeq) else [raw]
        texts: list[str] = []
        for i, part in enumerate(parts):
            ppos = self.item_pos(raw, i, tpos) if isinstance(raw, CommentedSeq) else tpos
            if isinstance(part, str):
                texts.append(part.strip())
                continue
            priv = part.get("private") if isinstance(part, CommentedMap) else None
            if not isinstance(priv, CommentedMap) or len(part) != 1:
                self.err(
                    ppos,
                    "'tag' is a keyword, a hex tag, {private: {group, creator, "
                    "element}} or a list of those",
                )
                return None
            self.check_keys(priv, ("group", "creator", "element"), "a private tag")
            group, creator, elem = priv.get("group"), priv.get("creator"), priv.get("element")
            if not isinstance(creator, str) or not creator.strip() or "[" in creator:
                self.err(ppos, "a private tag needs 'creator' (the Private Creator string)")
                return None
            try:
                g = _hex(group)
                e = _hex(elem)
            except (TypeError, ValueError):
                self.err(
                    ppos, "private 'group' and 'element' are hex strings like \"0019\" and \"0x0c\""
                )
                return None
            if not (0 <= g <= 0xFFFF and 0 <= e <= 0xFFFF):
                self.err(ppos, "private 'group' and 'element' are out of range")
                return None
            texts.append(f"{g:04X}[{creator.strip()}]{e & 0xFF:02X}")
        path_text = ".".join(texts)
        ops = CommentedMap()
        for k, v in node.items():
            if k != "tag":
                ops[k] = v
        if hasattr(node, "lc"):
            for k in ops:
                line, col = node.lc.key(k)
                ops.lc.add_kv_line_col(k, [line, col, *node.lc.value(k)])
        ops.lc.line, ops.lc.col = node.lc.line, node.lc.col
        wrapper = CommentedMap()
        wrapper[path_text] = ops
        wrapper.lc.line, wrapper.lc.col = node.lc.line, node.lc.col
        wrapper.lc.add_kv_line_col(
            path_text, [tpos.line - 1, tpos.column - 1, node.lc.line, node.lc.col]
        )
        return self.parse_compare(path_text, ops, tpos, pos, wrapper)

    def parse_compare(
        self, key: Any, val: Any, kpos: Position, vpos: Position, parent: CommentedMap
    ) -> Condition | None:
        path = self.parse_path(key, kpos)
        if path is None:
            return None
        if isinstance(val, CommentedMap):
            ops = [(k, v) for k, v in val.items() if k != "case_sensitive"]
            case = val.get("case_sensitive", False)
            if not isinstance(case, bool):
                self.err(
                    self.value_pos(val, "case_sensitive"), "'case_sensitive' must be true or false"
                )
                return None
            if not ops:
                self.err(vpos, f"no operator for '{key}'; use one of: {', '.join(_OPS)}")
                return None
            out: list[Condition] = []
            for op_name, op_val in ops:
                c = self.make_compare(
                    path,
                    op_name,
                    op_val,
                    case,
                    self.key_pos(val, op_name),
                    self.value_pos(val, op_name),
                    val,
                )
                if c is None:
                    return None
                out.append(c)
            return out[0] if len(out) == 1 else AllOf(tuple(out), position=kpos)
        # shorthand: a scalar means equals, a list means in
        if isinstance(val, CommentedSeq):
            return self.make_compare(path, "in", val, False, kpos, vpos, parent)
        if is_scalar(val):
            return self.make_compare(path, "equals", val, False, kpos, vpos, parent)
        self.err(
            vpos,
            f"'{key}' needs an operator mapping like {{equals: ...}}, a value or a list of values",
        )
        return None

    def make_compare(
        self,
        path: AttributePath,
        op_name: Any,
        value: Any,
        case: bool,
        kpos: Position,
        vpos: Position,
        parent: Any,
    ) -> Compare | None:
        if op_name not in _OPS:
            self.err(
                kpos,
                f"unknown operator '{op_name}'{hint(str(op_name), [*_OPS, 'case_sensitive'])}",
            )
            return None
        op = Op(op_name)
        name = format_path(path)
        vr = vr_of(path.segments[-1]) if path.segments else None
        if path.special == "instance_count":
            vr = "IS"
        if vr == "SQ" and op not in PRESENCE_OPS:
            self.err(
                kpos,
                f"'{name}' is a sequence; compare an attribute inside it "
                f"('{name}.CodeMeaning') or use exists/missing",
            )
            return None
        if op in PRESENCE_OPS:
            if not isinstance(value, bool):
                self.err(vpos, f"'{op}' takes true or false")
                return None
            return Compare(path, op, bool(value), case, position=kpos)
        if op in LIST_OPS:
            return self._list_compare(path, op, value, case, kpos, vpos)
        if op in NUMERIC_OPS:
            return self._numeric_compare(path, op, value, case, vr, kpos, vpos)
        if op == Op.EQUALS:
            if not is_scalar(value):
                self.err(vpos, "'equals' takes one string or number (use 'in' for a list)")
                return None
            self.check_special_values(path, (value,), vpos)
            return Compare(path, op, plain(value), case, position=kpos)
        # string operators
        if not isinstance(value, str):
            self.err(vpos, f"'{op}' takes a string, not {value!r}")
            return None
        if op == Op.MATCHES:
            try:
                compile_pattern(value, case_sensitive=case)
            except RegexError as exc:
                shown = value if len(value) <= 60 else value[:57] + "..."
                self.err(vpos, f"invalid pattern '{shown}': {exc}")
                return None
        assert op in STRING_OPS
        return Compare(path, op, str(value), case, position=kpos)

    def _list_compare(
        self, path: AttributePath, op: Op, value: Any, case: bool, kpos: Position, vpos: Position
    ) -> Compare | None:
        """``in`` / ``not_in``: a non-empty list of scalars or an alias (``$name``)."""
        alias = None
        if isinstance(value, str) and value.startswith("$"):
            alias = value[1:]
            if alias not in self.aliases:
                self.err(vpos, f"unknown alias '${alias}'{hint(alias, self.aliases)}")
                return None
            items = self.aliases[alias]
        elif isinstance(value, list) and all(is_scalar(x) for x in value) and value:
            items = tuple(plain(x) for x in value)
        else:
            self.err(vpos, f"'{op}' takes a non-empty list of values or an alias like '$name'")
            return None
        self.check_special_values(path, items, vpos)
        return Compare(path, op, tuple(items), case, alias=alias, position=kpos)

    def _numeric_compare(
        self,
        path: AttributePath,
        op: Op,
        value: Any,
        case: bool,
        vr: str | None,
        kpos: Position,
        vpos: Position,
    ) -> Compare | None:
        """``gt`` / ``lt`` / ... / ``between``: numbers, on attributes of a numeric VR."""
        name = format_path(path)
        if vr is not None and vr not in _NUMERIC_VRS:
            self.err(kpos, f"'{op}' compares numbers but '{name}' has VR {vr}")
            return None
        if path.special in ("body_part", "orientation"):
            self.err(kpos, f"'{op}' compares numbers but '{name}' is text")
            return None
        if op == Op.BETWEEN:
            if (
                not isinstance(value, list)
                or len(value) != 2
                or not all(is_number(x) for x in value)
            ):
                self.err(vpos, "'between' takes [low, high] (two numbers, inclusive)")
                return None
            if value[0] > value[1]:
                self.err(vpos, f"'between' low {value[0]} is above high {value[1]}")
                return None
            return Compare(path, op, (plain(value[0]), plain(value[1])), case, position=kpos)
        if not is_number(value):
            self.err(vpos, f"'{op}' takes a number, not {value!r}")
            return None
        return Compare(path, op, plain(value), case, position=kpos)

    def check_special_values(
        self, path: AttributePath, items: Iterable[Any], pos: Position
    ) -> None:
        if path.special == "orientation":
            for it in items:
                if str(it).strip().upper() not in _ORIENTATIONS:
                    self.err(
                        pos,
                        f"orientation is one of {', '.join(_ORIENTATIONS)}, not {it!r}"
                        + hint(str(it).upper(), _ORIENTATIONS),
                    )
