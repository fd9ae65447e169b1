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
    errors = {r.last_error for r in box.list(state="pending")}
    box.close()
    if counts != {"delivered": len(files)}:
        raise SystemExit(f"{name}: not everything delivered: {counts}; {errors}")
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
    ap.add_argument("--rounds", type=int, default=2, help="interleaved rounds; best is reported")
    ap.add_argument("--corpus", type=Path, default=ROOT / "tests" / "corpus")
    args = ap.parse_args()
    src = sorted((args.corpus / CHEST).glob("*.dcm"))
    n = args.instances
    times: dict[str, list[float]] = {"storescu": [], "ainode": [], "stow": []}
    with tempfile.TemporaryDirectory(prefix="bench-delivery-") as tmp:
        work = Path(tmp)
        with start_orthanc(work / "orthanc") as orthanc:
            dimse = DimseDestination(
                host="127.0.0.1", port=orthanc.dicom_port, ae_title=orthanc.aet
            )
            web = DicomwebDestination(type="dicomweb", url=orthanc.dicomweb_url)
            for r in range(args.rounds):
                sets = {k: make_series(src, n, work / f"{k}{r}", f"{k}{r}") for k in times}
                mb = sum(p.stat().st_size for p in sets["ainode"]) / 1e6
                base = orthanc_count(orthanc.url)
                times["storescu"].append(run_storescu(orthanc.dicom_port, work / f"storescu{r}"))
                wait_until(lambda b=base: orthanc_count(orthanc.url) == b + n, 60, "storescu")
                times["ainode"].append(run_outbox(work, dimse, sets["ainode"], f"pacs{r}"))
                wait_until(lambda b=base: orthanc_count(orthanc.url) == b + 2 * n, 60, "ainode")
                times["stow"].append(run_outbox(work, web, sets["stow"], f"web{r}"))
                wait_until(lambda b=base: orthanc_count(orthanc.url) == b + 3 * n, 60, "stow")
    t_scu, t_ai, t_stow = (min(times[k]) for k in ("storescu", "ainode", "stow"))
    print(
        f"series: {n} CT instances, {mb:.1f} MB, to Orthanc 1.10 on loopback; best of {args.rounds}"
    )
    for label, t in (("dcmtk storescu  C-STORE", t_scu), ("ainode outbox   C-STORE", t_ai)):
        print(f"{label}: {t:6.2f} s  {n / t:7.1f} inst/s  {mb / t:6.1f} MB/s")
    print(f"ainode/storescu time ratio: {t_ai / t_scu:.2f} (lower is better; 1.0 = parity)")
    rounds = ", ".join(
        f"{a:.2f}/{b:.2f}" for a, b in zip(times["storescu"], times["ainode"], strict=True)
    )
    print(f"  per round (storescu/ainode s): {rounds}")
    stow = f"{t_stow:6.2f} s  {n / t_stow:7.1f} inst/s  {mb / t_stow:6.1f} MB/s"
    print(f"ainode outbox   STOW-RS: {stow}")


if __name__ == "__main__":
    main()
