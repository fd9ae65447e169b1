"""Load benchmark (issue 11): many storescu associations plus STOW-RS clients against one node.

Starts ``python -m node serve`` with a fresh data directory, then runs at the same time
``--associations`` storescu processes, each sending ``--per-association`` small (64x64) instances
over one association, and ``--stow-clients`` STOW-RS requests (``--stow-per-request`` instances
each, all POSTed in parallel).  Prints throughput, C-STORE latency percentiles (from storescu's
own timestamped log: request sent -> response received), the node's RSS over time, failures,
and checks that every instance is indexed exactly once.  Run from the repository root::

    PYTHONPATH=$PWD .venv/bin/python bench/load.py [--associations 16] [--per-association 2000]

The bounded version of this run is ``tests/ingest/test_load.py``.
"""

from __future__ import annotations

import argparse
import os
import sqlite3
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.ingest.loadgen import percentile, rss_mib, run_load  # noqa: E402
from tests.ingest.synthetic import write_ct_series  # noqa: E402
from tests.peers.node import start_node  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--associations", type=int, default=16)
    ap.add_argument("--per-association", type=int, default=2000)
    ap.add_argument("--stow-clients", type=int, default=50)
    ap.add_argument("--stow-per-request", type=int, default=4)
    ap.add_argument("--receivers", default="1", help="node.receivers: auto or N (RSS is summed)")
    args = ap.parse_args()
    receivers: int | str = args.receivers if args.receivers == "auto" else int(args.receivers)
    print(f"load average at the start: {os.getloadavg()}", flush=True)

    with tempfile.TemporaryDirectory(prefix="ainode-load-") as tmp:
        base = Path(tmp)
        t = time.perf_counter()
        store_sets = [
            write_ct_series(base / f"a{i}", args.per_association, size=64, seed=i)
            for i in range(args.associations)
        ]
        stow_sets = [
            [
                p.read_bytes()
                for p in write_ct_series(base / f"s{i}", args.stow_per_request, seed=10_000 + i)
            ]
            for i in range(args.stow_clients)
        ]
        print(f"generated the instances in {time.perf_counter() - t:.0f} s", flush=True)
        with start_node(
            base / "node",
            node={"max_associations": args.associations + 4, "receivers": receivers},
            study={"stable_seconds": 3600},
        ) as node:
            assert node.proc is not None
            pid = node.proc.pid
            before = rss_mib(pid)
            work = base / "work"
            work.mkdir()
            result = run_load(
                dicom_port=node.dicom_port,
                http_url=node.url,
                pid=pid,
                store_sets=store_sets,
                stow_sets=stow_sets,
                workdir=work,
                progress=lambda msg: print(f"  {msg}", flush=True),
            )
            after = rss_mib(pid)
            db = sqlite3.connect(node.data_dir / "index.sqlite")
            try:
                indexed = db.execute("SELECT COUNT(*) FROM instances").fetchone()[0]
                multiple = db.execute(
                    "SELECT COUNT(*) FROM (SELECT sop_uid FROM events WHERE kind IN "
                    "('stored', 'replaced', 'duplicate') GROUP BY sop_uid HAVING COUNT(*) > 1)"
                ).fetchone()[0]
            finally:
                db.close()

    lat = result.store_latency_ms
    print(
        f"\n{result.sent} instances ({args.associations} x {args.per_association} C-STORE, "
        f"{args.stow_clients} x {args.stow_per_request} STOW) in {result.seconds:.1f} s: "
        f"{result.sent / result.seconds:.0f} inst/s"
    )
    print(
        f"C-STORE latency: p50 {percentile(lat, 0.5):.0f} ms, p90 {percentile(lat, 0.9):.0f} ms, "
        f"p99 {percentile(lat, 0.99):.0f} ms, max {max(lat, default=float('nan')):.0f} ms "
        f"({len(lat)} responses)"
    )
    print(f"failures: {len(result.failed)}")
    for line in result.failed[:10]:
        print(f"  {line}")
    print(f"indexed: {indexed} of {result.sent}; stored more than once: {multiple}")
    print(f"load average at the end: {os.getloadavg()}")
    print(f"node RSS: {before:.0f} MiB before, {after:.0f} MiB after; over time (s: MiB):")
    step = max(1, len(result.rss_samples) // 20)
    print("  " + ", ".join(f"{t:.1f}: {r:.0f}" for t, r in result.rss_samples[::step]))


if __name__ == "__main__":
    main()
