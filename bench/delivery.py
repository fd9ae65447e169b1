"""Benchmark: delivering a 300-instance CT series to a real Orthanc.

* ainode's outbox over DIMSE C-STORE vs dcmtk ``storescu`` to the same Orthanc, same run (ratio);
* ainode's outbox over STOW-RS (throughput).

Each run sends its own copy of the series (new Series/SOP Instance UIDs, same bytes otherwise) so
Orthanc stores every run in full.  Prints figures; asserts nothing.

Usage: ``PYTHONPATH=. python bench/delivery.py [--instances 300] [--corpus DIR]``
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pydicom
from pydicom.uid import generate_uid

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from node.config import DeliveryConfig, DicomwebDestination, DimseDestination  # noqa: E402
from node.delivery import Outbox  # noqa: E402
from tests.peers.orthanc import start_orthanc  # noqa: E402
from tests.util import wait_until  # noqa: E402

CHEST = "ct/chest-ct-siemens-sensation10-b40f-30sl"


def make_series(src: list[Path], n: int, out: Path, tag: str) -> list[Path]:
    """``n`` instances cycling over ``src``, in a fresh series of the same study."""
    out.mkdir(parents=True)
    series_uid = generate_uid(entropy_srcs=[tag, "series"])
    paths = []
    for i in range(n):
        ds = pydicom.dcmread(src[i % len(src)])
        ds.SeriesInstanceUID = series_uid
        ds.SOPInstanceUID = generate_uid(entropy_srcs=[tag, str(i)])
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        ds.InstanceNumber = i + 1
        p = out / f"{i:04d}.dcm"
        ds.save_as(p, enforce_file_format=True)
        paths.append(p)
    return paths


def orthanc_count(url: str) -> int:
    import httpx

    return int(httpx.get(f"{url}/statistics", timeout=30).json()["CountInstances"])


def run_outbox(work: Path, dest: object, files: list[Path], name: str) -> float:
    box = Outbox(
        work / f"{name}.sqlite",
        {name: dest},
        policy=DeliveryConfig(batch_size=len(files)),
    )
    box.enqueue_many(files, destinations=[name], job_id="bench")
    t0 = time.perf_counter()
    box.run_once()
    elapsed = time.perf_counter() - t0
    counts = box.counts()[name]
    box.close()
    if counts != {"delivered": len(files)}:
        raise SystemExit(f"{name}: not everything delivered: {counts}")
    return elapsed


def run_storescu(port: int, folder: Path) -> float:
    exe = shutil.which("storescu")
    if exe is None:
        raise SystemExit("dcmtk storescu is not installed")
    env = dict(os.environ, TCP_NODELAY="1")
    t0 = time.perf_counter()
    subprocess.run(
        [exe, "-aec", "ORTHANC", "-aet", "STORESCU", "+sd", "127.0.0.1", str(port), str(folder)],
        check=True,
        env=env,
        capture_output=True,
    )
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--instances", type=int, default=300)
    ap.add_argument("--corpus", type=Path, default=ROOT.parent / "shared" / "corpus")
    args = ap.parse_args()
    src = sorted((args.corpus / CHEST).glob("*.dcm"))
    n = args.instances
    with tempfile.TemporaryDirectory(prefix="bench-delivery-") as tmp:
        work = Path(tmp)
        sets = {k: make_series(src, n, work / k, k) for k in ("ainode", "storescu", "stow")}
        mb = sum(p.stat().st_size for p in sets["ainode"]) / 1e6
        with start_orthanc(work / "orthanc") as orthanc:
            base = orthanc_count(orthanc.url)
            t_scu = run_storescu(orthanc.dicom_port, work / "storescu")
            wait_until(lambda: orthanc_count(orthanc.url) == base + n, 60, "storescu stored")
            dimse = DimseDestination(
                host="127.0.0.1", port=orthanc.dicom_port, ae_title=orthanc.aet
            )
            t_ai = run_outbox(work, dimse, sets["ainode"], "pacs")
            wait_until(lambda: orthanc_count(orthanc.url) == base + 2 * n, 60, "ainode stored")
            web = DicomwebDestination(type="dicomweb", url=orthanc.dicomweb_url)
            t_stow = run_outbox(work, web, sets["stow"], "web")
            wait_until(lambda: orthanc_count(orthanc.url) == base + 3 * n, 60, "stow stored")
    print(f"series: {n} CT instances, {mb:.1f} MB, to Orthanc 1.10 on loopback")
    print(
        f"dcmtk storescu  C-STORE: {t_scu:6.2f} s  {n / t_scu:7.1f} inst/s  {mb / t_scu:6.1f} MB/s"
    )
    print(f"ainode outbox   C-STORE: {t_ai:6.2f} s  {n / t_ai:7.1f} inst/s  {mb / t_ai:6.1f} MB/s")
    print(f"ainode/storescu time ratio: {t_ai / t_scu:.2f} (lower is better; 1.0 = parity)")
    stow = f"{t_stow:6.2f} s  {n / t_stow:7.1f} inst/s  {mb / t_stow:6.1f} MB/s"
    print(f"ainode outbox   STOW-RS: {stow}")


if __name__ == "__main__":
    main()
