"""``ainode deliveries list [--json]`` and ``ainode deliveries retry ID | --all-dead``.

Both work on the outbox tables in ``data_dir/index.sqlite`` directly (SQLite WAL: safe while the
node runs); a running node's delivery workers look at the table at least every two seconds, so a
retried row is sent without restarting anything.
"""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from node.cli import app
from node.config import Config, load_config
from node.errors import AinodeError, NotFoundError
from node.types import DeliveryState

if TYPE_CHECKING:
    from node.delivery.outbox import Outbox

__all__ = ["deliveries_app"]

deliveries_app = typer.Typer(
    help="List result deliveries (outbox) and retry dead-lettered ones.", no_args_is_help=True
)
app.add_typer(deliveries_app, name="deliveries")

DEFAULT_CONFIG = Path("ainode.yaml")
ConfigOpt = Annotated[
    Path | None, typer.Option("--config", "-c", help="YAML config file (default ./ainode.yaml)")
]


def config_from(path: Path | None) -> Config:
    """The config at ``path``; without ``--config``, ./ainode.yaml if present, else defaults."""
    if path is None:
        return load_config(DEFAULT_CONFIG if DEFAULT_CONFIG.is_file() else None)
    return load_config(path)


def open_outbox(cfg: Config) -> Outbox:
    """The node's outbox (no workers started)."""
    from node.delivery.outbox import Outbox  # pydicom loads only when needed

    db = cfg.node.data_dir / "index.sqlite"
    if not db.is_file():
        raise NotFoundError(f"no index at {db}: has this node run yet? (check node.data_dir)")
    return Outbox.from_config(cfg)


def _when(epoch: float | None) -> str:
    if epoch is None:
        return "-"
    return dt.datetime.fromtimestamp(epoch, dt.UTC).strftime("%Y-%m-%d %H:%M:%S")


@deliveries_app.command("list")
def list_(
    config: ConfigOpt = None,
    as_json: Annotated[bool, typer.Option("--json", help="print JSON")] = False,
    state: Annotated[str | None, typer.Option(help="pending, delivered or dead")] = None,
    destination: Annotated[str | None, typer.Option(help="only this destination")] = None,
    study: Annotated[str | None, typer.Option(help="only this Study Instance UID")] = None,
    limit: Annotated[int, typer.Option(min=1)] = 200,
) -> None:
    """List deliveries, newest first, with attempts and the peer's last status."""
    if state is not None and state not in {s.value for s in DeliveryState}:
        raise AinodeError(f"--state must be pending, delivered or dead, not '{state}'")
    box = open_outbox(config_from(config))
    try:
        rows = box.list(state=state, destination=destination, study_uid=study, limit=limit)
    finally:
        box.close()
    if as_json:
        typer.echo(json.dumps([r.to_json() for r in rows], indent=2))
        return
    typer.echo(
        f"{'ID':>6}  {'DESTINATION':14}  {'STATE':9}  {'TRIES':>5}  {'UPDATED (UTC)':19}  "
        "SOP INSTANCE UID / LAST ERROR"
    )
    for r in rows:
        typer.echo(
            f"{r.id:>6}  {r.destination[:14]:14}  {r.state.value:9}  {r.attempts:>5}  "
            f"{_when(r.updated_at):19}  {r.sop_uid}"
        )
        if r.last_error and r.state is not DeliveryState.DELIVERED:
            typer.echo(f"{'':>6}  {r.last_error}")


@deliveries_app.command("retry")
def retry(
    delivery_id: Annotated[int | None, typer.Argument(help="row id from 'deliveries list'")] = None,
    all_dead: Annotated[bool, typer.Option("--all-dead", help="retry every dead row")] = False,
    destination: Annotated[
        str | None, typer.Option(help="with --all-dead: only this destination")
    ] = None,
    config: ConfigOpt = None,
) -> None:
    """Put a dead-lettered delivery (or all of them) back in the queue, attempts reset."""
    if (delivery_id is None) == (not all_dead):
        raise AinodeError("give either a delivery ID or --all-dead")
    box = open_outbox(config_from(config))
    try:
        if all_dead:
            n = box.retry_dead(destination=destination)
            typer.echo(f"{n} dead deliveries queued again")
        else:
            assert delivery_id is not None
            row = box.retry(delivery_id)
            typer.echo(f"delivery {row.id} to '{row.destination}' queued again")
    finally:
        box.close()
