"""``ainode studies list|show UID|complete UID`` (``--json`` for machines).

``list`` and ``show`` read the index under the config's ``data_dir`` directly (SQLite in WAL
mode: safe while the node runs).  ``complete`` asks the running node over HTTP
(``POST /api/studies/{uid}/complete``, so the completion is routed at once); when no node answers
on ``node.http_port`` it marks the study complete in the index itself, and the event is recorded
there (a node started later does not re-announce it).
"""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Annotated, Any

import typer

from node.cli import app
from node.cli.serve import config_from
from node.config import Config
from node.errors import AinodeError, NotFoundError

__all__ = ["studies_app"]

studies_app = typer.Typer(help="List, show and complete received studies.", no_args_is_help=True)
app.add_typer(studies_app, name="studies")

ConfigOpt = Annotated[
    Path | None, typer.Option("--config", "-c", help="YAML config file (default ./ainode.yaml)")
]
JsonOpt = Annotated[bool, typer.Option("--json", help="print JSON")]


def _index(cfg: Config) -> Any:
    from node.store.index import Index

    db = cfg.node.data_dir / "index.sqlite"
    if not db.is_file():
        raise NotFoundError(f"no index at {db}: has this node received anything yet?")
    return Index(db)


def _when(epoch: float | None) -> str:
    if epoch is None:
        return "-"
    return dt.datetime.fromtimestamp(epoch, dt.UTC).strftime("%Y-%m-%d %H:%M:%S")


@studies_app.command("list")
def list_(
    config: ConfigOpt = None,
    as_json: JsonOpt = False,
    limit: Annotated[int, typer.Option(min=1)] = 100,
    offset: Annotated[int, typer.Option(min=0)] = 0,
) -> None:
    """List received studies, most recent first."""
    index = _index(config_from(config))
    try:
        rows = index.list_studies(limit=limit, offset=offset)
    finally:
        index.close()
    if as_json:
        typer.echo(json.dumps(rows, indent=2))
        return
    typer.echo(f"{'STUDY UID':64}  {'STATE':8}  {'SER':>3}  {'INST':>5}  LAST RECEIVED (UTC)")
    for r in rows:
        typer.echo(
            f"{r['study_uid']:64}  {r['state']:8}  {r['series_count']:>3}  "
            f"{r['instance_count']:>5}  {_when(r['last_received'])}"
        )


@studies_app.command("show")
def show(study_uid: str, config: ConfigOpt = None, as_json: JsonOpt = False) -> None:
    """Show one study: state, series and events."""
    index = _index(config_from(config))
    try:
        row = index.study_row(study_uid)
        study = index.get_study(study_uid)
        if row is None or study is None:
            raise NotFoundError(f"study {study_uid} is not known to this node")
        events = index.events(study_uid)
    finally:
        index.close()
    series = [
        {
            "series_uid": s.series_uid,
            "modality": s.modality,
            "body_part": s.body_part,
            "series_description": s.series_description,
            "instance_count": s.instance_count,
        }
        for s in study.series
    ]
    if as_json:
        typer.echo(json.dumps(dict(row, series=series, events=events), indent=2))
        return
    typer.echo(f"study {study_uid}: {row['state']} (generation {row['generation']})")
    typer.echo(f"  received {_when(row['first_received'])} .. {_when(row['last_received'])}")
    for s in series:
        typer.echo(
            f"  series {s['series_uid']}  {s['modality'] or '-':4} {s['body_part'] or '-':10} "
            f"{s['instance_count']:>5} instance(s)"
        )
    counts: dict[str, int] = {}
    for e in events:
        counts[e["kind"]] = counts.get(e["kind"], 0) + 1
    typer.echo("  events: " + ", ".join(f"{k} {v}" for k, v in sorted(counts.items())))


def _complete_over_http(cfg: Config, study_uid: str) -> dict[str, Any] | None:
    """POST to the running node; None when no node answers."""
    import httpx

    from node.cli.pull import node_http

    base, headers, verify = node_http(cfg)
    url = f"{base}/api/studies/{study_uid}/complete"
    try:
        r = httpx.post(url, timeout=30, headers=headers, verify=verify)
    except httpx.TransportError:
        return None
    if r.status_code == 404:
        raise NotFoundError(f"study {study_uid} is not known to this node")
    if r.status_code >= 400:
        raise AinodeError(f"the node answered {r.status_code}: {r.text[:200]}")
    out: dict[str, Any] = r.json()
    return out


@studies_app.command("complete")
def complete(study_uid: str, config: ConfigOpt = None, as_json: JsonOpt = False) -> None:
    """Mark a study complete now (through the running node, else directly in the index)."""
    cfg = config_from(config)
    answer = _complete_over_http(cfg, study_uid)
    if answer is not None:
        changed = bool(answer.get("changed", True))
        generation = answer.get("generation")
        via = "node"
    else:
        index = _index(cfg)
        try:
            if index.study_row(study_uid) is None:
                raise NotFoundError(f"study {study_uid} is not known to this node")
            new = index.mark_complete(study_uid, forced=True)
            row = index.study_row(study_uid)
        finally:
            index.close()
        changed = new is not None
        generation = row["generation"] if row else None
        via = "index"
    if as_json:
        out = {"study_uid": study_uid, "changed": changed, "generation": generation, "via": via}
        typer.echo(json.dumps(out))
        return
    state = "completed" if changed else "was already complete"
    typer.echo(f"study {study_uid} {state} (generation {generation}, via {via})")
