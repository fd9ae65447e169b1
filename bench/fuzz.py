"""Long fuzzing runs of the ingest header parse, the rule and config parsers and STOW-RS.

The targets and properties are those of the bounded CI run (tests/security/fuzzing.py): accept,
or refuse with the documented error type (FILE:LINE:COL positions for rules and config); STOW-RS
never answers 5xx.  Engines:

* ``atheris`` (coverage-guided libFuzzer; ``pip install atheris``, wheels exist for CPython 3.11):
  header, rules and config, each in its own process for ``--seconds``; a crash stops that target
  and leaves the input as ``crash-*`` in the working directory;
* ``hypothesis`` (always available): ``--examples`` random mutations per target, no derandomising,
  and the STOW target against a real ``ainode serve``.

Prints per target: engine, executions, executions per second, failures.

Run:  PYTHONPATH=. python bench/fuzz.py [--engine auto|atheris|hypothesis] [--seconds 60]
      [--examples 5000] [--targets header,rules,config,stow]
"""

from __future__ import annotations

import argparse
import contextlib
import inspect
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.security import fuzzing  # noqa: E402

_TEXT_TARGETS = {"rules": fuzzing.check_rules, "config": fuzzing.check_config}


def _atheris_child(target: str, seconds: int) -> None:
    """Runs inside the child process: libFuzzer loop over one target."""
    import atheris

    # coverage feedback from our own parsers (already imported via tests.security.fuzzing)
    import dicom_rules.parse
    import node.config
    import node.ingest.header

    for module in (dicom_rules.parse, node.config, node.ingest.header):
        for name, obj in vars(module).copy().items():
            if inspect.isfunction(obj) and obj.__module__ == module.__name__:
                with contextlib.suppress(Exception):  # some callables cannot be instrumented
                    setattr(module, name, atheris.instrument_func(obj))
    seeds = fuzzing.dicom_seeds()

    def one_input(data: bytes) -> None:
        if target == "header":
            # start from a valid file half of the time so the fuzzer gets past the preamble
            if data[:1] and data[0] & 1:
                seed = seeds[data[0] % len(seeds)]
                data = seed[: len(seed) // 2] + data[1:] + seed[len(seed) // 2 + len(data) :]
            fuzzing.check_header(data)
        else:
            fdp = atheris.FuzzedDataProvider(data)
            doc = fuzzing.RULES_SEED if target == "rules" else fuzzing.CONFIG_SEED
            cut = fdp.ConsumeIntInRange(0, len(doc))
            text = doc[:cut] + fdp.ConsumeUnicodeNoSurrogates(64) + doc[cut:]
            _TEXT_TARGETS[target](text)

    warnings.simplefilter("ignore")
    atheris.Setup(
        [sys.argv[0], f"-max_total_time={seconds}", "-print_final_stats=1"],
        one_input,
    )
    atheris.Fuzz()


def _run_atheris(target: str, seconds: int) -> tuple[str, int, float, int]:
    start = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, __file__, "--atheris-child", target, "--seconds", str(seconds)],
        capture_output=True,
        text=True,
        check=False,
    )
    elapsed = time.perf_counter() - start
    runs = 0
    for line in proc.stderr.splitlines():
        if "stat::number_of_executed_units:" in line:
            runs = int(line.split(":")[-1])
    failures = 0 if proc.returncode == 0 else 1
    if failures:
        print(proc.stderr[-3000:], file=sys.stderr)
    return "atheris", runs, elapsed, failures


def _run_hypothesis(target: str, examples: int) -> tuple[str, int, float, int]:
    from hypothesis import HealthCheck, given, settings

    strategy = {
        "header": fuzzing.mutated(fuzzing.dicom_seeds()),
        "rules": fuzzing.mutated_text(fuzzing.RULES_SEED),
        "config": fuzzing.mutated_text(fuzzing.CONFIG_SEED),
    }[target]
    check = {"header": fuzzing.check_header, **_TEXT_TARGETS}[target]
    count = 0

    @settings(max_examples=examples, deadline=None, suppress_health_check=list(HealthCheck))
    @given(strategy)
    def run(value: object) -> None:
        nonlocal count
        count += 1
        check(value)  # type: ignore[operator]

    start = time.perf_counter()
    failures = 0
    try:
        run()
    except Exception as exc:  # noqa: BLE001 - report, then go on with the next target
        failures = 1
        print(f"{target}: {type(exc).__name__}: {exc}", file=sys.stderr)
    return "hypothesis", count, time.perf_counter() - start, failures


def _run_stow(examples: int) -> tuple[str, int, float, int]:
    import httpx
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st

    from tests.api.conftest import BOUNDARY, multipart
    from tests.peers.node import start_node

    good, _ = multipart(fuzzing.dicom_seeds()[:2])
    bodies = fuzzing.mutated([good, good.replace(b"\r\n", b"\n")])
    ctype = f'multipart/related; type="application/dicom"; boundary="{BOUNDARY}"'
    count = 0
    failures = 0
    with tempfile.TemporaryDirectory() as tmp, start_node(Path(tmp)) as node:

        @settings(max_examples=examples, deadline=None, suppress_health_check=list(HealthCheck))
        @given(bodies, st.booleans())
        def run(body: bytes, chunked: bool) -> None:
            nonlocal count
            count += 1
            content = iter([body]) if chunked else body
            resp = httpx.post(
                f"{node.url}/dicom-web/studies",
                content=content,
                headers={"Content-Type": ctype},
                timeout=60,
            )
            assert resp.status_code < 500, (resp.status_code, resp.text[:300])

        start = time.perf_counter()
        try:
            run()
        except Exception as exc:  # noqa: BLE001
            failures = 1
            print(f"stow: {type(exc).__name__}: {exc}", file=sys.stderr)
            errors = [ln for ln in node.log_text().splitlines() if '"level": "error"' in ln]
            print("\n".join(errors[-5:]), file=sys.stderr)
        elapsed = time.perf_counter() - start
        if node.proc is None or node.proc.poll() is not None:
            failures += 1
            print("stow: the node died", file=sys.stderr)
    return "hypothesis", count, elapsed, failures


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--engine", choices=["auto", "atheris", "hypothesis"], default="auto")
    ap.add_argument("--seconds", type=int, default=60, help="per target, atheris")
    ap.add_argument("--examples", type=int, default=5000, help="per target, hypothesis")
    ap.add_argument("--targets", default="header,rules,config,stow")
    ap.add_argument("--atheris-child", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.atheris_child:
        _atheris_child(args.atheris_child, args.seconds)
        return 0
    engine = args.engine
    if engine == "auto":
        try:
            import atheris  # noqa: F401

            engine = "atheris"
        except ImportError:
            engine = "hypothesis"
    total_failures = 0
    print(f"{'target':8s} {'engine':10s} {'runs':>9s} {'runs/s':>9s} {'failures':>8s}")
    for target in args.targets.split(","):
        if target == "stow":
            result = _run_stow(min(args.examples, 2000))
        elif engine == "atheris":
            result = _run_atheris(target, args.seconds)
        else:
            result = _run_hypothesis(target, args.examples)
        name, runs, elapsed, failures = result
        total_failures += failures
        rate = runs / elapsed if elapsed else 0.0
        print(f"{target:8s} {name:10s} {runs:9d} {rate:9.1f} {failures:8d}", flush=True)
    return 1 if total_failures else 0


if __name__ == "__main__":
    raise SystemExit(main())
