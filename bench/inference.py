"""Benchmark: series loading and model inference on a synthetic 300-slice 512x512 CT.

Prints, each measured in its own fresh process (so peaks do not mix):

* loader: ``node.imaging.load_volume`` (int16 HU and float32) vs a naive pydicom reference
  (read every dataset, stack rescaled float32 slices): time, tracemalloc peak and peak-RSS growth,
  as ratios of the int16 volume size (issue 5 target: peak <= 2x);
* every model (built-ins, ``--config`` models, and a representative MONAI UNet of ~150 k
  parameters written as TorchScript + sidecar with 96^3 sliding windows at 2 mm): network load /
  preprocess / forward / postprocess seconds and the worker's peak RSS, on CPU with
  ``--threads`` torch threads.

Run: ``PYTHONPATH=. .venv/bin/python bench/inference.py [--slices 300] [--threads 2]``.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import textwrap
import time
import tracemalloc
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
UNET_NAME = "bench-unet-150k"


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


# ---------------------------------------------------------------- children (one per measurement)
def child_load(folder: Path, mode: str) -> dict[str, Any]:
    import numpy as np
    import pydicom

    from node.imaging import dicom_files, load_volume

    files = dicom_files([folder])
    base_rss = _rss_mb()
    tracemalloc.start()
    start = time.perf_counter()
    if mode == "naive":
        slices = []
        for f in files:
            ds = pydicom.dcmread(f)
            slices.append(
                ds.pixel_array.astype(np.float32) * float(ds.RescaleSlope)
                + float(ds.RescaleIntercept)
            )
        voxels = np.stack(slices)
        del slices
    else:
        voxels = load_volume(files, dtype="float32" if mode == "float32" else "auto").voxels
    seconds = time.perf_counter() - start
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return {
        "seconds": seconds,
        "tracemalloc_peak_bytes": peak,
        "rss_growth_mb": _rss_mb() - base_rss,
        "shape": list(voxels.shape),
        "dtype": str(voxels.dtype),
    }


def child_model(
    name: str, folder: Path, model_paths: list[str], threads: int, *, warm_call: bool = True
) -> dict[str, Any]:
    from node.imaging import dicom_files, load_volume
    from node.models.network import NetworkModel
    from node.models.registry import discover
    from node.models.runtime import configure_threads

    configure_threads(threads)
    registry = discover([Path(p) for p in model_paths], device="cpu")
    model = registry.get(name)
    start = time.perf_counter()
    volume = load_volume(dicom_files([folder]))
    load_volume_s = time.perf_counter() - start
    timings: dict[str, float] = {"load_volume": load_volume_s}
    start = time.perf_counter()
    if isinstance(model, NetworkModel):
        model.load()
    timings["load"] = time.perf_counter() - start
    reason = model.accepts(volume)
    if reason is not None:
        return {"skipped": reason}
    start = time.perf_counter()
    prediction = model.predict(volume)
    timings["predict_total"] = time.perf_counter() - start
    for key, value in prediction.timings_seconds.items():
        timings[key] = timings.get(key, 0.0) + value
    if warm_call:  # TorchScript optimises during its first calls
        timings["forward_warm"] = model.predict(volume).timings_seconds.get("forward", 0.0)
    result: dict[str, Any] = {"timings": timings, "peak_rss_mb": _rss_mb(), "task": prediction.task}
    if isinstance(model, NetworkModel) and model.spec.roi_size:
        result["window"] = _window_reference(model, volume)
    return result


def _window_reference(model: Any, volume: Any) -> dict[str, Any]:
    """Reference in the same process: one bare network call on one window, and the window count."""
    import math
    import statistics

    import torch

    from node.imaging import resampled_shape

    roi = model.spec.roi_size
    shape = resampled_shape(
        volume.voxels.shape, volume.spacing, model.spec.spacing or volume.spacing
    )
    windows = 1
    for n, r in zip(shape, roi, strict=True):
        stride = max(1, int(r * (1 - model.spec.overlap)))
        windows *= math.ceil(max(n - r, 0) / stride) + 1
    net = model.load()
    x = torch.rand(1, 1, *roi)
    times = []
    with torch.inference_mode():
        for _ in range(3):
            start = time.perf_counter()
            net(x)
            times.append(time.perf_counter() - start)
    return {"windows": windows, "seconds_per_window": statistics.median(times), "shape": shape}


# ---------------------------------------------------------------- parent
def _chest_pixels(slices: int, size: int) -> Callable[[int, int, int], Any]:
    """Slices of a demo chest phantom (``node.samples.phantoms``) for ``write_ct_series``.

    The scene is rendered once at 2.8 mm (cheap) and each 0.7 mm slice is interpolated from it
    with fresh 15 HU noise, so a 300 x 512 x 512 series is written without a 1 GiB render.
    """
    import numpy as np
    from scipy import ndimage

    from node.samples.phantoms import make_chest_scene, render_scene

    rng = np.random.default_rng(7)
    scene = make_chest_scene(rng, n_nodules=4)
    coarse_mm = 2.8
    hu = render_scene(scene, (coarse_mm, coarse_mm, coarse_mm), rng=rng).hu
    scale = 0.7 / coarse_mm
    noise = np.random.default_rng(8)

    def pixels(k: int, rows: int, cols: int) -> Any:
        z = min(k * scale, hu.shape[0] - 1.0)
        rr, cc = np.meshgrid(
            np.arange(rows) * scale * size / rows,
            np.arange(cols) * scale * size / cols,
            indexing="ij",
        )
        sl = ndimage.map_coordinates(hu, [np.full_like(rr, z), rr, cc], order=1, mode="nearest")
        sl = sl + noise.normal(scale=15.0, size=sl.shape)
        return (np.clip(sl, -1024, 3071) + 1024).astype(np.int16)

    del slices
    return pixels


def _run_child(args: list[str]) -> dict[str, Any]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    out = subprocess.run(
        [sys.executable, __file__, "--child", *args],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    if out.returncode != 0:
        return {"error": out.stderr.strip().splitlines()[-1] if out.stderr else "failed"}
    result: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


def _write_unet(models: Path) -> None:
    import torch
    from monai.networks.nets.unet import UNet

    models.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    net = UNet(3, 1, 3, channels=(8, 16, 32, 64), strides=(2, 2, 2), num_res_units=1).eval()
    params = sum(p.numel() for p in net.parameters())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # TorchScript is deprecated in 2.13
        torch.jit.save(torch.jit.script(net), str(models / f"{UNET_NAME}.ts"))
    (models / f"{UNET_NAME}.yaml").write_text(
        textwrap.dedent(
            f"""\
            name: {UNET_NAME}
            version: "0"
            task: segmentation
            description: random-weight MONAI UNet, {params} parameters (timing only)
            modalities: [CT]
            spacing: [2.0, 2.0, 2.0]
            normalise: {{kind: window, center: -600, width: 1500}}
            roi_size: [96, 96, 96]
            overlap: 0.25
            labels: {{1: {{name: Lung}}, 2: {{name: Nodule}}}}
            """
        ),
        encoding="utf-8",
    )
    print(f"representative model: MONAI UNet, {params} parameters, 96^3 windows at 2 mm")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--slices", type=int, default=300)
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--config", type=Path, help="node config whose 'models' are included")
    parser.add_argument(
        "--models", nargs="*", help="only these model names ('builtin': every built-in demo model)"
    )
    parser.add_argument(
        "--phantom",
        choices=("chest", "simple"),
        default="chest",
        help="chest: demo chest phantom with nodules (0.7 mm voxels); simple: two-ellipse slices",
    )
    parser.add_argument("--skip-loader", action="store_true", help="models only")
    parser.add_argument("--no-warm", action="store_true", help="no second (warm) predict call")
    parser.add_argument("--child", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        kind = args.child[0]
        if kind == "load":
            result = child_load(Path(args.child[1]), args.child[2])
        else:
            name, folder, threads = args.child[1], Path(args.child[2]), int(args.child[3])
            warm = args.child[4] == "warm"
            result = child_model(name, folder, args.child[5:], threads, warm_call=warm)
        print(json.dumps(result))
        return

    sys.path.insert(0, str(ROOT))
    from node.config import load_config
    from tests.imaging.synthetic import write_ct_series

    with tempfile.TemporaryDirectory(prefix="ainode-bench-") as tmp:
        work = Path(tmp)
        series = work / "series"
        start = time.perf_counter()
        spacing = (0.7, 0.7, 0.7) if args.phantom == "chest" else (1.0, 0.7, 0.7)
        extra: dict[str, Any] = {}
        if args.phantom == "chest":
            extra["pixels"] = _chest_pixels(args.slices, args.size)
        write_ct_series(
            series, slices=args.slices, rows=args.size, cols=args.size, spacing=spacing, **extra
        )
        int16_mb = args.slices * args.size * args.size * 2 / 2**20
        print(
            f"synthetic {args.phantom} CT: {args.slices} x {args.size} x {args.size}, "
            f"{' x '.join(f'{s:g}' for s in spacing)} mm, int16 volume {int16_mb:.0f} MiB "
            f"(written in {time.perf_counter() - start:.1f} s)"
        )
        if args.skip_loader:
            print("\nloader: skipped (--skip-loader)")
        else:
            print(
                "\nloader (fresh process each)                seconds  tracemalloc-peak  RSS-growth"
            )
        for mode in () if args.skip_loader else ("auto", "float32", "naive"):
            r = _run_child(["load", str(series), mode])
            if "error" in r:
                print(f"  {mode:<40} ERROR {r['error']}")
                continue
            label = {
                "auto": f"load_volume (dtype={r['dtype']})",
                "float32": "load_volume (dtype=float32)",
                "naive": "reference: pydicom read-all + np.stack",
            }[mode]
            peak = r["tracemalloc_peak_bytes"] / 2**20
            print(
                f"  {label:<40} {r['seconds']:7.2f}  {peak / int16_mb:5.2f}x ({peak:5.0f} MiB)"
                f"  {r['rss_growth_mb'] / int16_mb:5.2f}x ({r['rss_growth_mb']:5.0f} MiB)"
            )

        models_dir = work / "models"
        _write_unet(models_dir)
        model_paths = [str(models_dir)]
        if args.config:
            model_paths += [str(p) for p in load_config(args.config).models]
        from node.models.registry import discover

        registry = discover([Path(p) for p in model_paths], device="cpu")
        names = args.models or registry.names()
        if names == ["builtin"]:
            from node.models.builtin import builtin_models

            names = [m.info.name for m in builtin_models()]
        print(
            f"\nmodels (CPU, {args.threads} torch threads; seconds)"
            "\n  name                       load   preproc  forward  postproc  other  total"
            "  peak-RSS   (forward: 1st call; warm = 2nd call; other: e.g. a classifier step)"
        )
        for name in names:
            warm = "cold" if args.no_warm else "warm"
            r = _run_child(["model", name, str(series), str(args.threads), warm, *model_paths])
            if "error" in r or "skipped" in r:
                print(f"  {name:<26} {r.get('error') or 'skipped: ' + r['skipped']}")
                continue
            t = r["timings"]
            split = ("load", "preprocess", "forward", "postprocess")
            bookkeeping = ("load_volume", "predict_total", "forward_warm")
            other = sum(v for k, v in t.items() if k not in split + bookkeeping)
            total = sum(t.get(k, 0.0) for k in split) + other
            print(
                f"  {name:<26} {t.get('load', 0):5.2f}  {t.get('preprocess', 0):7.2f}"
                f"  {t.get('forward', 0):7.2f}  {t.get('postprocess', 0):8.2f}  {other:5.2f}"
                f"  {total:5.2f}"
                f"  {r['peak_rss_mb']:6.0f} MiB   (volume load {t['load_volume']:.2f} s, "
                f"forward warm {t.get('forward_warm', float('nan')):.2f} s)"
            )
            w = r.get("window")
            if w:
                bare = w["windows"] * w["seconds_per_window"]
                print(
                    f"    reference: {w['windows']} windows x bare network call "
                    f"{w['seconds_per_window']:.2f} s = {bare:.1f} s on {w['shape']} voxels; "
                    f"warm forward / reference = {t.get('forward_warm', 0) / bare:.2f}"
                )


if __name__ == "__main__":
    main()
