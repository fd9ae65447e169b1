"""``ainode jobs list|show|retry|cancel`` — the job queue of a node, read from its index."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from node.config import load_config
from node.jobs.store import JobStore
from node.types import JobState

app = typer.Typer(help="Inspect and steer the job queue (same as /api/jobs).", no_args_is_help=True)

ConfigOpt = Annotated[
    Path,
    typer.Option("--config", "-c", help="The node's config file (default ./ainode.yaml)."),
]


def _store(config_path: Path) -> JobStore:
    config = load_config(config_path if config_path.exists() else None)
    return JobStore(config.node.data_dir / "index.sqlite")


def _ts(value: float | None) -> str:
    if value is None:
        return "-"
    return dt.datetime.fromtimestamp(value, tz=dt.UTC).strftime("%Y-%m-%d %H:%M:%S")


@app.command("list")
def list_(
    config: ConfigOpt = Path("ainode.yaml"),
    study: Annotated[str | None, typer.Option(help="Only jobs of this Study Instance UID.")] = None,
    state: Annotated[list[JobState] | None, typer.Option(help="Only jobs in this state.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """List jobs, newest first."""
    states = list(state or [])
    records = _store(config).list_jobs(study_uid=study, states=states)
    if as_json:
        typer.echo(json.dumps([r.to_json() for r in records], indent=2))
        return
    table = Table("job", "model", "rule", "state", "attempts", "worker", "updated", "reason")
    for r in records:
        table.add_row(
            r.job.job_id,
            r.job.model,
            r.job.rule,
            r.state.value,
            str(r.attempts),
            r.worker or "",
            _ts(r.updated_at),
            r.reason or "",
        )
    Console().print(table)


@app.command()
def show(job_id: str, config: ConfigOpt = Path("ainode.yaml")) -> None:
    """Show one job with every state transition (JSON)."""
    store = _store(config)
    out = store.get(job_id).to_json()
    out["events"] = store.events(job_id)
    typer.echo(json.dumps(out, indent=2))


@app.command()
def retry(job_id: str, config: ConfigOpt = Path("ainode.yaml")) -> None:
    """Queue a failed, dead or cancelled job again."""
    _store(config).retry(job_id)
    typer.echo(f"{job_id}: queued")


@app.command()
def cancel(job_id: str, config: ConfigOpt = Path("ainode.yaml")) -> None:
    """Cancel a queued or running job."""
    _store(config).cancel(job_id)
    typer.echo(f"{job_id}: cancelled")
