"""Load against a running node: many storescu associations plus STOW-RS clients, at once.

Used by ``tests/ingest/test_load.py`` (scaled down) and ``bench/load.py`` (full size).  C-STORE
latency is what each storescu saw: the time from "Sending Store Request" to "Received Store
Response", taken from dcmtk's own log with millisecond timestamps.
"""

from __future__ import annotations

import os
import re
import subprocess
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from tests.peers.dcmtk import tool

_LOG_CONFIG = """\
log4cplus.rootLogger = INFO, console
log4cplus.appender.console = log4cplus::ConsoleAppender
log4cplus.appender.console.layout = log4cplus::PatternLayout
log4cplus.appender.console.layout.ConversionPattern = %D{%s.%q} %m%n
"""
_LINE = re.compile(r"^(\d+\.\d+) (.*)$")
BOUNDARY = "ainode-load-5b1e"


@dataclass
class LoadResult:
    """What the load run saw from the client side."""

    sent: int = 0
    acknowledged: int = 0
    failed: list[str] = field(default_factory=list)  # one line per failed instance or request
    store_latency_ms: list[float] = field(default_factory=list)
    stow_requests: int = 0
    stow_instances_ok: int = 0
    seconds: float = 0.0
    rss_samples: list[tuple[float, float]] = field(default_factory=list)  # (t, MiB)


def _vmrss(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for pid {pid}")


def rss_mib(pid: int) -> float:
    """Resident set size of a live node, in MiB: its main process plus its DICOM receiver
    processes (``node.receivers``), not its inference workers."""
    total = _vmrss(pid)
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            children = (task / "children").read_text().split()
        except OSError:
            continue
        for child in children:
            try:
                if b"node.ingest.receivers" in Path(f"/proc/{child}/cmdline").read_bytes():
                    total += _vmrss(int(child))
            except (OSError, RuntimeError):
                continue
    return total


def percentile(values: Sequence[float], q: float) -> float:
    """The ``q`` quantile (0..1) by nearest rank."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    rank = min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))
    return ordered[rank]


def storescu_timed(
    port: int, files: Sequence[Path], *, workdir: Path, calling: str = "STORESCU"
) -> tuple[int, list[str], list[float]]:
    """Send ``files`` over one storescu association; return (acknowledged, failures, latencies)."""
    cfg = workdir / "storescu-log.cfg"
    if not cfg.exists():
        cfg.write_text(_LOG_CONFIG)
    proc = subprocess.run(
        [tool("storescu"), "-lc", str(cfg), "-nh", "-aet", calling, "-aec", "AINODE"]
        + ["127.0.0.1", str(port), *map(str, files)],
        capture_output=True,
        text=True,
        env=dict(os.environ, TCP_NODELAY="1"),
        timeout=600,
        check=False,
    )
    acked, failures, latencies = 0, [], []
    sent_at: float | None = None
    for raw in (proc.stdout + proc.stderr).splitlines():
        m = _LINE.match(raw)
        if m is None:
            continue
        stamp, text = float(m.group(1)), m.group(2)
        if text.startswith("Sending Store Request"):
            sent_at = stamp
        elif text.startswith("Received Store Response"):
            if "(Success" in text:
                acked += 1
            else:
                failures.append(text)
            if sent_at is not None:
                latencies.append((stamp - sent_at) * 1000)
            sent_at = None
    if acked + len(failures) < len(files):
        failures.append(
            f"storescu exit {proc.returncode}: {len(files) - acked - len(failures)} instances "
            f"without a response: {(proc.stdout + proc.stderr)[-300:]}"
        )
    return acked, failures, latencies


def multipart(parts: Sequence[bytes]) -> tuple[bytes, dict[str, str]]:
    """A STOW-RS request body (multipart/related, RFC 2387) and its headers."""
    out = bytearray()
    for data in parts:
        out += f"--{BOUNDARY}\r\nContent-Type: application/dicom\r\n\r\n".encode()
        out += data + b"\r\n"
    out += f"--{BOUNDARY}--\r\n".encode()
    return bytes(out), {
        "Content-Type": f'multipart/related; type="application/dicom"; boundary="{BOUNDARY}"',
        "Accept": "application/dicom+json",
    }


def stow_post(url: str, parts: Sequence[bytes]) -> tuple[int, str]:
    """POST one STOW-RS request; return (HTTP status, short body)."""
    body, headers = multipart(parts)
    with httpx.Client(timeout=120) as client:
        r = client.post(f"{url}/dicom-web/studies", content=body, headers=headers)
    return r.status_code, r.text[:300]


def run_load(
    *,
    dicom_port: int,
    http_url: str,
    pid: int,
    store_sets: Sequence[Sequence[Path]],
    stow_sets: Sequence[Sequence[bytes]],
    workdir: Path,
    progress: Callable[[str], None] | None = None,
) -> LoadResult:
    """Run every storescu association and every STOW request at once; sample RSS meanwhile."""
    result = LoadResult(sent=sum(map(len, store_sets)) + sum(map(len, stow_sets)))
    lock = threading.Lock()
    done = threading.Event()

    def sampler() -> None:
        start = time.monotonic()
        while not done.wait(0.5):
            try:
                rss = rss_mib(pid)
            except (OSError, RuntimeError):
                return
            result.rss_samples.append((time.monotonic() - start, rss))

    def one_store(files: Sequence[Path]) -> None:
        acked, failures, latencies = storescu_timed(dicom_port, files, workdir=workdir)
        with lock:
            result.acknowledged += acked
            result.failed += failures
            result.store_latency_ms += latencies
        if progress:
            progress(f"association done: {acked}/{len(files)} acknowledged")

    def one_stow(parts: Sequence[bytes]) -> None:
        try:
            status, text = stow_post(http_url, parts)
        except httpx.HTTPError as exc:
            status, text = -1, repr(exc)
        with lock:
            result.stow_requests += 1
            if status == 200:
                result.acknowledged += len(parts)
                result.stow_instances_ok += len(parts)
            else:
                result.failed.append(f"STOW {status}: {text}")

    sampling = threading.Thread(target=sampler, daemon=True)
    sampling.start()
    start = time.perf_counter()
    workers = len(store_sets) + len(stow_sets)
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        futures = [pool.submit(one_store, files) for files in store_sets]
        futures += [pool.submit(one_stow, parts) for parts in stow_sets]
        for f in futures:
            f.result()
    result.seconds = time.perf_counter() - start
    done.set()
    sampling.join()
    return result
