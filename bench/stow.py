"""STOW-RS benchmark: the same multipart/related uploads to ainode and to Orthanc's DICOMweb plugin.

Generates a synthetic CT (default 120 slices of 512x512) and 600 small 64x64 instances, then
posts them in batches (one STOW-RS request per batch, raw file bytes, one HTTP client) to:

* ``orthanc``  Orthanc 1.10 + DICOMweb plugin (``SyncStorageArea``), the reference
* ``ainode``   ``python -m node serve`` (every part fsync'd and indexed before the response)

Prints instances/s, MB/s and the ratio ainode / Orthanc for each scenario.  ``--clients N``
deals the requests to N parallel clients; issue 20's scenario is the CT in batches of 50 with
4 clients.  Run from the repository root::

    PYTHONPATH=$PWD .venv/bin/python bench/stow.py [--slices 120] [--small 600] [--batch 20]
    PYTHONPATH=$PWD .venv/bin/python bench/stow.py --slices 300 --batch 50 --clients 4 \
        --repeat 3 --ct-only
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
from pydicom.uid import generate_uid

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from node.samples import write_ct_series  # noqa: E402
from tests.peers.node import start_node  # noqa: E402
from tests.peers.orthanc import start_orthanc  # noqa: E402

BOUNDARY = "ainode-bench-boundary"


def _body(files: list[Path]) -> bytes:
    out = bytearray()
    for path in files:
        out += f"--{BOUNDARY}\r\nContent-Type: application/dicom\r\n\r\n".encode()
        out += path.read_bytes() + b"\r\n"
    out += f"--{BOUNDARY}--\r\n".encode()
    return bytes(out)


def _post_all(url: str, files: list[Path], batch: int, clients: int = 1) -> float:
    """POST every batch to ``url`` from ``clients`` parallel clients (batches dealt round-robin);
    return the wall seconds taken (bodies are built beforehand)."""
    bodies = [_body(files[i : i + batch]) for i in range(0, len(files), batch)]
    headers = {
        "Content-Type": f'multipart/related; type="application/dicom"; boundary={BOUNDARY}',
        "Accept": "application/dicom+json",
    }

    def client_run(mine: list[bytes]) -> None:
        with httpx.Client(timeout=300) as client:
            for body in mine:
                r = client.post(url, content=body, headers=headers)
                if r.status_code != 200:
                    raise RuntimeError(f"{url} answered {r.status_code}: {r.text[:300]}")

    shares = [bodies[i::clients] for i in range(clients)]
    t0 = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        list(pool.map(client_run, shares))
    return time.perf_counter() - t0


def _scenario(
    name: str,
    files: list[Path],
    batch: int,
    targets: dict[str, Callable[[], str]],
    clients: int = 1,
) -> float | None:
    """Run one scenario on every target; return the ratio ainode / Orthanc (inst/s)."""
    size = sum(p.stat().st_size for p in files)
    results: dict[str, float] = {}
    for target, url in targets.items():
        seconds = _post_all(url(), files, batch, clients)
        results[target] = seconds
        print(
            f"{name:<28} {target:<8} {len(files) / seconds:8.1f} inst/s "
            f"{size / seconds / 1e6:7.1f} MB/s  ({seconds:.2f} s)  load {os.getloadavg()[0]:.1f}",
            flush=True,
        )
    if "orthanc" in results and "ainode" in results:
        ratio = results["orthanc"] / results["ainode"]
        print(f"{name:<28} ratio ainode/orthanc: {ratio:.2f}x")
        return ratio
    return None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--slices", type=int, default=120)
    parser.add_argument("--small", type=int, default=600)
    parser.add_argument("--batch", type=int, default=20)
    parser.add_argument("--clients", type=int, default=1, help="parallel STOW-RS clients")
    parser.add_argument("--repeat", type=int, default=1, help="runs of every scenario (median)")
    parser.add_argument("--ct-only", action="store_true", help="skip the small instances")
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory(prefix="ainode-bench-stow-") as tmp:
        work = Path(tmp)
        ct = write_ct_series(
            rng.normal(0, 200, (args.slices, 512, 512)), spacing=(1, 0.7, 0.7), out_dir=work / "ct"
        )
        small: list[Path] = []
        for i in range(0, args.small, 100):
            n = min(100, args.small - i)
            small += write_ct_series(
                rng.normal(0, 200, (n, 64, 64)),
                spacing=(1, 1, 1),
                out_dir=work / f"small{i}",
                study_uid=generate_uid(),
            )
        with (
            # no routing during the run (as bench/ingest.py): with the default 30 s a finished
            # study's demo models would run beside the later uploads, which Orthanc never does
            start_node(work / "ainode", study={"stable_seconds": 3600}) as node,
            start_orthanc(work / "orthanc") as orthanc,
        ):
            targets = {
                "orthanc": lambda: f"{orthanc.dicomweb_url}/studies",
                "ainode": lambda: f"{node.url}/dicom-web/studies",
            }
            # one untimed request each first: the first upload of a fresh process pays for its
            # lazy imports and first database writes, which a running server has behind it
            warm = write_ct_series(
                rng.normal(0, 200, (4, 64, 64)), spacing=(1, 1, 1), out_dir=work / "warm"
            )
            for url in targets.values():
                _post_all(url(), warm, len(warm))
            print(f"STOW-RS, {args.clients} client(s), {args.batch} instances per request")
            ratios: dict[str, list[float]] = {}
            for _ in range(args.repeat):
                name = f"CT {args.slices}x512x512"
                r = _scenario(name, ct, args.batch, targets, args.clients)
                ratios.setdefault(name, []).append(r or float("nan"))
                if not args.ct_only:
                    name = f"{args.small} small 64x64"
                    r = _scenario(name, small, args.batch, targets, args.clients)
                    ratios.setdefault(name, []).append(r or float("nan"))
            for name, values in ratios.items():
                print(
                    f"{name:<28} ainode/orthanc median {statistics.median(values):.2f}x "
                    f"[{min(values):.2f}-{max(values):.2f}] over {len(values)} run(s)"
                )


if __name__ == "__main__":
    main()
