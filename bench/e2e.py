"""Benchmark: a chest CT through the whole node into a real Orthanc (``python -m node serve``).

Measured from the node's own durable records (index, jobs, outbox) plus the sender's clock:

* **end to end** = last result delivered to Orthanc - last instance acknowledged - stable window;
* split into **route** (completion -> jobs queued), **queue** (queued -> claimed; includes the
  worker process start on a cold node), **load** / **model** / **write** (the job's
  ``timings_seconds``), **job other** (rest of the job's wall time), **deliver** (job end ->
  last outbox row delivered);
* **node overhead** = end to end - model forward;
* **studies/hour** with ``--in-flight`` studies sent at once;
* **peak RSS** (VmHWM) of the node process and of its worker processes.

The model is a tiny TorchScript CT model by default (``--model tiny``: the demo's trained
weights are not needed) or the built-in rules and models (``--model builtin``).  Prints figures;
asserts nothing.  Usage: ``PYTHONPATH=. python bench/e2e.py [--slices 80] [--in-flight 5]``.
"""

from __future__ import annotations

import argparse
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pydicom
from pydicom.uid import generate_uid

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from node.samples.studies import CT_SPACING, sample_chest_ct  # noqa: E402
from node.samples.writers import write_ct_series  # noqa: E402
from tests.models.builders import write_body_model  # noqa: E402
from tests.peers.dcmtk import storescu  # noqa: E402
from tests.peers.node import NodeProcess, start_node  # noqa: E402
from tests.peers.orthanc import start_orthanc  # noqa: E402
from tests.util import wait_until  # noqa: E402

STABLE = 2.0


def chest_ct(out: Path, slices: int, size: int = 512) -> list[Path]:
    """The sample chest phantom resampled to ``slices`` x ``size`` x ``size`` (nearest), fresh UIDs.

    The phantom is ~126 x 126 in-plane; ``size`` 512 repeats each pixel ~4 x 4 with a quarter of
    the pixel spacing, so the anatomy keeps its size in mm and the files are a real CT's size.
    """
    vol = sample_chest_ct().hu
    idx = np.linspace(0, vol.shape[0] - 1, slices).round().astype(int)
    rows = np.linspace(0, vol.shape[1] - 1, size).round().astype(int)
    cols = np.linspace(0, vol.shape[2] - 1, size).round().astype(int)
    zoom = (vol.shape[1] / size, vol.shape[2] / size)
    spacing = (
        CT_SPACING[0] * vol.shape[0] / slices,
        CT_SPACING[1] * zoom[0],
        CT_SPACING[2] * zoom[1],
    )
    voxels = vol[idx][:, rows][:, :, cols]
    return write_ct_series(voxels, spacing=spacing, out_dir=out, study_uid=generate_uid())


def copy_study(src: list[Path], out: Path) -> list[Path]:
    """Same pixels, new study/series/instance UIDs."""
    out.mkdir(parents=True)
    study, series = generate_uid(), generate_uid()
    paths = []
    for i, p in enumerate(src):
        ds = pydicom.dcmread(p)
        ds.StudyInstanceUID, ds.SeriesInstanceUID = study, series
        ds.SOPInstanceUID = generate_uid()
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        path = out / f"{i:04d}.dcm"
        ds.save_as(path, enforce_file_format=True)
        paths.append(path)
    return paths


def study_uid(files: list[Path]) -> str:
    return str(pydicom.dcmread(files[0], stop_before_pixels=True).StudyInstanceUID)


def db(node: NodeProcess) -> sqlite3.Connection:
    conn = sqlite3.connect(node.data_dir / "index.sqlite", timeout=30)
    conn.row_factory = sqlite3.Row
    return conn


def finished(node: NodeProcess, uid: str) -> bool:
    conn = db(node)
    try:
        try:
            jobs = conn.execute("SELECT state FROM jobs WHERE study_uid=?", (uid,)).fetchall()
            out = conn.execute(
                "SELECT COUNT(*) FROM outbox WHERE study_uid=? AND state<>'delivered'", (uid,)
            ).fetchone()[0]
            n_out = conn.execute("SELECT COUNT(*) FROM outbox WHERE study_uid=?", (uid,)).fetchone()
        except sqlite3.OperationalError:
            return False
        final = {"succeeded", "dead", "cancelled"}
        return bool(jobs) and all(j[0] in final for j in jobs) and out == 0 and n_out[0] > 0
    finally:
        conn.close()


def split(node: NodeProcess, uid: str, acked_at: float) -> dict[str, float]:
    """Timings of one study from the node's records (seconds)."""
    import json

    conn = db(node)
    try:
        completed = conn.execute(
            "SELECT completed_at FROM studies WHERE study_uid=?", (uid,)
        ).fetchone()[0]
        jobs = conn.execute(
            "SELECT created_at, started_at, finished_at, outputs, state FROM jobs"
            " WHERE study_uid=?",
            (uid,),
        ).fetchall()
        delivered = conn.execute(
            "SELECT MAX(updated_at) FROM outbox WHERE study_uid=?", (uid,)
        ).fetchone()[0]
    finally:
        conn.close()
    t = {"load": 0.0, "model": 0.0, "write": 0.0}
    for j in jobs:
        timings = json.loads(j["outputs"] or "{}").get("timings_seconds", {})
        for k in t:
            t[k] += float(timings.get(k, 0.0))
    queued = min(j["created_at"] for j in jobs)
    started = min(j["started_at"] for j in jobs)
    job_end = max(j["finished_at"] for j in jobs)
    run = sum(j["finished_at"] - j["started_at"] for j in jobs)
    e2e = delivered - acked_at - STABLE
    return {
        "end_to_end": e2e,
        "stable_wait_excess": completed - acked_at - STABLE,
        "route": queued - completed,
        "queue": started - queued,
        **t,
        "job_other": run - sum(t.values()),
        "deliver": delivered - job_end,
        "overhead": e2e - t["model"],
        "jobs": float(len(jobs)),
    }


def peak_rss(pid: int) -> dict[str, int]:
    """VmHWM (bytes) of ``pid`` and of its direct children."""
    out: dict[str, int] = {}
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            stat = (proc / "stat").read_text().rsplit(")", 1)[1].split()
            status = (proc / "status").read_text()
        except OSError:
            continue
        ppid = int(stat[1])
        if int(proc.name) != pid and ppid != pid:
            continue
        for line in status.splitlines():
            if line.startswith("VmHWM:"):
                name = "node" if int(proc.name) == pid else f"child-{proc.name}"
                out[name] = int(line.split()[1]) * 1024
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--slices", type=int, default=80, help="CT slices (issue target: 300)")
    ap.add_argument("--size", type=int, default=512, help="rows = columns (issue: 512)")
    ap.add_argument("--in-flight", type=int, default=5)
    ap.add_argument("--model", choices=["tiny", "builtin"], default="tiny")
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-e2e-"))
    base = chest_ct(work / "ct", args.slices, args.size)
    top: dict[str, object] = {"inference": {"workers": 1, "torch_threads": 2}}
    if args.model == "tiny":
        write_body_model(work / "node" / "models", name="tiny-body", roi="[32, 128, 128]")
        rules = work / "node" / "rules.yaml"
        rules.write_text(
            "version: 1\nrules:\n  - name: chest-ct\n    when: {Modality: CT}\n"
            "    then: {model: tiny-body, deliver: [pacs]}\n"
        )
        top.update(rules=str(rules), models=[str(work / "node" / "models")])
    with start_orthanc(work / "pacs") as pacs:
        dest = {"type": "dimse", "host": "127.0.0.1", "port": pacs.dicom_port, "ae_title": pacs.aet}
        with start_node(
            work / "node", study={"stable_seconds": STABLE}, destinations={"pacs": dest}, **top
        ) as node:
            print(
                f"chest CT: {args.slices} x {args.size} x {args.size}, model={args.model},"
                f" stable window {STABLE} s"
            )
            rows = []
            for label, files in (("cold", base), ("warm", copy_study(base, work / "w"))):
                sent = storescu(node.dicom_port, files)
                acked = time.time()
                assert len(sent.acknowledged) == len(files), sent.output[-2000:]
                uid = study_uid(files)
                wait_until(lambda u=uid: finished(node, u), timeout=1800, what="delivered")
                rows.append((label, split(node, uid, acked)))
            keys = list(rows[0][1])
            print(f"{'seconds':<20}" + "".join(f"{label:>10}" for label, _ in rows))
            for k in keys:
                print(f"{k:<20}" + "".join(f"{r[k]:>10.2f}" for _, r in rows))
            for label, r in rows:
                share = r["overhead"] / r["end_to_end"] if r["end_to_end"] > 0 else float("nan")
                print(f"{label}: node overhead {r['overhead']:.2f} s = {share:.0%} of end to end")

            studies = [copy_study(base, work / f"f{i}") for i in range(args.in_flight)]
            t0 = time.time()
            procs = [
                subprocess.Popen(
                    [sys.executable, "-c", _SEND, str(node.dicom_port), *map(str, s)],
                    env={"PYTHONPATH": str(ROOT), "TCP_NODELAY": "1", "PATH": "/usr/bin:/bin"},
                )
                for s in studies
            ]
            for p in procs:
                p.wait()
            uids = [study_uid(s) for s in studies]
            wait_until(lambda: all(finished(node, u) for u in uids), timeout=3600, what="all")
            elapsed = time.time() - t0
            print(
                f"{args.in_flight} studies in flight: {elapsed:.1f} s from first send to last"
                f" delivery = {3600 * args.in_flight / elapsed:.0f} studies/hour"
                f" (includes the {STABLE:g} s stable window)"
            )
            assert node.proc is not None
            for name, rss in sorted(peak_rss(node.proc.pid).items()):
                print(f"peak RSS {name}: {rss / 2**20:.0f} MiB")


_SEND = (
    "import sys; from pathlib import Path; from tests.peers.dcmtk import storescu;"
    "storescu(int(sys.argv[1]), [Path(p) for p in sys.argv[2:]])"
)

if __name__ == "__main__":
    main()
