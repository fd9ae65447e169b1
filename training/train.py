"""Train the built-in demo models on freshly generated phantoms and write weights + model cards.

``python -m training NAME|all [--seed N] [--steps N] [--threads N] [--data N]``, from a checkout
(``training/`` is not installed with ainode).

Training is deterministic for a given seed and thread count (default 1 CPU thread).  After
training, the model is evaluated on a separate held-out set generated from different seeds, and
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

from node.models.builtin import BUILTIN_NAMES
from node.models.builtin._common import ASSETS
from training import cards

__all__ = ["MODELS", "heldout_seeds", "main", "reevaluate", "rewrite_card", "train"]

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


def _save(
    name: str, result: TrainResult, *, seed: int, steps: int, seconds: float, threads: int = 1
) -> Path:
    folder = ASSETS / name
    folder.mkdir(parents=True, exist_ok=True)
    if result.state_dict is not None:
        torch.save(result.state_dict, folder / "weights.pt")
    thresholds = cards.thresholds(name, result.heldout)
    metrics = {
        "heldout": {k: round(float(v), 4) for k, v in result.heldout.items()},
        "thresholds": thresholds,
        "training": {
            "seed": seed,
            "threads": threads,
            "steps": steps,
            "seconds": round(seconds, 1),
            **{k: v for k, v in result.facts.items() if k != "scorer"},
        },
    }
    for key in ("operating_point", "scorer"):
        if key in result.facts:
            metrics[key] = result.facts[key]
    (folder / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n", encoding="utf-8")
    (folder / "MODEL_CARD.md").write_text(cards.render(name, metrics), encoding="utf-8")
    return folder


def _trainers() -> dict[str, Callable[[int, int | None], TrainResult]]:
    from training import train_models, train_registration

    return {
        "lung-nodule-seg": train_models.train_segmentation,
        "lung-nodule-detect": train_models.calibrate_detection,
        "lung-nodule-classify": train_models.train_classifier,
        "ct-denoise": train_models.train_denoiser,
        "cxr-classify": train_models.train_cxr,
        "report-text": train_models.evaluate_report,
        "chest-ct-register": train_registration.train_registration,
    }


#: Trainers whose training-set size ``--data`` sets.
_SIZED = frozenset({"lung-nodule-seg", "lung-nodule-classify", "cxr-classify"})

#: Every built-in demo model is trained (or calibrated) here.
MODELS = BUILTIN_NAMES


def train(
    name: str,
    *,
    seed: int = 0,
    steps: int | None = None,
    threads: int = 1,
    resume: bool = False,
    data: int | None = None,
) -> Path:
    """Train (or calibrate) one demo model, evaluate it on held-out phantoms, write its assets.

    Parameters
    ----------
    name
        One of ``MODELS``.
    seed
        Seed of training data, initialisation and held-out set.
    steps
        Optimisation steps (None: the model's default).
    threads
        Torch CPU threads.  1 by default: on a shared 2-core machine two OpenMP threads spin
        against other processes and ran 8x slower per step than one (measured).
    resume
        Continue from the committed weights (second training stage; lung-nodule-seg only).
    data
        Size of the generated training set (phantoms for lung-nodule-seg, nodule crops for
        lung-nodule-classify, radiographs for cxr-classify); None: the model's default.

    Returns
    -------
    Path
        The model's asset folder.
    """
    if name not in MODELS:
        raise ValueError(f"unknown demo model '{name}'; choose from {', '.join(MODELS)}")
    if resume and name not in ("lung-nodule-seg", "chest-ct-register"):
        raise ValueError("--resume is only supported for lung-nodule-seg and chest-ct-register")
    torch.set_num_threads(threads)
    torch.manual_seed(seed)
    np.random.seed(seed)
    t0 = time.perf_counter()
    if resume and name == "chest-ct-register":
        from training import train_registration

        result = train_registration.train_registration(seed, steps, resume=True)
    elif resume:
        from training import train_models

        result = train_models.train_segmentation(seed, steps, resume=True, data=data)
    elif data is not None and name in _SIZED:
        result = _trainers()[name](seed, steps, data=data)  # type: ignore[call-arg]  # sized ones
    else:
        result = _trainers()[name](seed, steps)
    seconds = time.perf_counter() - t0
    folder = _save(
        name, result, seed=seed, steps=int(result.facts.get("steps", 0)), seconds=seconds
    )
    log.info("demo.trained", extra={"model": name, "seconds": round(seconds, 1)})
    return folder


def reevaluate(name: str, *, seed: int = 0, threads: int = 1) -> Path:
    """Recompute the held-out metrics of the committed weights; rewrite metrics.json and card.

    Training facts (steps, time, operating point) are kept from the existing metrics.json.
    """
    from training import train_models

    torch.set_num_threads(threads)
    folder = ASSETS / name
    old = json.loads((folder / "metrics.json").read_text(encoding="utf-8"))
    heldout = train_models.reevaluate(name, seed)
    facts = {k: v for k, v in old.get("training", {}).items() if k not in ("seed", "threads")}
    for key in ("operating_point", "scorer"):
        if key in old:
            facts[key] = old[key]
    result = TrainResult(state_dict=None, heldout=heldout, facts=facts)
    return _save(
        name,
        result,
        seed=seed,
        steps=int(facts.get("steps", 0)),
        seconds=float(facts.get("seconds", 0.0)),
        threads=int(old.get("training", {}).get("threads", threads)),
    )


def rewrite_card(name: str) -> Path:
    """Recompute the test thresholds from the stored held-out metrics; rewrite metrics and card."""
    folder = ASSETS / name
    metrics = json.loads((folder / "metrics.json").read_text(encoding="utf-8"))
    metrics["thresholds"] = cards.thresholds(name, metrics.get("heldout", {}))
    (folder / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n", encoding="utf-8")
    (folder / "MODEL_CARD.md").write_text(cards.render(name, metrics), encoding="utf-8")
    return folder


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point."""
    parser = argparse.ArgumentParser(prog="python -m training", description=__doc__)
    parser.add_argument("name", help="model name or 'all'")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--steps", type=int, default=None)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument(
        "--data",
        type=int,
        default=None,
        help="training-set size (phantoms, nodule crops or radiographs; default: the model's)",
    )
    parser.add_argument(
        "--evaluate-only",
        action="store_true",
        help="re-measure the committed weights on the held-out set; no training",
    )
    parser.add_argument(
        "--cards-only",
        action="store_true",
        help="rewrite thresholds and MODEL_CARD.md from the stored metrics; no training",
    )
    parser.add_argument(
        "--resume",
        action="store_true",
        help="continue training from the committed weights (lung-nodule-seg stage 2)",
    )
    args = parser.parse_args(argv)
    names = list(MODELS) if args.name == "all" else [args.name]
    for name in names:
        if name not in MODELS:
            parser.error(f"unknown demo model '{name}'; choose from {', '.join(MODELS)} or 'all'")
    for name in names:
        if args.cards_only:
            folder = rewrite_card(name)
        elif args.evaluate_only:
            folder = reevaluate(name, seed=args.seed, threads=args.threads)
        else:
            folder = train(
                name,
                seed=args.seed,
                steps=args.steps,
                threads=args.threads,
                resume=args.resume,
                data=args.data,
            )
        metrics = json.loads((folder / "metrics.json").read_text(encoding="utf-8"))
        print(f"{name}: {json.dumps(metrics['heldout'])}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
