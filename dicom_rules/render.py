"""Writing a ``RuleSet`` back as YAML, such that ``parse(render(rules)) == rules``.

The output is canonical: long-form operators, canonical attribute spellings (keywords where the
dictionary has one), explicit priority and scope on every rule.
"""

from __future__ import annotations

import io
from typing import Any

from ruamel.yaml import YAML

from dicom_rules.model import (
    Action,
    AllOf,
    AnyOf,
    Compare,
    Condition,
    Not,
    RuleKind,
    RuleSet,
    Select,
)
from dicom_rules.paths import format_path

__all__ = ["condition_data", "render", "to_data"]


def _cond(c: Condition) -> dict[str, Any]:
    if isinstance(c, AllOf):
        return {"all": [_cond(i) for i in c.items]}
    if isinstance(c, AnyOf):
        return {"any": [_cond(i) for i in c.items]}
    if isinstance(c, Not):
        return {"not": _cond(c.item)}
    return _compare(c)


def condition_data(c: Condition) -> dict[str, Any]:
    """A condition as rule-file data (long-form operators)."""
    return _cond(c)


def _compare(c: Compare) -> dict[str, Any]:
    value: Any
    if c.alias is not None:
        value = f"${c.alias}"
    elif isinstance(c.value, tuple):
        value = list(c.value)
    else:
        value = c.value
    ops: dict[str, Any] = {str(c.op): value}
    if c.case_sensitive:
        ops["case_sensitive"] = True
    return {format_path(c.path): ops}


def _action(a: Action) -> dict[str, Any]:
    if a.ignore:
        return {"ignore": True}
    out: dict[str, Any] = {}
    if a.model is not None:
        out["model"] = a.model
        if a.parameters:
            out["parameters"] = dict(a.parameters)
    if a.deliver is not None:
        out["deliver"] = list(a.deliver)
    if a.send_to is not None:
        out["send_to"] = a.send_to
    if a.workitem is not None:
        w = a.workitem
        item: dict[str, Any] = {"code": w.code}
        if w.meaning is not None:
            item["meaning"] = w.meaning
        if w.scheme != "99AINODE":
            item["scheme"] = w.scheme
        if w.station is not None:
            item["station"] = w.station
        if w.priority != "MEDIUM":
            item["priority"] = w.priority
        out["workitem"] = item
    return out


def _select(s: Select) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if s.where is not None:
        out["where"] = _cond(s.where)
    if s.prefer:
        prefs: list[dict[str, Any]] = []
        for p in s.prefer:
            if p.kind == "matching":
                assert p.condition is not None
                prefs.append({"matching": _cond(p.condition)})
            else:
                assert p.path is not None
                prefs.append({p.kind: format_path(p.path)})
        out["prefer"] = prefs
    if s.where is not None or s.prefer or s.count is not None:
        out["count"] = "all" if s.count is None else s.count
    if s.volume is not None:
        v = s.volume
        vol: dict[str, Any] = {}
        if v.orientation:
            vol["orientation"] = list(v.orientation)
        if v.echo is not None:
            vol["echo"] = v.echo
        if v.uniform:
            vol["uniform"] = True
        if v.prefer:
            vol["prefer"] = list(v.prefer)
        if v.partial:
            vol["partial"] = "allow"
        out["volume"] = vol
    return out


def to_data(ruleset: RuleSet) -> dict[str, Any]:
    """The rule set as plain YAML-ready data."""
    data: dict[str, Any] = {"version": ruleset.version}
    d = ruleset.defaults
    defaults: dict[str, Any] = {"priority": d.priority, "scope": str(d.scope)}
    if d.deliver is not None:
        defaults["deliver"] = list(d.deliver)
    data["defaults"] = defaults
    if ruleset.aliases:
        data["aliases"] = {k: list(v) for k, v in ruleset.aliases.items()}
    if ruleset.body_parts:
        data["body_parts"] = {k: list(v) for k, v in ruleset.body_parts.items()}
    rules = []
    for r in ruleset.rules:
        out: dict[str, Any] = {"name": r.name}
        if r.description is not None:
            out["description"] = r.description
        if r.kind is RuleKind.FALLBACK:
            out["type"] = "fallback"
        out["priority"] = r.priority
        out["scope"] = str(r.scope)
        if r.when is not None:
            out["when"] = _cond(r.when)
        if r.select is not None:
            out["select"] = _select(r.select)
        if len(r.actions) == 1 and r.actions[0].ignore:
            out["then"] = "ignore"
        else:
            out["then"] = [_action(a) for a in r.actions]
        if r.stop:
            out["stop"] = True
        if r.results is not None:
            res: dict[str, Any] = {}
            if r.results.combine is not None:
                res["combine"] = r.results.combine
            if r.results.prefer:
                res["prefer"] = list(r.results.prefer)
            out["results"] = res
        if r.priors is not None:
            pr: dict[str, Any] = {"from": r.priors.source, "max": r.priors.max}
            if r.priors.within_days is not None:
                pr["within_days"] = r.priors.within_days
            if r.priors.match is not None:
                pr["match"] = _cond(r.priors.match)
            out["priors"] = pr
        rules.append(out)
    data["rules"] = rules
    return data


def render(ruleset: RuleSet) -> str:
    """The rule set as YAML text (``parse(render(r)) == r``)."""
    yaml = YAML(typ="safe", pure=True)
    yaml.default_flow_style = False
    yaml.sort_base_mapping_type_on_output = False  # type: ignore[assignment]
    yaml.width = 4096
    buf = io.StringIO()
    yaml.dump(to_data(ruleset), buf)
    return buf.getvalue()
