"""Train the built-in demo models on freshly generated phantoms and write weights + model cards.

``python -m node.models.demo.train NAME|all [--seed N] [--steps N]``

Training is deterministic for a given seed and thread count (2 CPU threads).  After training, the
model is evaluated on a separate held-out set generated from different seeds, and
``assets/<name>/metrics.json`` and ``MODEL_CARD.md`` are rewritten with the measured values.
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from node.models.builtin._common import ASSETS
from node.models.demo import cards

__all__ = ["MODELS", "heldout_seeds", "main", "train"]

log = logging.getLogger(__name__)


def heldout_seeds(seed: int, count: int, *, base: int = 900_000) -> list[int]:
    """Seeds of a held-out set: far from every training seed (training uses seed * 100_000 + i)."""
    return [base + seed * 1_000 + i for i in range(count)]


@dataclass(frozen=True, slots=True)
class TrainResult:
    """What a trainer hands back: weights, held-out metrics and facts for the card."""

    state_dict: dict[str, torch.Tensor] | None
    heldout: dict[str, float]
    facts: dict[str, Any]


def _save(name: str, result: TrainResult, *, seed: int, steps: int, seconds: float) -> Path:
    folder = ASSETS / name
    folder.mkdir(parents=True, exist_ok=True)
    if result.state_dict is not None:
        torch.save(result.state_dict, folder / "weights.pt")
    thresholds = cards.thresholds(name, result.heldout)
    metrics = {
        "heldout": {k: round(float(v), 4) for k, v in result.heldout.items()},
        "thresholds": thresholds,
        "training": {"seed": seed, "steps": steps, "seconds": round(seconds, 1), **result.facts},
    }
    if "operating_point" in result.facts:
        metrics["operating_point"] = result.facts["operating_point"]
    (folder / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n", encoding="utf-8")
    (folder / "MODEL_CARD.md").write_text(cards.render(name, metrics), encoding="utf-8")
    return folder


def _trainers() -> dict[str, Callable[[int, int | None], TrainResult]]:
    from node.models.demo import train_models

    return {
        "lung-nodule-seg": train_models.train_segmentation,
        "lung-nodule-detect": train_models.calibrate_detection,
        "lung-nodule-classify": train_models.train_classifier,
        "ct-denoise": train_models.train_denoiser,
        "cxr-classify": train_models.train_cxr,
        "report-text": train_models.evaluate_report,
    }


MODELS = (
    "lung-nodule-seg",
    "lung-nodule-detect",
    "lung-nodule-classify",
    "ct-denoise",
    "cxr-classify",
    "report-text",
)


def train(name: str, *, seed: int = 0, steps: int | None = None) -> Path:
    """Train (or calibrate) one demo model, evaluate it on held-out phantoms, write its assets.

    Parameters
    ----------
    name
        One of ``MODELS``.
    seed
        Seed of training data, initialisation and held-out set.
    steps
        Optimisation steps (None: the model's default).

    Returns
    -------
    Path
        The model's asset folder.
    """
    if name not in MODELS:
        raise ValueError(f"unknown demo model '{name}'; choose from {', '.join(MODELS)}")
    torch.set_num_threads(2)
    torch.manual_seed(seed)
    np.random.seed(seed)
    t0 = time.perf_counter()
    result = _trainers()[name](seed, steps)
    seconds = time.perf_counter() - t0
    folder = _save(
        name, result, seed=seed, steps=int(result.facts.get("steps", 0)), seconds=seconds
    )
    log.info("demo.trained", extra={"model": name, "seconds": round(seconds, 1)})
    return folder


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point."""
    parser = argparse.ArgumentParser(prog="python -m node.models.demo.train", description=__doc__)
    parser.add_argument("name", help="model name or 'all'")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--steps", type=int, default=None)
    args = parser.parse_args(argv)
    names = list(MODELS) if args.name == "all" else [args.name]
    for name in names:
        if name not in MODELS:
            parser.error(f"unknown demo model '{name}'; choose from {', '.join(MODELS)} or 'all'")
    for name in names:
        folder = train(name, seed=args.seed, steps=args.steps)
        metrics = json.loads((folder / "metrics.json").read_text(encoding="utf-8"))
        print(f"{name}: {json.dumps(metrics['heldout'])}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
