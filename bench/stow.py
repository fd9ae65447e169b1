"""STOW-RS benchmark: the same multipart/related uploads to ainode and to Orthanc's DICOMweb plugin.

Generates a synthetic CT (default 120 slices of 512x512) and 600 small 64x64 instances, then
posts them in batches (one STOW-RS request per batch, raw file bytes, one HTTP client) to:

* ``orthanc``  Orthanc 1.10 + DICOMweb plugin (``SyncStorageArea``), the reference
* ``ainode``   ``python -m node serve`` (every part fsync'd and indexed before the response)

Prints instances/s, MB/s and the ratio ainode / Orthanc for each scenario.  Run from the
repository root::

    PYTHONPATH=$PWD .venv/bin/python bench/stow.py [--slices 120] [--small 600] [--batch 20]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections.abc import Callable
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


def _post_all(url: str, files: list[Path], batch: int) -> float:
    """POST every batch to ``url``; return the seconds taken (bodies are built beforehand)."""
    bodies = [_body(files[i : i + batch]) for i in range(0, len(files), batch)]
    headers = {
        "Content-Type": f'multipart/related; type="application/dicom"; boundary={BOUNDARY}',
        "Accept": "application/dicom+json",
    }
    with httpx.Client(timeout=300) as client:
        t0 = time.perf_counter()
        for body in bodies:
            r = client.post(url, content=body, headers=headers)
            if r.status_code != 200:
                raise RuntimeError(f"{url} answered {r.status_code}: {r.text[:300]}")
        return time.perf_counter() - t0


def _scenario(
    name: str, files: list[Path], batch: int, targets: dict[str, Callable[[], str]]
) -> None:
    size = sum(p.stat().st_size for p in files)
    results: dict[str, float] = {}
    for target, url in targets.items():
        seconds = _post_all(url(), files, batch)
        results[target] = seconds
        print(
            f"{name:<28} {target:<8} {len(files) / seconds:8.1f} inst/s "
            f"{size / seconds / 1e6:7.1f} MB/s  ({seconds:.2f} s)"
        )
    if "orthanc" in results and "ainode" in results:
        print(f"{name:<28} ratio ainode/orthanc: {results['orthanc'] / results['ainode']:.2f}x")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--slices", type=int, default=120)
    parser.add_argument("--small", type=int, default=600)
    parser.add_argument("--batch", type=int, default=20)
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
            start_node(work / "ainode") as node,
            start_orthanc(work / "orthanc") as orthanc,
        ):
            targets = {
                "orthanc": lambda: f"{orthanc.dicomweb_url}/studies",
                "ainode": lambda: f"{node.url}/dicom-web/studies",
            }
            print(f"STOW-RS, one client, {args.batch} instances per request")
            _scenario(f"CT {args.slices}x512x512", ct, args.batch, targets)
            _scenario(f"{args.small} small 64x64", small, args.batch, targets)


if __name__ == "__main__":
    main()
