"""Splitting + qualification on headers only: a 1,000-instance MR study with 20 series.

Writes the study with pydicom (20 series x 50 single-frame MR instances: multi-echo, time series,
DWI, surveys, plain stacks), then times ``split_series`` + ``choose_volume`` against a 3D model's
requirements for every series, as the router does before it creates any job, and the reason a
series no rule routes gets (``no_model_reason`` against a CT and an MR model).  Also times
dcm2niix's own pass over the same files (``-b n`` without writing volumes is not available, so
it converts; the figure is for reference only).

Usage: PYTHONPATH=. python bench/split.py [--out DIR]
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

from node.imaging.split import split_series
from node.models.base import ModelInfo, OutputKind, Task
from node.routing.qualify import choose_volume, no_model_reason
from tests.imaging.synthetic import write_mr_frames


def _study(root: Path) -> list[list[Path]]:
    series = []
    for s in range(20):
        kind = s % 5
        if kind == 0:  # two echoes x 25 slices
            frames = [
                {"position": (-8.0, -8.0, k * 2.0), "echo": e} for e in (1, 2) for k in range(25)
            ]
        elif kind == 1:  # 5 time points x 10 slices
            frames = [
                {"position": (-8.0, -8.0, k * 3.0), "temporal": t}
                for t in range(1, 6)
                for k in range(10)
            ]
        elif kind == 2:  # DWI: b0 + 4 directions x 10 slices
            frames = [{"position": (-8.0, -8.0, k * 3.0), "b_value": 0} for k in range(10)] + [
                {"position": (-8.0, -8.0, k * 3.0), "b_value": 1000, "direction": d}
                for d in ((1, 0, 0), (0, 1, 0), (0, 0, 1), (0.577, 0.577, 0.577))
                for k in range(10)
            ]
        elif kind == 3:  # survey of 3 planes + a 41-slice sagittal
            frames = [
                {"position": (x * 2.0, -8.0, 8.0), "orientation": [0, 1, 0, 0, 0, -1]}
                for x in range(41)
            ] + [{"position": (-8.0, -8.0, z * 10.0)} for z in range(9)]
        else:  # one plain axial stack
            frames = [{"position": (-8.0, -8.0, k * 1.0)} for k in range(50)]
        series.append(write_mr_frames(root / f"s{s:02d}", frames, rows=64, cols=64))
    return series


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    root = args.out or Path(tempfile.mkdtemp(prefix="ainode-bench-split-"))
    series = _study(root)
    n = sum(len(s) for s in series)
    info = ModelInfo(
        name="mr-3d",
        version="1",
        task=Task.SEGMENTATION,
        outputs=(OutputKind.LABEL_MAP,),
        modalities=("MR",),
        min_slices=8,
    )
    ct_info = ModelInfo(
        name="ct-3d",
        version="1",
        task=Task.SEGMENTATION,
        outputs=(OutputKind.LABEL_MAP,),
        modalities=("CT",),
    )
    best = best_cpu = float("inf")
    for _ in range(3):
        t, c = time.perf_counter(), time.process_time()
        volumes = 0
        for paths in series:
            split = split_series(paths)
            volumes += len(split.volumes)
            choose_volume(
                split.volumes,
                dropped=[(d.sop_uid, d.reason) for d in split.dropped],
                refusal=info.refusal,
            )
            # the shipped rules send MR to no model: the router says why (no_rule / no_model)
            no_model_reason(split.volumes, {"ct-3d": ct_info.refusal, "mr-3d": info.refusal})
        best = min(best, time.perf_counter() - t)
        best_cpu = min(best_cpu, time.process_time() - c)
    print(f"instances: {n}, series: {len(series)}, volumes: {volumes}")
    print(
        f"ainode split + qualification (headers only): {best:.3f} s wall, {best_cpu:.3f} s CPU "
        f"(best of 3; on a busy machine the CPU time is the idle-machine figure), "
        f"load average {os.getloadavg()[0]:.1f}"
    )
    dcm2niix = shutil.which("dcm2niix")
    if dcm2niix:
        out = root / "nii"
        out.mkdir(exist_ok=True)
        t = time.perf_counter()
        subprocess.run(
            [dcm2niix, "-b", "n", "-z", "n", "-o", str(out), str(root)],
            capture_output=True,
            check=False,
        )
        ref = time.perf_counter() - t
        print(f"dcm2niix conversion of the same files (reference): {ref:.3f} s")
        print(f"ratio ainode / dcm2niix: {best / ref:.2f}")
    if args.out is None:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
