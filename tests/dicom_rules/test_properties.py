"""Hypothesis properties of the rule language and the router."""

from __future__ import annotations

import random
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import dicom_rules
from dicom_rules import (
    Action,
    AllOf,
    AnyOf,
    AttributePath,
    Compare,
    Defaults,
    Not,
    Op,
    Preference,
    Priors,
    PrivateTag,
    Rule,
    RuleKind,
    RuleSet,
    Scope,
    Select,
    SeriesInput,
    Status,
    WorkitemRequest,
)
from dicom_rules.paths import parse_path

SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# ------------------------------------------------------------------ rule strategies
TEXT_PATHS = [
    parse_path(p)
    for p in (
        "Modality",
        "BodyPartExamined",
        "SeriesDescription",
        "ImageType",
        "ConvolutionKernel",
        "body_part",
        "AnatomicRegionSequence.CodeMeaning",
        "0019[GEMS_ACQU_01]0C",
        "0009,1001",
    )
]
NUM_PATHS = [
    parse_path(p)
    for p in ("SliceThickness", "instance_count", "InstanceNumber", "0019[GEMS_ACQU_01]0C")
]
ALL_PATHS = TEXT_PATHS + NUM_PATHS + [parse_path("orientation")]

words = st.text(
    alphabet=st.characters(categories=("L", "N", "P", "Zs"), exclude_characters="\x85\u2028\u2029"),
    min_size=0,
    max_size=12,
)
nonempty = words.filter(lambda s: bool(s.strip()))
numbers = st.one_of(st.integers(-10_000, 10_000), st.floats(-1e6, 1e6, allow_nan=False))
scalars = st.one_of(words, numbers)
regexes = st.sampled_from(["CT", "B[0-9]+f", ".*LUNG.*", "(AX|COR)IAL", "a|b|c", "[A-Z]{2,4}"])


@st.composite
def compares(draw: st.DrawFn) -> Compare:
    op = draw(st.sampled_from(list(Op)))
    case = draw(st.booleans())
    if op in (Op.LT, Op.LE, Op.GT, Op.GE):
        return Compare(draw(st.sampled_from(NUM_PATHS)), op, draw(numbers), case)
    if op is Op.BETWEEN:
        a, b = sorted([draw(numbers), draw(numbers)])
        return Compare(draw(st.sampled_from(NUM_PATHS)), op, (a, b), case)
    path = draw(st.sampled_from(TEXT_PATHS))
    if op in (Op.EXISTS, Op.MISSING):
        return Compare(draw(st.sampled_from(ALL_PATHS)), op, draw(st.booleans()), case)
    if op in (Op.IN, Op.NOT_IN):
        return Compare(path, op, tuple(draw(st.lists(scalars, min_size=1, max_size=4))), case)
    if op is Op.EQUALS:
        return Compare(path, op, draw(scalars), case)
    if op is Op.MATCHES:
        return Compare(path, op, draw(regexes), case)
    return Compare(path, op, draw(words), case)


conditions = st.recursive(
    compares(),
    lambda inner: st.one_of(
        st.builds(lambda xs: AllOf(tuple(xs)), st.lists(inner, max_size=3)),
        st.builds(lambda xs: AnyOf(tuple(xs)), st.lists(inner, max_size=3)),
        st.builds(Not, inner),
    ),
    max_leaves=8,
)

param_values = st.one_of(scalars, st.booleans(), st.lists(scalars, max_size=3))


short = st.text(
    alphabet=st.characters(min_codepoint=33, max_codepoint=126, exclude_characters="\\"),
    min_size=1,
    max_size=16,
)


@st.composite
def workitems(draw: st.DrawFn) -> WorkitemRequest:
    return WorkitemRequest(
        code=draw(short),
        meaning=draw(st.one_of(st.none(), short)),
        scheme=draw(st.sampled_from(["99AINODE", "DCM", "99LOCAL"])),
        station=draw(st.one_of(st.none(), short)),
        priority=draw(st.sampled_from(["HIGH", "MEDIUM", "LOW"])),
    )


@st.composite
def actions(draw: st.DrawFn) -> tuple[Action, ...]:
    if draw(st.integers(0, 5)) == 0:
        return (Action(ignore=True),)
    out = []
    for _ in range(draw(st.integers(1, 3))):
        model = draw(st.one_of(st.none(), nonempty))
        send_to = draw(nonempty) if model is None else draw(st.one_of(st.none(), nonempty))
        params = draw(st.dictionaries(nonempty, param_values, max_size=3)) if model else {}
        deliver = draw(st.one_of(st.none(), st.lists(nonempty, max_size=3).map(tuple)))
        workitem = draw(st.one_of(st.none(), workitems()))
        out.append(
            Action(
                model=model, parameters=params, deliver=deliver, send_to=send_to, workitem=workitem
            )
        )
    return tuple(out)


@st.composite
def selects(draw: st.DrawFn) -> Select:
    prefer = []
    for _ in range(draw(st.integers(0, 3))):
        kind = draw(st.sampled_from(["lowest", "highest", "matching"]))
        if kind == "matching":
            prefer.append(Preference(kind, condition=draw(conditions)))
        else:
            prefer.append(Preference(kind, path=draw(st.sampled_from(NUM_PATHS))))
    count = draw(st.one_of(st.none(), st.integers(1, 3)))
    return Select(where=draw(st.one_of(st.none(), conditions)), prefer=tuple(prefer), count=count)


@st.composite
def priors_of(draw: st.DrawFn, acts: tuple[Action, ...]) -> Priors | None:
    """A rule's priors (only on a rule with a model action, as the parser requires)."""
    if not any(a.model is not None for a in acts) or draw(st.booleans()):
        return None
    return Priors(
        source=draw(nonempty),
        max=draw(st.integers(1, 10)),
        within_days=draw(st.one_of(st.none(), st.integers(1, 36500))),
        match=draw(st.one_of(st.none(), conditions)),
    )


@st.composite
def rule_lists(draw: st.DrawFn, max_size: int = 6) -> tuple[Rule, ...]:
    names = draw(st.lists(nonempty, min_size=1, max_size=max_size, unique_by=str.strip))
    rules = []
    for name in names:
        scope = draw(st.sampled_from(list(Scope)))
        acts = draw(actions())
        rules.append(
            Rule(
                name=name,
                actions=acts,
                when=draw(conditions),  # always a condition: no catch-all 'stop' problems
                description=draw(st.one_of(st.none(), words)),
                priority=draw(st.integers(-3, 3)),
                scope=scope,
                select=draw(st.one_of(st.none(), selects())) if scope is Scope.STUDY else None,
                stop=draw(st.booleans()),
                kind=draw(st.sampled_from(list(RuleKind))),
                priors=draw(priors_of(acts)),
            )
        )
    return tuple(rules)


@st.composite
def rulesets(draw: st.DrawFn) -> RuleSet:
    defaults = Defaults(
        deliver=draw(st.one_of(st.none(), st.lists(nonempty, max_size=2).map(tuple))),
        priority=draw(st.integers(-3, 3)),
        scope=draw(st.sampled_from(list(Scope))),
    )
    aliases = draw(
        st.dictionaries(
            st.from_regex(r"[a-z][a-z0-9_]{0,8}", fullmatch=True),
            st.lists(scalars, min_size=1, max_size=3).map(tuple),
            max_size=2,
        )
    )
    rules = list(draw(rule_lists()))
    if aliases:  # one condition that uses an alias
        name, values = next(iter(aliases.items()))
        r = rules[0]
        rules[0] = Rule(
            **{
                **{f: getattr(r, f) for f in r.__dataclass_fields__},
                "when": Compare(parse_path("Modality"), Op.IN, values, alias=name),
            }
        )
    body_parts = draw(
        st.dictionaries(
            st.sampled_from(["CHEST", "LUNG", "KNEE"]),
            st.lists(nonempty, max_size=2).map(tuple),
            max_size=2,
        )
    )
    return RuleSet(rules=tuple(rules), defaults=defaults, aliases=aliases, body_parts=body_parts)


# ------------------------------------------------------------------ header strategies
TAGS = [
    "00080060",
    "00180015",
    "0008103E",
    "00080008",
    "00181210",
    "00180050",
    "00200013",
    "00082218",
    "52009229",
    "00190010",
    "0019100C",
    "00090010",
    "00091001",
    "00200037",
    "00081030",
    "00181030",
    "00100010",
    "7FE00010",
]
VRS = ["CS", "LO", "DS", "IS", "SQ", "PN", "UN", "OB", "FD", "US", "XX", ""]
odd_values = st.one_of(
    scalars,
    st.booleans(),
    st.none(),
    st.just({}),
    st.just({"Alphabetic": 3}),
    st.just({"Alphabetic": "Doe^J"}),
    st.just([1, [2]]),
    st.just(float("nan")),
    st.just(float("inf")),
    st.text(max_size=300),
    st.just("GEMS_ACQU_01"),
)


def headers(depth: int = 2) -> st.SearchStrategy[Any]:
    items = (
        odd_values if depth == 0 else st.one_of(odd_values, st.deferred(lambda: headers(depth - 1)))
    )
    element = st.one_of(
        st.fixed_dictionaries({"vr": st.sampled_from(VRS)}),
        st.fixed_dictionaries({"vr": st.sampled_from(VRS), "Value": st.lists(items, max_size=4)}),
        st.fixed_dictionaries({"vr": st.sampled_from(VRS), "Value": items}),
        st.fixed_dictionaries({"vr": st.just("OB"), "InlineBinary": st.just("AAAA")}),
        odd_values,
    )
    key = st.one_of(
        st.sampled_from(TAGS), st.text(max_size=10), st.sampled_from([s.lower() for s in TAGS])
    )
    return st.dictionaries(key, element, max_size=10)


any_header = st.one_of(
    headers(), st.none(), st.integers(), st.text(max_size=5), st.lists(st.integers())
)
series_inputs = st.builds(
    SeriesInput,
    series_uid=st.one_of(st.from_regex(r"1\.2\.[0-9]{1,3}", fullmatch=True), st.text(max_size=5)),
    header=any_header,
    instance_count=st.integers(0, 500),
)


def holds(cond: Any, header: Any, count: int = 1) -> bool:
    rs = RuleSet(rules=(Rule(name="r", actions=(Action(model="m"),), when=cond),))
    v = dicom_rules.explain(rs, [SeriesInput("1", header, count)]).series[0].verdict("r")
    assert v.reason
    return v.status is Status.MATCHED


# ------------------------------------------------------------------ properties
@SETTINGS
@given(rulesets())
def test_parse_render_round_trip(rs: RuleSet) -> None:
    text = dicom_rules.render(rs)
    assert dicom_rules.parse(text) == rs
    assert dicom_rules.render(dicom_rules.parse(text)) == text


@SETTINGS
@given(conditions, headers(), st.integers(0, 300))
def test_not_inverts(cond: Any, header: Any, count: int) -> None:
    assert holds(Not(cond), header, count) is (not holds(cond, header, count))


@SETTINGS
@given(conditions, headers())
def test_any_or_all_of_one_is_that_one(cond: Any, header: Any) -> None:
    expected = holds(cond, header)
    assert holds(AnyOf((cond,)), header) is expected
    assert holds(AllOf((cond,)), header) is expected


@SETTINGS
@given(conditions, conditions, headers())
def test_any_all_are_or_and(a: Any, b: Any, header: Any) -> None:
    assert holds(AnyOf((a, b)), header) is (holds(a, header) or holds(b, header))
    assert holds(AllOf((a, b)), header) is (holds(a, header) and holds(b, header))


@SETTINGS
@given(rulesets(), st.lists(series_inputs, max_size=5))
def test_route_never_raises_and_explains_every_rule(rs: RuleSet, study: list[SeriesInput]) -> None:
    expl = dicom_rules.explain(rs, study)
    assert len(expl.series) == len(study)
    names = {r.name for r in rs.rules}
    for s in expl.series:
        assert {v.rule for v in s.verdicts} == names
        assert all(v.reason for v in s.verdicts)
    assert expl.to_json()  # serialisable parts build without error
    decisions = dicom_rules.route(rs, study)
    assert decisions == list(expl.decisions)


@SETTINGS
@given(rulesets(), st.lists(series_inputs, max_size=5), st.randoms(use_true_random=False))
def test_routing_is_deterministic_and_order_independent(
    rs: RuleSet, study: list[SeriesInput], rnd: random.Random
) -> None:
    first = dicom_rules.route(rs, study)
    assert dicom_rules.route(rs, study) == first
    shuffled_rules = list(rs.rules)
    rnd.shuffle(shuffled_rules)
    other = RuleSet(
        rules=tuple(shuffled_rules),
        defaults=rs.defaults,
        aliases=rs.aliases,
        body_parts=rs.body_parts,
    )
    shuffled_study = list(study)
    rnd.shuffle(shuffled_study)
    assert dicom_rules.route(other, shuffled_study) == first


@SETTINGS
@given(st.lists(series_inputs, min_size=1, max_size=4))
def test_example_rules_never_raise(study: list[SeriesInput]) -> None:
    from tests.dicom_rules.test_parse import EXAMPLE

    rs = dicom_rules.load(EXAMPLE)
    expl = dicom_rules.explain(rs, study)
    # the example has a fallback: every series is acted on (model, ignore or fallback)
    assert all(s.outcome != "no rule acted on this series" for s in expl.series)


@SETTINGS
@given(
    st.lists(st.sampled_from(["0019", "0009", "0011"]), min_size=1),
    st.from_regex(r"[A-Z][A-Z0-9_ ]{0,14}[A-Z0-9]", fullmatch=True),
    st.integers(0, 255),
)
def test_private_paths_round_trip(groups: list[str], creator: str, element: int) -> None:
    path = AttributePath(segments=tuple(PrivateTag(int(g, 16), creator, element) for g in groups))
    assert parse_path(str(path)) == path
