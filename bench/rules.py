"""Benchmark: series x rule evaluations per second of dicom_rules on the corpus headers.

200 generated rules (equals / in / matches / contains / numeric / nested / private / body_part,
under all / any / not) x every readable header of tests/corpus.  Three figures:

* ``route``   - RuleSet.route with the full explanation (what the node runs per study;
  reasons are formatted lazily), and the same plus ``to_json()`` (every reason formatted);
* ``match``   - the compiled conditions alone (no explanation objects);
* ``python``  - reference: the same conditions hand-written as Python predicates on the same
  DICOM JSON (what a rule-as-Python-code router would run), for the ratio.

Run:  PYTHONPATH=. python bench/rules.py [--rules 200] [--seconds 3]
"""

from __future__ import annotations

import argparse
import contextlib
import random
import re
import sys
import time
import warnings
from pathlib import Path
from typing import Any

import dicom_rules

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from dicom_rules import SeriesInput  # noqa: E402
from node.imaging.dicom_json import header_from_file  # noqa: E402

CORPUS = ROOT / "tests" / "corpus"
MODALITIES = ["CT", "MR", "CR", "DX", "PT", "US", "NM", "XA", "SR", "SEG", "MG", "OT"]
PARTS = ["CHEST", "HEAD", "ABDOMEN", "BRAIN", "PELVIS", "LSPINE", "KNEE", "WHOLEBODY"]


def make_rules(n: int, seed: int = 4) -> tuple[str, list[Any]]:
    """n rules as YAML, plus the equivalent Python predicates (the reference)."""
    rnd = random.Random(seed)
    lines = ["version: 1", "rules:"]
    preds: list[Any] = []

    def val(h: dict[str, Any], tag: str) -> list[Any]:
        e = h.get(tag)
        return e.get("Value", []) if isinstance(e, dict) else []

    for i in range(n):
        kind = i % 8
        m = rnd.choice(MODALITIES)
        p = rnd.choice(PARTS)
        t = round(rnd.uniform(0.5, 6), 1)
        if kind == 0:
            cond = f"{{Modality: {{equals: {m}}}}}"
            preds.append(
                lambda h, m=m: any(str(v).strip().upper() == m for v in val(h, "00080060"))
            )
        elif kind == 1:
            ms = rnd.sample(MODALITIES, 3)
            mods = ", ".join(ms)
            cond = f"{{all: [{{Modality: {{in: [{mods}]}}}}, {{body_part: {{equals: {p}}}}}]}}"
            preds.append(
                lambda h, ms=ms, p=p: (
                    any(str(v).upper() in ms for v in val(h, "00080060"))
                    and any(str(v).upper() == p for v in val(h, "00180015"))
                )
            )
        elif kind == 2:
            cond = "{ConvolutionKernel: {matches: 'B[3-7]0[fs]'}}"
            rx = re.compile("B[3-7]0[fs]", re.I)
            preds.append(lambda h, rx=rx: any(rx.fullmatch(str(v)) for v in val(h, "00181210")))
        elif kind == 3:
            cond = f"{{all: [{{Modality: {m}}}, {{SliceThickness: {{le: {t}}}}}]}}"
            preds.append(
                lambda h, m=m, t=t: (
                    any(str(v) == m for v in val(h, "00080060"))
                    and any(float(v) <= t for v in val(h, "00180050"))
                )
            )
        elif kind == 4:
            cond = f"{{SeriesDescription: {{contains: {p.lower()}}}}}"
            preds.append(
                lambda h, p=p: any(p.lower() in str(v).lower() for v in val(h, "0008103E"))
            )
        elif kind == 5:
            cond = (
                "{any: [{ImageType: {in: [LOCALIZER]}}, "
                f"{{not: {{Modality: {{in: [{m}, SR]}}}}}}]}}"
            )
            preds.append(
                lambda h, m=m: (
                    "LOCALIZER" in [str(v) for v in val(h, "00080008")]
                    or not any(str(v) in (m, "SR") for v in val(h, "00080060"))
                )
            )
        elif kind == 6:
            cond = (
                "{SharedFunctionalGroupsSequence.FrameAnatomySequence.AnatomicRegionSequence."
                f"CodeMeaning: {{equals: {p.lower()}}}}}"
            )
            preds.append(
                lambda h, p=p: any(
                    str(c.get("00080104", {}).get("Value", [""])[0]).lower() == p.lower()
                    for s in val(h, "52009229")
                    for f in s.get("00209071", {}).get("Value", [])
                    for c in f.get("00082218", {}).get("Value", [])
                )
            )
        else:
            cond = f"{{'0019[GEMS_ACQU_01]0C': {{exists: true}}, instance_count: {{ge: {i % 40}}}}}"
            preds.append(lambda h: "0019100C" in h)
        lines.append(
            f"  - {{name: r{i:03d}, priority: {i % 7}, when: {cond}, then: {{model: m{i % 6}}}}}"
        )
    return "\n".join(lines) + "\n", preds


def corpus_headers() -> list[SeriesInput]:
    out = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for p in sorted(CORPUS.rglob("*")):
            if not p.is_file() or p.suffix in (".md", ".csv", ".txt"):
                continue
            try:
                out.append(SeriesInput(p.name, header_from_file(p), 1))
            except Exception:
                continue
    return out


def rate(fn: Any, evals_per_call: int, seconds: float) -> float:
    """Evaluations per CPU second (process time: the machine is shared, wall time is noisy)."""
    fn()  # warm caches (compiled plan, body-part table)
    calls = 0
    start = time.process_time()
    while True:
        fn()
        calls += 1
        elapsed = time.process_time() - start
        if elapsed >= seconds:
            return calls * evals_per_call / elapsed


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rules", type=int, default=200)
    ap.add_argument("--seconds", type=float, default=3.0)
    args = ap.parse_args()
    text, preds = make_rules(args.rules)
    rules = dicom_rules.parse(text)
    series = corpus_headers()
    n = len(series) * len(rules.rules)
    print(f"{len(rules.rules)} rules x {len(series)} corpus headers = {n} series·rule evaluations")

    # one study per header: the node routes study by study
    studies = [[s] for s in series]

    def route() -> None:
        for st in studies:
            dicom_rules.route(rules, st)

    def route_json() -> None:
        for st in studies:
            dicom_rules.explain(rules, st).to_json()

    plan = rules._compiled()
    from dicom_rules.conditions import Context

    whens = [cr.when for lv in plan.levels + plan.fallback_levels for cr in lv]

    def match() -> None:
        for s in series:
            ctx = Context(0, s.series_uid, s.header, 1, len(plan._paths), plan.table)
            for w in whens:
                w.test(ctx)

    def python() -> None:
        for s in series:
            h = s.header
            for pr in preds:
                with contextlib.suppress(ValueError, TypeError, AttributeError, IndexError):
                    pr(h)

    r_route = rate(route, n, args.seconds)
    r_json = rate(route_json, n, args.seconds)
    r_match = rate(match, n, args.seconds)
    r_py = rate(python, n, args.seconds)
    print("rates are per CPU second of this process (one core)")
    print(f"route (with explanation): {r_route:12,.0f} evaluations/s")
    print(f"route + explanation JSON: {r_json:12,.0f} evaluations/s (every reason formatted)")
    print(f"match (conditions only):  {r_match:12,.0f} evaluations/s")
    print(f"python predicates (ref):  {r_py:12,.0f} evaluations/s")
    print(f"ratio route/python = {r_route / r_py:.2f}, match/python = {r_match / r_py:.2f}")
    print(f"target >= 50,000/s for route: {'met' if r_route >= 50_000 else 'NOT met'}")


if __name__ == "__main__":
    main()
