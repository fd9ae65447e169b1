"""Reading a rule file: YAML -> ``RuleSet``, collecting *every* problem with its line and column.

The YAML is read with ruamel.yaml's round-trip loader only to know where each node is; the
result is plain data.  Nothing in a rule file is executed or templated.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap, CommentedSeq
from ruamel.yaml.error import MarkedYAMLError, YAMLError
from ruamel.yaml.events import AliasEvent

from dicom_rules.errors import Problem, RuleError
from dicom_rules.model import (
    VOLUME_ORIENTATIONS,
    VOLUME_PREFERENCES,
    WORKITEM_PRIORITIES,
    Action,
    Defaults,
    Position,
    Preference,
    Priors,
    ResultsOptions,
    Rule,
    RuleKind,
    RuleSet,
    Scalar,
    Scope,
    Select,
    VolumeSelect,
    WorkitemRequest,
)
from dicom_rules.parse_conditions import ConditionParser, hint, is_scalar, plain

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
    "results",
    "priors",
)
_ACTION_KEYS = ("model", "parameters", "deliver", "send_to", "ignore", "workitem")
_WORKITEM_KEYS = ("code", "meaning", "scheme", "station", "priority")
#: Longest Code Value (SH: 16) / Code Meaning (LO: 64) / Coding Scheme Designator (SH: 16).
_WORKITEM_LENGTHS = {"code": 16, "meaning": 64, "scheme": 16, "station": 16}
_DEFAULT_KEYS = ("deliver", "priority", "scope")
_SELECT_KEYS = ("where", "prefer", "count", "volume")
_VOLUME_KEYS = ("orientation", "echo", "uniform", "prefer", "partial")
_PREFER_KEYS = ("lowest", "highest", "matching")
_RESULTS_KEYS = ("combine", "prefer")
_PRIORS_KEYS = ("from", "max", "within_days", "match")
#: Largest ``priors.max`` and ``priors.within_days`` (a hand-written rule never needs more).
MAX_PRIORS = 10
MAX_PRIOR_DAYS = 36500


class _Parser(ConditionParser):
    """The whole rule file: top-level keys, rules, actions, select, whole-file checks."""

    #: the config's pull source names (None: not checked)
    sources: set[str] | None = None

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
            if not isinstance(vals, CommentedSeq) or not all(is_scalar(v) for v in vals):
                self.err(
                    self.value_pos(m, name), f"alias '{name}' must be a list of strings/numbers"
                )
                continue
            out[name] = tuple(plain(v) for v in vals)
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
                f"unknown destination '{name}'{hint(name, self.destinations)}"
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
                + hint(str(v), [s.value for s in Scope]),
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
                    + hint(str(node["type"]), [k.value for k in RuleKind]),
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
            only_volume = isinstance(node["select"], CommentedMap) and set(node["select"]) == {
                "volume"
            }
            if scope is not Scope.STUDY and not only_volume:
                self.err(
                    self.key_pos(node, "select"),
                    f"{where}: 'select' needs 'scope: study' (it chooses among a study's series)",
                )
        actions: tuple[Action, ...] = ()
        if "then" not in node:
            self.err(pos, f"{where} needs 'then' (model, send_to, workitem or ignore)")
        else:
            actions = self.parse_actions(node, where)
        results = self.parse_results(node, where, actions) if "results" in node else None
        priors = self.parse_priors(node, where, actions) if "priors" in node else None
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
            results=results,
            priors=priors,
        )

    def parse_priors(
        self, node: CommentedMap, where: str, actions: tuple[Action, ...]
    ) -> Priors | None:
        m = node["priors"]
        pos = self.value_pos(node, "priors")
        if not isinstance(m, CommentedMap):
            self.err(pos, f"{where}: 'priors' must be a mapping ({', '.join(_PRIORS_KEYS)})")
            return None
        self.check_keys(m, _PRIORS_KEYS, f"the priors of {where}")
        ok = True
        if actions and not any(a.model is not None for a in actions):
            self.err(
                self.key_pos(node, "priors"),
                f"{where}: 'priors' needs a 'model' action (the prior is fetched for its jobs)",
            )
            ok = False
        source = m.get("from")
        if "from" not in m:
            self.err(pos, f"{where}: 'priors' needs 'from' (a source name from the config)")
            ok = False
        elif not isinstance(source, str) or not source.strip():
            self.err(self.value_pos(m, "from"), "'from' must be a source name")
            ok = False
        elif self.sources is not None and source not in self.sources:
            known = ", ".join(sorted(self.sources)) or "none configured"
            self.err(
                self.value_pos(m, "from"),
                f"unknown source '{source}'{hint(source, self.sources)}"
                f" (sources in the config: {known})",
            )
            ok = False
        count = 1
        if "max" in m:
            v = m["max"]
            if isinstance(v, int) and not isinstance(v, bool) and 1 <= v <= MAX_PRIORS:
                count = int(v)
            else:
                self.err(
                    self.value_pos(m, "max"),
                    f"'max' must be a whole number from 1 to {MAX_PRIORS} (prior studies fetched)",
                )
                ok = False
        days: int | None = None
        if "within_days" in m:
            v = m["within_days"]
            if isinstance(v, int) and not isinstance(v, bool) and 1 <= v <= MAX_PRIOR_DAYS:
                days = int(v)
            else:
                self.err(
                    self.value_pos(m, "within_days"),
                    f"'within_days' must be a whole number of days from 1 to {MAX_PRIOR_DAYS}",
                )
                ok = False
        match = None
        if "match" in m:
            match = self.parse_condition(m["match"], self.value_pos(m, "match"), 0)
            ok = ok and match is not None
        if not ok:
            return None
        return Priors(source=str(source), max=count, within_days=days, match=match, position=pos)

    def parse_results(
        self, node: CommentedMap, where: str, actions: tuple[Action, ...]
    ) -> ResultsOptions | None:
        m = node["results"]
        pos = self.value_pos(node, "results")
        if not isinstance(m, CommentedMap):
            self.err(pos, f"{where}: 'results' must be a mapping (combine/prefer)")
            return None
        self.check_keys(m, _RESULTS_KEYS, f"the results of {where}")
        combine: bool | None = None
        if "combine" in m:
            if not isinstance(m["combine"], bool):
                self.err(self.value_pos(m, "combine"), "'combine' must be true or false")
            else:
                combine = m["combine"]
        prefer: tuple[str, ...] = ()
        if "prefer" in m:
            v = m["prefer"]
            vpos = self.value_pos(m, "prefer")
            if isinstance(v, str):
                v = [v]
            if not isinstance(v, list) or not all(isinstance(x, str) and x.strip() for x in v):
                self.err(vpos, "'prefer' must be a list of model names")
            else:
                own = [a.model for a in actions if a.model is not None]
                for i, name in enumerate(v):
                    if name not in own:
                        self.err(
                            self.item_pos(v, i, vpos) if isinstance(v, CommentedSeq) else vpos,
                            f"{where}: 'prefer' names '{name}', which is not a model of this"
                            f" rule{hint(name, own)} (its models: {', '.join(own) or 'none'})",
                        )
                prefer = tuple(str(x) for x in v)
        return ResultsOptions(combine=combine, prefer=prefer, position=pos)

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
                "(model/parameters/deliver/send_to/workitem) or a list of them",
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
                    f"unknown model '{model}'{hint(model, self.models)} (known models: {known})",
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
                params = plain(p)
            if model is None and "model" not in m:
                self.err(self.key_pos(m, "parameters"), "'parameters' needs a 'model'")
        deliver = self.parse_deliver(m) if "deliver" in m else None
        workitem = self.parse_workitem(m, where) if "workitem" in m else None
        if ignore and (
            model is not None or send_to is not None or deliver is not None or workitem is not None
        ):
            self.err(
                pos, f"{where}: 'ignore' cannot be combined with model/send_to/deliver/workitem"
            )
            return None
        if not ignore and model is None and send_to is None and workitem is None:
            if "model" not in m and "send_to" not in m and "workitem" not in m and not quiet:
                self.err(
                    pos,
                    f"{where}: an action needs 'model', 'send_to', 'workitem' or 'ignore: true'",
                )
            return None
        return Action(
            model=model,
            parameters=params,
            deliver=deliver,
            send_to=send_to,
            ignore=ignore,
            position=pos,
            workitem=workitem,
        )

    def parse_workitem(self, m: CommentedMap, where: str) -> WorkitemRequest | None:
        """``workitem: {code, meaning?, scheme?, station?, priority?}`` (issue 23)."""
        w = m["workitem"]
        pos = self.value_pos(m, "workitem")
        if not isinstance(w, CommentedMap):
            self.err(pos, f"{where}: 'workitem' must be a mapping with at least 'code'")
            return None
        before = len(self.problems)
        self.check_keys(w, _WORKITEM_KEYS, f"the workitem of {where}")
        values: dict[str, str] = {}
        for key in _WORKITEM_KEYS:
            if key not in w:
                continue
            v = w[key]
            if not isinstance(v, str) or not v.strip():
                self.err(self.value_pos(w, key), f"workitem '{key}' must be a non-empty text")
                continue
            limit = _WORKITEM_LENGTHS.get(key)
            if limit is not None and len(v) > limit:
                self.err(
                    self.value_pos(w, key),
                    f"workitem '{key}' is longer than {limit} characters (its DICOM VR allows "
                    f"{limit})",
                )
                continue
            if "\\" in v:
                self.err(self.value_pos(w, key), f"workitem '{key}' must not contain a backslash")
                continue
            values[key] = v.strip()
        if "code" not in w:
            self.err(pos, f"{where}: 'workitem' needs a 'code' (Scheduled Workitem Code Value)")
        priority = values.get("priority", "MEDIUM")
        if priority not in WORKITEM_PRIORITIES:
            self.err(
                self.value_pos(w, "priority"),
                f"workitem 'priority' must be one of {', '.join(WORKITEM_PRIORITIES)}",
            )
        if len(self.problems) > before or "code" not in values:
            return None
        return WorkitemRequest(
            code=values["code"],
            meaning=values.get("meaning"),
            scheme=values.get("scheme", "99AINODE"),
            station=values.get("station"),
            priority=priority,
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
                    self.err(kpos, f"unknown preference '{kind}'{hint(str(kind), _PREFER_KEYS)}")
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
        volume = None
        if "volume" in m:
            volume = self.parse_volume(m["volume"], self.value_pos(m, "volume"), where)
        return Select(
            where=sel_where, prefer=tuple(prefer), count=count, volume=volume, position=pos
        )

    def parse_volume(self, m: Any, pos: Position, where: str) -> VolumeSelect | None:
        if not isinstance(m, CommentedMap):
            self.err(pos, f"{where}: 'select.volume' must be a mapping ({', '.join(_VOLUME_KEYS)})")
            return None
        self.check_keys(m, _VOLUME_KEYS, f"the select.volume of {where}")
        orientation: tuple[str, ...] = ()
        if "orientation" in m:
            o = m["orientation"]
            items = [o] if isinstance(o, str) else o
            if not isinstance(items, list) or not all(isinstance(i, str) for i in items):
                self.err(
                    self.value_pos(m, "orientation"), "'orientation' must be a plane or a list"
                )
                items = []
            for i in items:
                if i.upper() not in VOLUME_ORIENTATIONS:
                    self.err(
                        self.value_pos(m, "orientation"),
                        f"unknown orientation '{i}'{hint(i.upper(), VOLUME_ORIENTATIONS)} "
                        f"(one of {', '.join(VOLUME_ORIENTATIONS)})",
                    )
            orientation = tuple(i.upper() for i in items)
        echo = None
        if "echo" in m:
            e = m["echo"]
            if isinstance(e, int) and not isinstance(e, bool) and e >= 1:
                echo = int(e)
            else:
                self.err(self.value_pos(m, "echo"), "'echo' must be an echo number (1, 2...)")
        uniform = False
        if "uniform" in m:
            if isinstance(m["uniform"], bool):
                uniform = m["uniform"]
            else:
                self.err(self.value_pos(m, "uniform"), "'uniform' must be true or false")
        prefer: tuple[str, ...] = ()
        if "prefer" in m:
            p = m["prefer"]
            items = [p] if isinstance(p, str) else p
            if not isinstance(items, list) or not all(isinstance(i, str) for i in items):
                self.err(self.value_pos(m, "prefer"), "'prefer' must be a list of orders")
                items = []
            for i in items:
                if i not in VOLUME_PREFERENCES:
                    self.err(
                        self.value_pos(m, "prefer"),
                        f"unknown volume order '{i}'{hint(i, VOLUME_PREFERENCES)} "
                        f"(one of {', '.join(VOLUME_PREFERENCES)})",
                    )
            prefer = tuple(items)
        partial = False
        if "partial" in m:
            if m["partial"] in ("allow", "refuse"):
                partial = m["partial"] == "allow"
            else:
                self.err(self.value_pos(m, "partial"), "'partial' must be 'allow' or 'refuse'")
        return VolumeSelect(
            orientation=orientation,
            echo=echo,
            uniform=uniform,
            prefer=prefer,
            partial=partial,
            position=pos,
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


#: Largest rule text accepted (a rule file is written by hand; this bounds parsing work).
MAX_TEXT_BYTES = 1 << 20


def _read_yaml(text: str, source: str) -> Any:
    """Parse YAML text; aliases (``*name``) are refused so that the size of what is evaluated
    is the size of what is written (no "billion laughs" expansion)."""
    if len(text.encode("utf-8", "replace")) > MAX_TEXT_BYTES:
        raise RuleError([Problem(source, 1, 1, f"rule file larger than {MAX_TEXT_BYTES} bytes")])
    yaml = YAML(typ="rt")
    yaml.allow_duplicate_keys = False
    try:
        for event in yaml.parse(text):
            if isinstance(event, AliasEvent):
                mark = event.start_mark
                raise RuleError(
                    [
                        Problem(
                            source,
                            mark.line + 1,
                            mark.column + 1,
                            f"YAML aliases (*{event.anchor}) are not supported; use 'aliases:' "
                            "for shared value lists",
                        )
                    ]
                )
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
    sources: set[str] | None = None,
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
    sources:
        When given, ``priors.from`` must name one of them (the config's pull sources).

    Raises
    ------
    RuleError
        With every problem found.
    """
    data = _read_yaml(text, source)
    p = _Parser(source, models, destinations)
    p.sources = sources
    ruleset = p.document(data)
    if p.problems or ruleset is None:
        raise RuleError(p.problems or [Problem(source, 1, 1, "empty rule file")])
    return ruleset


def load(
    path_or_text: str | Path,
    *,
    models: set[str] | None = None,
    destinations: set[str] | None = None,
    sources: set[str] | None = None,
) -> RuleSet:
    """Load a rule file (a ``Path``, or a ``str`` naming an existing file) or rule text.

    A ``str`` containing a newline is always text.  A one-line ``str`` is a file name if such a
    file exists or if it has no ``:`` (a one-line rule text always has one), else text.

    Raises
    ------
    RuleError
        With every problem found (including a file that cannot be read).
    """
    if isinstance(path_or_text, Path) or (
        "\n" not in path_or_text and (":" not in path_or_text or Path(path_or_text).is_file())
    ):
        path = Path(path_or_text)
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise RuleError([Problem(str(path), 1, 1, f"cannot read rule file: {exc}")]) from None
        return parse(
            text, source=str(path), models=models, destinations=destinations, sources=sources
        )
    return parse(path_or_text, models=models, destinations=destinations, sources=sources)
