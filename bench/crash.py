"""Long fault run: many ``kill -9``s of a real node across ingest, inference and delivery.

The same scenario and checks as ``tests/e2e/test_crash.py`` (which runs 21 kills in CI), with
more studies and more kill points: every acknowledged instance stored and unchanged, every job
succeeded exactly once on its final inputs, every result delivered exactly once.  Prints the
kills, the wall time and the outcome; a lost or duplicated object raises AssertionError.

Usage: ``PYTHONPATH=. python bench/crash.py [--rounds 3] [--studies 8]``: each round is
``--ingest`` + ``--inference`` + ``--delivery`` + ``--anywhere`` kills on a fresh node.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.e2e.test_crash import run_crash_test  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--studies", type=int, default=8)
    ap.add_argument("--ingest", type=int, default=12)
    ap.add_argument("--inference", type=int, default=10)
    ap.add_argument("--delivery", type=int, default=6)
    ap.add_argument("--anywhere", type=int, default=4)
    args = ap.parse_args()
    total: Counter[str] = Counter()
    t0 = time.monotonic()
    for r in range(args.rounds):
        work = Path(tempfile.mkdtemp(prefix=f"bench-crash-{r}-"))
        t = time.monotonic()
        kills = run_crash_test(
            work,
            ingest=args.ingest,
            inference=args.inference,
            delivery=min(args.delivery, args.studies),
            anywhere=args.anywhere,
            studies=args.studies,
            seed=20261125 + r,
        )
        total.update(kills)
        print(
            f"round {r + 1}: {len(kills)} kills {dict(Counter(kills))} in "
            f"{time.monotonic() - t:.0f} s: nothing lost, nothing duplicated"
        )
    print(
        f"{sum(total.values())} kills over {args.rounds} rounds ({dict(total)}) in "
        f"{time.monotonic() - t0:.0f} s: 0 acknowledged instances lost, 0 results lost, "
        "0 duplicate jobs, 0 duplicate deliveries"
    )


if __name__ == "__main__":
    main()
