"""``ainode results retract|rejections`` — withdraw result sets, list what was rejected.

Same as ``POST /api/results/retract`` and ``GET /api/results/rejections``: the command works on
the node's index (``--config``); a running node's outbox sends the rejection note within its
poll interval (a couple of seconds).  A retraction is audited as ``results.retracted`` with the
actor ``cli:OS-USER``.
"""

from __future__ import annotations

import datetime as dt
import getpass
import json
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from node.cli.deliveries import config_from, open_outbox

app: typer.Typer = typer.Typer(
    help="Result lifecycle: retract result sets, list rejections (same as /api/results).",
    no_args_is_help=True,
)

ConfigOpt = Annotated[
    Path | None,
    typer.Option("--config", "-c", help="The node's config file (default ./ainode.yaml)."),
]


@app.command("retract")
def retract(
    uid: Annotated[
        str,
        typer.Argument(
            help="A job id, or the SOP Instance UID or Series Instance UID of any object of "
            "the result set (the job's whole set is retracted)."
        ),
    ],
    reason: Annotated[str, typer.Option(help="Why the result is withdrawn (required).")],
    config: ConfigOpt = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the rejection as JSON.")] = False,
) -> None:
    """Retract a result set: an IOCM rejection note to every destination that received it,
    REST delete on Orthancs with delete_rejected; queued copies are never sent."""
    from node.audit import AuditLog
    from node.delivery.rejections import REASON_MAX, Rejections

    if not reason.strip() or len(reason) > REASON_MAX:
        typer.echo(f"ainode: error: --reason needs 1 to {REASON_MAX} characters", err=True)
        raise typer.Exit(2)
    cfg = config_from(config)
    actor = f"cli:{getpass.getuser()}"
    outbox = open_outbox(cfg)
    rejections = Rejections(outbox, data_dir=cfg.node.data_dir)
    audit = AuditLog(cfg.node.data_dir)
    try:
        try:
            done = rejections.retract(uid, reason=reason, actor=actor)
        except Exception:
            audit.record("results.retracted", actor=actor, outcome="failure", target=uid)
            raise
        audit.record(
            "results.retracted",
            actor=actor,
            study_uid=done.study_uid,
            note_id=done.note_id,
            job_ids=list(done.job_ids),
            objects=len(done.rejected_sop_uids),
            destinations=list(done.destinations),
        )
    finally:
        audit.close()
        rejections.close()
        outbox.close()
    if as_json:
        typer.echo(json.dumps(done.to_json(), indent=2))
        return
    sent = ", ".join(done.destinations) or "no destination (nothing had been sent)"
    typer.echo(
        f"retracted {len(done.rejected_sop_uids)} object(s) of {', '.join(done.job_ids)}; "
        f"rejection note {done.note_sop_uid} queued for {sent}"
    )


@app.command("rejections")
def rejections_(
    config: ConfigOpt = None,
    study: Annotated[str | None, typer.Option(help="Only this Study Instance UID.")] = None,
    job: Annotated[str | None, typer.Option(help="Only rejections of this job.")] = None,
    limit: Annotated[int, typer.Option(min=1, help="At most this many, newest first.")] = 200,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """List rejected result sets (superseded and retracted), newest first."""
    from node.delivery.rejections import Rejections

    cfg = config_from(config)
    outbox = open_outbox(cfg)
    store = Rejections(outbox, data_dir=cfg.node.data_dir)
    try:
        rows = store.list(study_uid=study, job_id=job, limit=limit)
    finally:
        store.close()
        outbox.close()
    if as_json:
        typer.echo(json.dumps([r.to_json() for r in rows], indent=2))
        return
    table = Table("note", "time", "kind", "actor", "jobs", "objects", "note sent to", "reason")
    for r in rows:
        table.add_row(
            r.note_id,
            dt.datetime.fromtimestamp(r.created_at, tz=dt.UTC).strftime("%Y-%m-%d %H:%M:%S"),
            r.kind.value,
            r.actor,
            ", ".join(r.job_ids),
            str(len(r.rejected_sop_uids)),
            ", ".join(r.destinations),
            r.reason,
        )
    Console().print(table)
