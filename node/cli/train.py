"""``ainode train NAME|all``: retrain a built-in demo model on freshly generated phantoms."""

from __future__ import annotations

import json

import typer

from node.cli import app
from node.errors import NotFoundError

__all__ = ["train"]


@app.command()
def train(
    name: str = typer.Argument(..., help="demo model name (ainode models list) or 'all'"),
    seed: int = typer.Option(0, help="seed of training data, initialisation and held-out set"),
    steps: int | None = typer.Option(None, help="optimisation steps (default: the model's own)"),
    threads: int = typer.Option(1, help="torch CPU threads (1 is fastest on a shared machine)"),
) -> None:
    """Train a demo model on synthetic phantoms; writes its weights, metrics and model card."""
    from node.models.demo.train import MODELS
    from node.models.demo.train import train as run

    names = list(MODELS) if name == "all" else [name]
    for n in names:
        if n not in MODELS:
            raise NotFoundError(f"no demo model '{n}'; choose from {', '.join(MODELS)} or 'all'")
        folder = run(n, seed=seed, steps=steps, threads=threads)
        metrics = json.loads((folder / "metrics.json").read_text(encoding="utf-8"))
        typer.echo(f"{n}: held-out {json.dumps(metrics['heldout'])} -> {folder}")
