"""Benchmark: queueing a 300-instance study in the outbox, from paths vs from typed objects.

* ``Outbox.enqueue_many(paths)`` reads every file with pydicom for its UIDs and transfer syntax
  (what ``Node`` did for forwarded originals and for every result object before issue 17);
* ``Outbox.enqueue_instances(instances)`` takes the ``Instance``s ingest made, reading nothing
  (``enqueue_results`` takes the pipeline's ``ResultObject``s the same way).

Both queue the same series to one folder destination in a fresh index, in the same run,
alternating, ``--repeat`` times each; prints the medians and their ratio.  Asserts nothing.

Usage: ``PYTHONPATH=. python bench/enqueue.py [--instances 300] [--repeat 5]``
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.delivery import CHEST, make_series  # noqa: E402
from node.config import FolderDestination  # noqa: E402
from node.delivery import Outbox  # noqa: E402
from node.types import Instance  # noqa: E402
from tests.util import stored_instance  # noqa: E402


def _timed(db: Path, out: Path, enqueue: str, items: list[Path] | list[Instance]) -> float:
    box = Outbox(db, {"f": FolderDestination(type="folder", path=out)})
    try:
        t = time.perf_counter()
        if enqueue == "paths":
            box.enqueue_many(items, destinations=["f"], job_id=None)  # type: ignore[arg-type]
        else:
            box.enqueue_instances(items, destinations=["f"])  # type: ignore[arg-type]
        return time.perf_counter() - t
    finally:
        box.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--instances", type=int, default=300)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--corpus", type=Path, default=ROOT / "tests" / "corpus")
    args = ap.parse_args()
    src = sorted((args.corpus / CHEST).glob("*.dcm"))
    with tempfile.TemporaryDirectory(prefix="ainode-bench-enqueue-") as tmp:
        work = Path(tmp)
        files = make_series(src, args.instances, work / "series", "enqueue")
        instances = [stored_instance(p) for p in files]  # read here, not timed
        by_path, typed = [], []
        for n in range(args.repeat):
            by_path.append(_timed(work / f"p{n}.sqlite", work / "out", "paths", files))
            typed.append(_timed(work / f"t{n}.sqlite", work / "out", "typed", instances))
    p, t = statistics.median(by_path), statistics.median(typed)
    print(f"instances: {args.instances}, runs: {args.repeat} each (median)")
    print(f"enqueue_many(paths), reads every file:  {p * 1000:8.1f} ms")
    print(f"enqueue_instances(instances), no reads: {t * 1000:8.1f} ms")
    print(f"saved: {(p - t) * 1000:.1f} ms per {args.instances} objects ({p / t:.1f}x)")


if __name__ == "__main__":
    main()
