"""Reading a rule file: YAML -> ``RuleSet``, collecting *every* problem with its line and column.

The YAML is read with ruamel.yaml's round-trip loader only to know where each node is; the
result is plain data.  Nothing in a rule file is executed or templated.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from pydicom.datadict import keyword_dict
from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap, CommentedSeq
from ruamel.yaml.error import MarkedYAMLError, YAMLError

from dicom_rules.errors import Problem, RuleError
from dicom_rules.model import (
    LIST_OPS,
    NUMERIC_OPS,
    PRESENCE_OPS,
    SPECIAL_ATTRIBUTES,
    STRING_OPS,
    Action,
    AllOf,
    AnyOf,
    AttributePath,
    Compare,
    Condition,
    Defaults,
    Not,
    Op,
    Position,
    Preference,
    Rule,
    RuleKind,
    RuleSet,
    Scalar,
    Scope,
    Select,
)
from dicom_rules.paths import PathSyntaxError, format_path, parse_path, vr_of
from dicom_rules.regex import RegexError, compile_pattern

__all__ = ["SUPPORTED_VERSIONS", "load", "parse"]

SUPPORTED_VERSIONS = (1,)
_TOP_KEYS = ("version", "defaults", "aliases", "body_parts", "rules")
_RULE_KEYS = (
    "name",
    "description",
    "priority",
    "scope",
    "type",
    "when",
    "select",
    "then",
    "stop",
)
_ACTION_KEYS = ("model", "parameters", "deliver", "send_to", "ignore")
_DEFAULT_KEYS = ("deliver", "priority", "scope")
_SELECT_KEYS = ("where", "prefer", "count")
_PREFER_KEYS = ("lowest", "highest", "matching")
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


def _hint(word: str, choices: Iterable[str]) -> str:
    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return f"; did you mean '{close[0]}'?" if close else ""


def _is_scalar(v: Any) -> bool:
    return isinstance(v, (str, int, float)) and not isinstance(v, bool)


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _plain(v: Any) -> Any:
    """ruamel containers -> plain dict/list/scalars (for parameters)."""
    if isinstance(v, dict):
        return {str(k): _plain(x) for k, x in v.items()}
    if isinstance(v, list):
        return [_plain(x) for x in v]
    if isinstance(v, str):
        return str(v)
    if isinstance(v, bool):
        return bool(v)
    if isinstance(v, int):
        return int(v)
    if isinstance(v, float):
        return float(v)
    return v


class _Parser:
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
            return _Parser.key_pos(m, key)
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
                    f"unknown key '{k}' in {where}{_hint(str(k), allowed)}"
                    f" (allowed: {', '.join(allowed)})",
                )

    # ---------------------------------------------------------------- file
    def document(self, data: Any) -> RuleSet | None:
        if not isinstance(data, CommentedMap):
            self.err(Position(1, 1), "a rule file is a mapping with 'version' and 'rules'")
            return None
        self.check_keys(data, _TOP_KEYS, "the rule file")
        version = 1
        if "version" not in data:
            self.err(Position(1, 1), "missing 'version: 1' at the top of the rule file")
        else:
            v = data["version"]
            if not (isinstance(v, int) and not isinstance(v, bool)) or v not in SUPPORTED_VERSIONS:
                self.err(
                    self.value_pos(data, "version"),
                    f"unsupported version {v!r}; this ainode reads version 1",
                )
            else:
                version = v
        self.aliases = self.parse_aliases(data)
        defaults = self.parse_defaults(data)
        body_parts = self.parse_body_parts(data)
        rules: list[Rule] = []
        if "rules" not in data:
            self.err(Position(1, 1), "missing 'rules:' (a list of rules)")
        elif not isinstance(data["rules"], CommentedSeq):
            self.err(self.value_pos(data, "rules"), "'rules' must be a list of rules")
        else:
            seq = data["rules"]
            seen: dict[str, Position] = {}
            for i, node in enumerate(seq):
                pos = self.item_pos(seq, i, self.value_pos(data, "rules"))
                rule = self.parse_rule(node, pos, defaults, i)
                if rule is None:
                    continue
                if rule.name in seen:
                    first = seen[rule.name]
                    self.err(
                        rule.position,
                        f"duplicate rule name '{rule.name}' (first defined at line {first.line})",
                    )
                    continue
                seen[rule.name] = rule.position
                rules.append(rule)
            self.check_reachability(rules)
        return RuleSet(
            rules=tuple(rules),
            version=version,
            defaults=defaults,
            aliases=dict(self.aliases),
            body_parts=body_parts,
            source=self.source,
            destinations=tuple(sorted(self.destinations or ())),
        )

    def parse_aliases(self, data: CommentedMap) -> dict[str, tuple[Scalar, ...]]:
        out: dict[str, tuple[Scalar, ...]] = {}
        if "aliases" not in data or data["aliases"] is None:
            return out
        m = data["aliases"]
        if not isinstance(m, CommentedMap):
            self.err(self.value_pos(data, "aliases"), "'aliases' must map names to lists of values")
            return out
        for name, vals in m.items():
            pos = self.key_pos(m, name)
            if not isinstance(name, str) or not name.replace("_", "").replace("-", "").isalnum():
                self.err(pos, f"alias name {name!r} must be letters, digits, '_' or '-'")
                continue
            if not isinstance(vals, CommentedSeq) or not all(_is_scalar(v) for v in vals):
                self.err(
                    self.value_pos(m, name), f"alias '{name}' must be a list of strings/numbers"
                )
                continue
            out[name] = tuple(_plain(v) for v in vals)
        return out

    def parse_body_parts(self, data: CommentedMap) -> dict[str, tuple[str, ...]]:
        out: dict[str, tuple[str, ...]] = {}
        if "body_parts" not in data or data["body_parts"] is None:
            return out
        m = data["body_parts"]
        if not isinstance(m, CommentedMap):
            self.err(
                self.value_pos(data, "body_parts"),
                "'body_parts' must map canonical names to lists of synonyms",
            )
            return out
        for name, vals in m.items():
            if not isinstance(name, str) or not name.strip():
                self.err(self.key_pos(m, name), "a body part name must be a non-empty string")
                continue
            if not isinstance(vals, CommentedSeq) or not all(isinstance(v, str) for v in vals):
                self.err(self.value_pos(m, name), f"body part '{name}' needs a list of synonyms")
                continue
            out[str(name)] = tuple(str(v) for v in vals)
        return out

    def parse_defaults(self, data: CommentedMap) -> Defaults:
        if "defaults" not in data or data["defaults"] is None:
            return Defaults()
        m = data["defaults"]
        if not isinstance(m, CommentedMap):
            self.err(self.value_pos(data, "defaults"), "'defaults' must be a mapping")
            return Defaults()
        self.check_keys(m, _DEFAULT_KEYS, "defaults")
        deliver = self.parse_deliver(m) if "deliver" in m else None
        priority = self.parse_priority(m, 0)
        scope = self.parse_scope(m, Scope.SERIES)
        return Defaults(deliver=deliver, priority=priority, scope=scope)

    def parse_deliver(self, m: CommentedMap) -> tuple[str, ...] | None:
        v = m["deliver"]
        pos = self.value_pos(m, "deliver")
        if isinstance(v, str):
            v = [v]
        if not isinstance(v, list) or not all(isinstance(x, str) and x for x in v):
            self.err(pos, "'deliver' must be a list of destination names")
            return None
        for i, name in enumerate(v):
            self.check_destination(name, self.item_pos(v, i, pos))
        return tuple(str(x) for x in v)

    def check_destination(self, name: str, pos: Position) -> None:
        if self.destinations is not None and name not in self.destinations:
            known = ", ".join(sorted(self.destinations)) or "none configured"
            self.err(
                pos,
                f"unknown destination '{name}'{_hint(name, self.destinations)}"
                f" (destinations in the config: {known})",
            )

    def parse_priority(self, m: CommentedMap, default: int) -> int:
        if "priority" not in m:
            return default
        v = m["priority"]
        if not isinstance(v, int) or isinstance(v, bool) or not -1_000_000 <= v <= 1_000_000:
            self.err(self.value_pos(m, "priority"), "'priority' must be a whole number")
            return default
        return int(v)

    def parse_scope(self, m: CommentedMap, default: Scope) -> Scope:
        if "scope" not in m:
            return default
        v = m["scope"]
        try:
            return Scope(v)
        except ValueError:
            self.err(
                self.value_pos(m, "scope"),
                f"'scope' must be 'series' or 'study', not {v!r}"
                + _hint(str(v), [s.value for s in Scope]),
            )
            return default

    # ---------------------------------------------------------------- rules
    def parse_rule(self, node: Any, pos: Position, defaults: Defaults, i: int) -> Rule | None:
        if not isinstance(node, CommentedMap):
            self.err(pos, f"rule #{i + 1} must be a mapping with 'name', 'when' and 'then'")
            return None
        pos = self.node_pos(node, pos)
        name = node.get("name")
        label = f"rule '{name}'" if isinstance(name, str) and name.strip() else f"rule #{i + 1}"
        self.check_keys(node, _RULE_KEYS, label)
        if not isinstance(name, str) or not name.strip():
            self.err(pos, f"rule #{i + 1} needs a 'name' (a non-empty string)")
            return None
        where = f"rule '{name}'"
        desc = node.get("description")
        if desc is not None and not isinstance(desc, str):
            self.err(self.value_pos(node, "description"), "'description' must be text")
            desc = None
        priority = self.parse_priority(node, defaults.priority)
        scope = self.parse_scope(node, defaults.scope)
        kind = RuleKind.ROUTE
        if "type" in node:
            try:
                kind = RuleKind(node["type"])
            except ValueError:
                self.err(
                    self.value_pos(node, "type"),
                    f"'type' must be 'route' or 'fallback', not {node['type']!r}"
                    + _hint(str(node["type"]), [k.value for k in RuleKind]),
                )
        stop = False
        if "stop" in node:
            if not isinstance(node["stop"], bool):
                self.err(self.value_pos(node, "stop"), "'stop' must be true or false")
            else:
                stop = node["stop"]
        when = None
        if "when" in node:
            when = self.parse_condition(node["when"], self.value_pos(node, "when"), 0)
        elif kind is RuleKind.ROUTE:
            pass  # a rule without 'when' matches every series
        select = None
        if "select" in node:
            select = self.parse_select(node, where)
            if scope is not Scope.STUDY:
                self.err(
                    self.key_pos(node, "select"),
                    f"{where}: 'select' needs 'scope: study' (it chooses among a study's series)",
                )
        actions: tuple[Action, ...] = ()
        if "then" not in node:
            self.err(pos, f"{where} needs 'then' (model, send_to or ignore)")
        else:
            actions = self.parse_actions(node, where)
        return Rule(
            name=name,
            actions=actions,
            when=when,
            description=desc,
            priority=priority,
            scope=scope,
            select=select,
            stop=stop,
            kind=kind,
            position=pos,
        )

    def parse_actions(self, node: CommentedMap, where: str) -> tuple[Action, ...]:
        v = node["then"]
        pos = self.value_pos(node, "then")
        if v == "ignore":
            return (Action(ignore=True, position=pos),)
        items: list[tuple[Any, Position]]
        if isinstance(v, CommentedMap):
            items = [(v, pos)]
        elif isinstance(v, CommentedSeq) and v:
            items = [(x, self.item_pos(v, i, pos)) for i, x in enumerate(v)]
        else:
            self.err(
                pos,
                f"{where}: 'then' must be 'ignore', an action mapping "
                "(model/parameters/deliver/send_to) or a list of them",
            )
            return ()
        out = []
        for item, ipos in items:
            if item == "ignore":
                out.append(Action(ignore=True, position=ipos))
                continue
            if not isinstance(item, CommentedMap):
                self.err(ipos, f"{where}: each action must be a mapping or 'ignore'")
                continue
            ipos = self.node_pos(item, ipos)
            before = len(self.problems)
            self.check_keys(item, _ACTION_KEYS, f"the action of {where}")
            a = self.parse_action(item, ipos, where, quiet=len(self.problems) > before)
            if a is not None:
                out.append(a)
        if len(out) > 1 and any(a.ignore for a in out):
            self.err(pos, f"{where}: 'ignore' cannot be combined with other actions")
        return tuple(out)

    def parse_action(
        self, m: CommentedMap, pos: Position, where: str, *, quiet: bool = False
    ) -> Action | None:
        ignore = False
        if "ignore" in m:
            if not isinstance(m["ignore"], bool):
                self.err(self.value_pos(m, "ignore"), "'ignore' must be true or false")
            else:
                ignore = m["ignore"]
        model = m.get("model")
        if model is not None:
            if not isinstance(model, str) or not model.strip():
                self.err(self.value_pos(m, "model"), "'model' must be a model name")
                model = None
            elif self.models is not None and model not in self.models:
                known = ", ".join(sorted(self.models)) or "none"
                self.err(
                    self.value_pos(m, "model"),
                    f"unknown model '{model}'{_hint(model, self.models)} (known models: {known})",
                )
        send_to = m.get("send_to")
        if send_to is not None:
            if not isinstance(send_to, str) or not send_to.strip():
                self.err(self.value_pos(m, "send_to"), "'send_to' must be a destination name")
                send_to = None
            else:
                self.check_destination(send_to, self.value_pos(m, "send_to"))
        params: dict[str, Any] = {}
        if "parameters" in m:
            p = m["parameters"]
            if p is None:
                p = {}
            if not isinstance(p, dict) or not all(isinstance(k, str) for k in p):
                self.err(self.value_pos(m, "parameters"), "'parameters' must be a mapping")
            else:
                params = _plain(p)
            if model is None and "model" not in m:
                self.err(self.key_pos(m, "parameters"), "'parameters' needs a 'model'")
        deliver = self.parse_deliver(m) if "deliver" in m else None
        if ignore and (model is not None or send_to is not None or deliver is not None):
            self.err(pos, f"{where}: 'ignore' cannot be combined with model/send_to/deliver")
            return None
        if not ignore and model is None and send_to is None:
            if "model" not in m and "send_to" not in m and not quiet:
                self.err(pos, f"{where}: an action needs 'model', 'send_to' or 'ignore: true'")
            return None
        return Action(
            model=model,
            parameters=params,
            deliver=deliver,
            send_to=send_to,
            ignore=ignore,
            position=pos,
        )

    def parse_select(self, node: CommentedMap, where: str) -> Select | None:
        m = node["select"]
        pos = self.value_pos(node, "select")
        if not isinstance(m, CommentedMap):
            self.err(pos, f"{where}: 'select' must be a mapping (where/prefer/count)")
            return None
        self.check_keys(m, _SELECT_KEYS, f"the select of {where}")
        sel_where = None
        if "where" in m:
            sel_where = self.parse_condition(m["where"], self.value_pos(m, "where"), 0)
        prefer: list[Preference] = []
        if "prefer" in m:
            p = m["prefer"]
            ppos = self.value_pos(m, "prefer")
            if isinstance(p, CommentedMap):
                p = [p]
            if not isinstance(p, list):
                self.err(ppos, "'prefer' must be a list like [{lowest: SliceThickness}]")
                p = []
            for i, item in enumerate(p):
                ipos = self.item_pos(p, i, ppos)
                if not isinstance(item, CommentedMap) or len(item) != 1:
                    self.err(
                        ipos,
                        "each 'prefer' item is one of lowest: PATH, highest: PATH, "
                        "matching: CONDITION",
                    )
                    continue
                ((kind, val),) = item.items()
                kpos = self.key_pos(item, kind)
                if kind not in _PREFER_KEYS:
                    self.err(kpos, f"unknown preference '{kind}'{_hint(str(kind), _PREFER_KEYS)}")
                    continue
                if kind == "matching":
                    cond = self.parse_condition(val, self.value_pos(item, kind), 0)
                    if cond is not None:
                        prefer.append(Preference("matching", condition=cond, position=kpos))
                    continue
                path = self.parse_path(val, self.value_pos(item, kind))
                if path is not None:
                    prefer.append(Preference(str(kind), path=path, position=kpos))
        count: int | None = 1
        if "count" in m:
            c = m["count"]
            if c == "all":
                count = None
            elif isinstance(c, int) and not isinstance(c, bool) and c >= 1:
                count = int(c)
            else:
                self.err(self.value_pos(m, "count"), "'count' must be a positive number or 'all'")
        elif not prefer:
            count = None
        return Select(where=sel_where, prefer=tuple(prefer), count=count, position=pos)

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
                    + _hint(word, [*SPECIAL_ATTRIBUTES, *_COMBINATORS])
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
                msg = f"unknown DICOM keyword '{word}'" + _hint(
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
                g = int(str(group), 16)
                e = int(str(elem), 16) if isinstance(elem, str) else int(elem)
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
        if _is_scalar(val):
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
                f"unknown operator '{op_name}'{_hint(str(op_name), [*_OPS, 'case_sensitive'])}",
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
        alias = None
        if op in PRESENCE_OPS:
            if not isinstance(value, bool):
                self.err(vpos, f"'{op}' takes true or false")
                return None
            return Compare(path, op, bool(value), case, position=kpos)
        if op in LIST_OPS:
            if isinstance(value, str) and value.startswith("$"):
                alias = value[1:]
                if alias not in self.aliases:
                    self.err(vpos, f"unknown alias '${alias}'{_hint(alias, self.aliases)}")
                    return None
                items = self.aliases[alias]
            elif isinstance(value, list) and all(_is_scalar(x) for x in value) and value:
                items = tuple(_plain(x) for x in value)
            else:
                self.err(vpos, f"'{op}' takes a non-empty list of values or an alias like '$name'")
                return None
            self.check_special_values(path, items, vpos)
            return Compare(path, op, tuple(items), case, alias=alias, position=kpos)
        if op in NUMERIC_OPS:
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
                    or not all(_is_number(x) for x in value)
                ):
                    self.err(vpos, "'between' takes [low, high] (two numbers, inclusive)")
                    return None
                if value[0] > value[1]:
                    self.err(vpos, f"'between' low {value[0]} is above high {value[1]}")
                    return None
                return Compare(path, op, (_plain(value[0]), _plain(value[1])), case, position=kpos)
            if not _is_number(value):
                self.err(vpos, f"'{op}' takes a number, not {value!r}")
                return None
            return Compare(path, op, _plain(value), case, position=kpos)
        if op == Op.EQUALS:
            if not _is_scalar(value):
                self.err(vpos, "'equals' takes one string or number (use 'in' for a list)")
                return None
            self.check_special_values(path, (value,), vpos)
            return Compare(path, op, _plain(value), case, position=kpos)
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

    def check_special_values(
        self, path: AttributePath, items: Iterable[Any], pos: Position
    ) -> None:
        if path.special == "orientation":
            for it in items:
                if str(it).strip().upper() not in _ORIENTATIONS:
                    self.err(
                        pos,
                        f"orientation is one of {', '.join(_ORIENTATIONS)}, not {it!r}"
                        + _hint(str(it).upper(), _ORIENTATIONS),
                    )

    # ---------------------------------------------------------------- whole-file checks
    def check_reachability(self, rules: list[Rule]) -> None:
        """A ``stop`` rule without condition claims every series: lower rules are dead."""
        for kind in (RuleKind.ROUTE, RuleKind.FALLBACK):
            catch_all = [
                r
                for r in rules
                if r.kind is kind
                and r.when is None
                and (r.stop or r.is_ignore)
                and r.scope is Scope.SERIES
            ]
            if not catch_all:
                continue
            top = max(catch_all, key=lambda r: r.priority)
            for r in rules:
                if r.kind is kind and r.priority < top.priority:
                    self.err(
                        r.position,
                        f"rule '{r.name}' is unreachable: rule '{top.name}' (priority "
                        f"{top.priority}) matches every series and stops; raise the priority of "
                        f"'{r.name}' above {top.priority} or give '{top.name}' a 'when'",
                    )
                if kind is RuleKind.ROUTE and r.kind is RuleKind.FALLBACK:
                    self.err(
                        r.position,
                        f"fallback rule '{r.name}' is unreachable: rule '{top.name}' matches "
                        "every series, so nothing is ever left for a fallback",
                    )


def _read_yaml(text: str, source: str) -> Any:
    yaml = YAML(typ="rt")
    yaml.allow_duplicate_keys = False
    try:
        return yaml.load(text)
    except MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line, col = (mark.line + 1, mark.column + 1) if mark else (1, 1)
        problem = exc.problem or "syntax error"
        if "duplicate key" in str(problem) or "found duplicate key" in str(exc):
            problem = f"duplicate key: {problem}"
        raise RuleError([Problem(source, line, col, f"YAML: {problem}")]) from None
    except YAMLError as exc:
        raise RuleError([Problem(source, 1, 1, f"YAML: {exc}")]) from None


def parse(
    text: str,
    *,
    source: str = "<rules>",
    models: set[str] | None = None,
    destinations: set[str] | None = None,
) -> RuleSet:
    """Parse rule-file ``text``.

    Parameters
    ----------
    text:
        The YAML document.
    source:
        The file name used in problems.
    models, destinations:
        When given, model and destination names must be among them.

    Raises
    ------
    RuleError
        With every problem found.
    """
    data = _read_yaml(text, source)
    p = _Parser(source, models, destinations)
    ruleset = p.document(data)
    if p.problems or ruleset is None:
        raise RuleError(p.problems or [Problem(source, 1, 1, "empty rule file")])
    return ruleset


def load(
    path_or_text: str | Path,
    *,
    models: set[str] | None = None,
    destinations: set[str] | None = None,
) -> RuleSet:
    """Load a rule file (a ``Path``, or a ``str`` naming an existing file) or rule text.

    A ``str`` containing a newline is always text; otherwise it is a file name if such a file
    exists, else text.

    Raises
    ------
    RuleError
        With every problem found (including a file that cannot be read).
    """
    if isinstance(path_or_text, Path) or (
        "\n" not in path_or_text and Path(path_or_text).is_file()
    ):
        path = Path(path_or_text)
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise RuleError([Problem(str(path), 1, 1, f"cannot read rule file: {exc}")]) from None
        return parse(text, source=str(path), models=models, destinations=destinations)
    return parse(path_or_text, models=models, destinations=destinations)
