"""Benchmark: ``chest-ct-register`` against its SimpleITK baseline on two 300-slice chest CTs.

A synthetic follow-up pair (``node.samples.followup``, known prior -> current affine) is rendered
at 2.5 x 2 x 2 mm, then both volumes are interpolated (linear) onto ``--slices`` x 512 x 512
grids covering the same field of view (about 0.7 mm slices, 0.66 mm pixels), so the landmarks
keep their patient coordinates.  Prints, per method, the wall-clock seconds of ``register``
(input resampling included, volumes already in memory) and the TRE (median / max, mm) over the
pair's landmarks, with the machine's load (``os.getloadavg``).

The model runs twice: the network alone (``refine=()``) and the shipped configuration (network
plus intensity refinement), with the seconds of each step.

Run: ``PYTHONPATH=. .venv/bin/python bench/registration.py [--slices 300] [--threads 2]``.
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np
import torch
from scipy import ndimage

from node.models.builtin.ct_register import ChestCtRegistration
from node.samples.followup import make_followup_pair
from node.samples.phantoms import ChestPhantom
from node.types import Volume
from training.baseline_register import register_baseline
from training.train_registration import tre_mm
from training.volumes import ct_volume


def _upsampled(phantom: ChestPhantom, slices: int, *, seed: int) -> Volume:
    shape = (slices, 512, 512)
    factors = [n / o for n, o in zip(shape, phantom.hu.shape, strict=True)]
    hu = ndimage.zoom(phantom.hu, factors, order=1, grid_mode=False).astype(np.float32)
    spacing = tuple(
        s * (o - 1) / (n - 1)
        for s, o, n in zip(phantom.spacing, phantom.hu.shape, hu.shape, strict=True)
    )
    vol = ct_volume(phantom, seed=seed)
    return Volume(
        voxels=hu,
        spacing=(spacing[0], spacing[1], spacing[2]),
        origin=vol.origin,
        direction=vol.direction,
        sources=vol.sources[:1] * slices,
        study_uid=vol.study_uid,
        series_uid=vol.series_uid,
        modality="CT",
        body_part="CHEST",
        frame_of_reference_uid=vol.frame_of_reference_uid,
    )


def main() -> None:
    """Command-line entry point."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--slices", type=int, default=300)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=8_000_001)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    pair = make_followup_pair(args.seed)
    t0 = time.perf_counter()
    fixed = _upsampled(pair.current, args.slices, seed=1)
    moving = _upsampled(pair.prior, args.slices, seed=2)
    print(
        f"volumes {fixed.voxels.shape} spacing {tuple(round(s, 3) for s in fixed.spacing)} mm, "
        f"prepared in {time.perf_counter() - t0:.1f} s; load {os.getloadavg()}",
        flush=True,
    )
    model = ChestCtRegistration()
    model.register(moving, fixed, refine=())  # weights loaded once, not timed below
    steps: dict[str, float] = {}

    def learned(**kwargs: object) -> np.ndarray:
        registration = model.register(moving, fixed, **kwargs)  # type: ignore[arg-type]
        steps.clear()
        steps.update(registration.timings_seconds)
        return registration.moving_to_fixed

    for name, run in (
        ("chest-ct-register (network alone)", lambda: learned(refine=())),
        ("chest-ct-register", learned),
        ("SimpleITK baseline", lambda: register_baseline(moving, fixed)),
    ):
        t = time.perf_counter()
        matrix = run()
        seconds = time.perf_counter() - t
        tre = tre_mm(matrix, pair.landmarks_prior, pair.landmarks_current)
        print(
            f"{name}: {seconds:.1f} s, TRE median {np.median(tre):.2f} mm, max {tre.max():.2f} mm "
            f"({len(tre)} landmarks); load {os.getloadavg()}",
            flush=True,
        )
        if name.startswith("chest-ct-register") and steps:
            print("  steps: " + ", ".join(f"{k} {v:.1f} s" for k, v in steps.items()), flush=True)
            steps.clear()


if __name__ == "__main__":
    main()
