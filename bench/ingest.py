"""Ingest benchmark: storescu -> ainode vs dcmtk storescp (plain and per-file sync) vs Orthanc.

Generates a synthetic CT (default 300 slices of 512x512) and 2,000 small 64x64 instances, then
sends the same files with dcmtk ``storescu`` to each receiver in the same run:

* ``storescp``       dcmtk, no fsync: the ceiling
* ``storescp-sync``  dcmtk with ``-xcr "sync #p/#f" -xs``: the durable yardstick
* ``orthanc``        Orthanc 1.10 (SQLite index, ``SyncStorageArea``)
* ``pynetdicom``     a do-nothing pynetdicom SCP (``bench/pynetdicom_scp.py``): the Python floor
* ``ainode``         ``python -m node serve`` (durable before every ack, see
                     docs/ingest-performance.md)
* ``ainode-rx``      the same with ``node.receivers: auto`` (one receiver process per CPU);
                     its RSS is the total of the main process and every receiver

Scenarios: CT and small instances, each over one association and split over 4 parallel
associations.  Every run line carries the machine's 1-minute load average.  Prints
instances/s, MB/s, the receiver's peak RSS and ratios; with ``--repeat N`` every scenario runs
N times (receivers interleaved) and the median ratio and its range are printed.
Run from the repository root::

    PYTHONPATH=$PWD .venv/bin/python bench/ingest.py [--slices 300] [--small 2000] [--repeat 3]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.ingest.synthetic import write_ct_series  # noqa: E402
from tests.peers.dcmtk import start_storescp, tool  # noqa: E402
from tests.util import free_port, wait_until  # noqa: E402

ENV = dict(os.environ, TCP_NODELAY="1")


def _hwm(pid: int) -> float:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return float("nan")


def _children(pid: int) -> list[int]:
    try:
        return [
            int(c)
            for t in os.listdir(f"/proc/{pid}/task")
            for c in Path(f"/proc/{pid}/task/{t}/children").read_text().split()
        ]
    except OSError:
        return []


def peak_rss_mb(pid: int, *, with_receivers: bool = False) -> float:
    """VmHWM (peak resident set) of a live process, in MB; with its receiver processes
    (``node.receivers``) added when asked: the total of every ainode ingest process."""
    total = _hwm(pid)
    if with_receivers:
        for child in _children(pid):
            try:
                cmd = Path(f"/proc/{child}/cmdline").read_bytes()
            except OSError:
                continue
            if b"node.ingest.receivers" in cmd:
                total += _hwm(child)
    return total


@contextlib.contextmanager
def ainode(workdir: Path, *, receivers: int | str = 1) -> Iterator[tuple[int, int]]:
    """Start ``python -m node serve`` with a fresh data dir; yield (port, pid)."""
    port, http = free_port(), free_port()
    cfg = workdir / "ainode.yaml"
    cfg.write_text(
        json.dumps(
            {
                "node": {
                    "dicom_port": port,
                    "http_port": http,
                    "data_dir": str(workdir / "data"),
                    "min_free_bytes": 0,
                    "max_associations": 16,
                    "receivers": receivers,
                },
                "study": {"stable_seconds": 3600},
            }
        )
    )
    log = workdir / "node.log"
    with log.open("wb") as fh:
        proc = subprocess.Popen(
            [sys.executable, "-m", "node", "serve", "--config", str(cfg), "--log-level", "WARNING"],
            stdout=fh,
            stderr=subprocess.STDOUT,
            env=dict(ENV, PYTHONPATH=str(ROOT)),
        )
    try:
        # the "node.started" record is INFO; with WARNING logging, wait for the HTTP port instead
        from tests.util import port_open

        wait_until(lambda: proc.poll() is not None or port_open(http), 120, "ainode up")
        if proc.poll() is not None:
            raise RuntimeError(log.read_text())
        yield port, proc.pid
    finally:
        proc.terminate()
        proc.wait(timeout=30)


@contextlib.contextmanager
def storescp(workdir: Path, *, sync: bool) -> Iterator[tuple[int, int]]:
    with start_storescp(workdir / "out", sync=sync) as port:
        pid = int(
            subprocess.run(
                ["pgrep", "-n", "-f", f"storescp.* {port}$"], capture_output=True, text=True
            ).stdout.split()[0]
        )
        yield port, pid


@contextlib.contextmanager
def orthanc(workdir: Path) -> Iterator[tuple[int, int]]:
    from tests.peers.orthanc import start_orthanc

    with start_orthanc(workdir / "orthanc", aet="ORTHANC") as peer:
        pid = int(
            subprocess.run(
                ["pgrep", "-n", "-f", f"Orthanc.*{workdir / 'orthanc'}"],
                capture_output=True,
                text=True,
            ).stdout.split()[0]
        )
        yield peer.dicom_port, pid


@contextlib.contextmanager
def bare_pynetdicom(workdir: Path) -> Iterator[tuple[int, int]]:
    """The do-nothing pynetdicom SCP of ``bench/pynetdicom_scp.py``."""
    from tests.util import port_open

    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, str(ROOT / "bench" / "pynetdicom_scp.py"), str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=ENV,
    )
    try:
        wait_until(lambda: proc.poll() is not None or port_open(port), 30, "pynetdicom up")
        yield port, proc.pid
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def send(port: int, files: list[Path], parallel: int, called: str) -> float:
    """Send ``files`` over ``parallel`` storescu associations; return wall seconds."""
    chunks = [files[i::parallel] for i in range(parallel)]
    start = time.perf_counter()
    procs = [
        subprocess.Popen(
            [tool("storescu"), "-aec", called, "127.0.0.1", str(port), *map(str, chunk)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            env=ENV,
        )
        for chunk in chunks
    ]
    for p in procs:
        _, err = p.communicate()
        if p.returncode != 0:
            raise RuntimeError(f"storescu failed: {err.decode(errors='replace')[-500:]}")
    return time.perf_counter() - start


Receiver = Callable[[Path], contextlib.AbstractContextManager[tuple[int, int]]]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--slices", type=int, default=300, help="CT slices (512x512)")
    ap.add_argument("--small", type=int, default=2000, help="small 64x64 instances")
    ap.add_argument("--parallel", type=int, default=4, help="associations in the parallel run")
    ap.add_argument("--skip", nargs="*", default=[], help="receivers to skip")
    ap.add_argument("--repeat", type=int, default=1, help="runs of every scenario (median)")
    args = ap.parse_args()

    with tempfile.TemporaryDirectory(prefix="ainode-bench-") as tmp:
        base = Path(tmp)
        print(f"generating {args.slices} CT slices and {args.small} small instances ...")
        ct = write_ct_series(base / "ct", args.slices, size=512, seed=7)
        small = write_ct_series(base / "small", args.small, size=64, seed=8)
        scenarios = {
            "CT 1 assoc": (ct, 1),
            "small 1 assoc": (small, 1),
            f"CT {args.parallel} assoc": (ct, args.parallel),
            f"small {args.parallel} assoc": (small, args.parallel),
        }
        receivers: dict[str, tuple[Receiver, str]] = {
            "storescp": (lambda d: storescp(d, sync=False), "STORESCP"),
            "storescp-sync": (lambda d: storescp(d, sync=True), "STORESCP"),
            "orthanc": (orthanc, "ORTHANC"),
            "pynetdicom": (bare_pynetdicom, "PYNETDICOM"),
            "ainode": (ainode, "AINODE"),
            "ainode-rx": (lambda d: ainode(d, receivers="auto"), "AINODE"),
        }
        runs: dict[tuple[str, str], list[tuple[float, float, float]]] = {}
        for rep in range(args.repeat):
            for scen, (files, parallel) in scenarios.items():
                total_mb = sum(f.stat().st_size for f in files) / 1e6
                for name, (factory, aet) in receivers.items():
                    if name in args.skip:
                        continue
                    work = base / f"{name}-{scen.replace(' ', '_')}-{rep}"
                    work.mkdir()
                    with factory(work) as (port, pid):
                        seconds = send(port, files, parallel, aet)
                        rss = peak_rss_mb(pid, with_receivers=name == "ainode-rx")
                    load = os.getloadavg()[0]
                    runs.setdefault((scen, name), []).append(
                        (len(files) / seconds, total_mb / seconds, rss)
                    )
                    print(
                        f"run {rep + 1}: {scen:14} {name:14} {len(files) / seconds:8.1f} inst/s "
                        f"{total_mb / seconds:7.1f} MB/s  peak RSS {rss:6.1f} MB  load {load:.1f}",
                        flush=True,
                    )
                    subprocess.run(["rm", "-rf", str(work)], check=False)
        print(
            "\nratios (inst/s of ainode / reference in the same run; "
            f"median [min-max] of {args.repeat}):"
        )
        for scen, mode in [(s, m) for s in scenarios for m in ("ainode", "ainode-rx")]:
            mine = runs.get((scen, mode))
            if mine is None:
                continue
            parts = []
            for ref in ("storescp", "storescp-sync", "orthanc", "pynetdicom"):
                other = runs.get((scen, ref))
                if not other:
                    continue
                ratios = [m[0] / o[0] for m, o in zip(mine, other, strict=True)]
                parts.append(
                    f"{statistics.median(ratios):.2f}x {ref} [{min(ratios):.2f}-{max(ratios):.2f}]"
                )
            peaks = [m[2] for m in mine]
            print(f"  {scen:14} {mode:9} " + ", ".join(parts))
            print(f"  {'':14} {mode} peak RSS {min(peaks):.0f}-{max(peaks):.0f} MB")


if __name__ == "__main__":
    main()
