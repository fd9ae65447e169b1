"""``ainode feedback list`` — radiologists' verdicts on results, read from the node's index."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from node.config import load_config
from node.store.feedback import VERDICTS, FeedbackStore

app = typer.Typer(
    help="Radiologist feedback on results (same as GET /api/feedback).", no_args_is_help=True
)

ConfigOpt = Annotated[
    Path,
    typer.Option("--config", "-c", help="The node's config file (default ./ainode.yaml)."),
]


@app.command("list")
def list_(
    config: ConfigOpt = Path("ainode.yaml"),
    study: Annotated[str | None, typer.Option(help="Only feedback on this study.")] = None,
    model: Annotated[str | None, typer.Option(help="Only feedback on this model.")] = None,
    verdict: Annotated[
        str | None, typer.Option(help=f"Only this verdict ({', '.join(VERDICTS)}).")
    ] = None,
    limit: Annotated[int, typer.Option(min=1, help="At most this many, newest first.")] = 200,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print JSON (comments included).")
    ] = False,
) -> None:
    """List verdicts, newest first (the table leaves comments out: they may name the patient)."""
    if verdict is not None and verdict not in VERDICTS:
        typer.echo(f"ainode: error: --verdict must be one of {', '.join(VERDICTS)}", err=True)
        raise typer.Exit(2)
    cfg = load_config(config if config.exists() else None)
    store = FeedbackStore(cfg.node.data_dir / "index.sqlite")
    rows = store.list(study_uid=study, model=model, verdict=verdict, limit=limit)
    if as_json:
        typer.echo(json.dumps([r.to_json() for r in rows], indent=2))
        return
    table = Table("id", "time", "actor", "verdict", "model", "version", "job", "object", "finding")
    for r in rows:
        table.add_row(
            str(r.id),
            dt.datetime.fromtimestamp(r.created_at, tz=dt.UTC).strftime("%Y-%m-%d %H:%M:%S"),
            r.actor,
            r.verdict,
            r.model,
            r.model_version or "",
            r.job_id,
            r.sop_uid,
            r.finding_id or "",
        )
    Console().print(table)
