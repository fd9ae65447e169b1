"""``ainode studies list|show UID|complete UID|reroute UID`` (``--json`` for machines).

``list`` and ``show`` read the index under the config's ``data_dir`` directly (SQLite in WAL
mode: safe while the node runs).  ``complete`` asks the running node over HTTP
(``POST /api/studies/{uid}/complete``, so the completion is routed at once); when no node answers
on ``node.http_port`` it marks the study complete in the index itself, and the event is recorded
there (a node started later does not re-announce it).  ``reroute`` asks the running node to
route a complete study again (``POST /api/studies/{uid}/reroute``); it needs the node.
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
from node.store.index import AI_STATUSES, SORT_KEYS, STUDY_STATES

__all__ = ["studies_app"]

studies_app = typer.Typer(
    help="List, show, complete and re-route received studies.", no_args_is_help=True
)
app.add_typer(studies_app, name="studies")

ConfigOpt = Annotated[
    Path | None, typer.Option("--config", "-c", help="YAML config file (default ./ainode.yaml)")
]
JsonOpt = Annotated[bool, typer.Option("--json", help="print JSON")]


def _index(cfg: Config) -> Any:
    from node.jobs.queries import ai_status_sql, routed_sql
    from node.store.index import Index

    db = cfg.node.data_dir / "index.sqlite"
    if not db.is_file():
        raise NotFoundError(f"no index at {db}: has this node received anything yet?")
    return Index(db, ai_status_sql=ai_status_sql(), routed_sql=routed_sql())


def _when(epoch: float | None) -> str:
    if epoch is None:
        return "-"
    return dt.datetime.fromtimestamp(epoch, dt.UTC).strftime("%Y-%m-%d %H:%M:%S")


def _date(value: str | None, option: str) -> dt.date | None:
    if value is None:
        return None
    try:
        return dt.date.fromisoformat(value)
    except ValueError:
        raise typer.BadParameter(
            f"{value!r} is not a date (YYYY-MM-DD)", param_hint=option
        ) from None


def _audit_phi(cfg: Config, study_uids: list[str], purpose: str, filters: list[str]) -> None:
    """A ``phi.viewed`` audit record for what the command printed (actor ``cli:OS-USER``)."""
    if not study_uids:
        return
    import getpass

    from node.audit import AuditLog

    one: dict[str, Any] = (
        {"study_uid": study_uids[0]} if len(study_uids) == 1 else {"study_uids": study_uids}
    )
    log = AuditLog(cfg.node.data_dir)
    try:
        log.record(
            "phi.viewed", actor=f"cli:{getpass.getuser()}", purpose=purpose, filters=filters, **one
        )
    finally:
        log.close()


@studies_app.command("list")
def list_(
    config: ConfigOpt = None,
    as_json: JsonOpt = False,
    limit: Annotated[int, typer.Option(min=1)] = 100,
    offset: Annotated[int, typer.Option(min=0)] = 0,
    patient_id: Annotated[str | None, typer.Option(help="exact Patient ID")] = None,
    patient_name: Annotated[str | None, typer.Option(help="Patient's Name substring")] = None,
    accession: Annotated[str | None, typer.Option(help="exact Accession Number")] = None,
    description: Annotated[str | None, typer.Option(help="Study Description substring")] = None,
    modality: Annotated[str | None, typer.Option(help="a series' modality, e.g. CT")] = None,
    since: Annotated[
        str | None, typer.Option("--since", "--from", help="Study Date on or after (YYYY-MM-DD)")
    ] = None,
    until: Annotated[
        str | None, typer.Option("--until", "--to", help="Study Date on or before (YYYY-MM-DD)")
    ] = None,
    status: Annotated[
        str | None,
        typer.Option(help=f"study state or AI status: {', '.join(STUDY_STATES + AI_STATUSES)}"),
    ] = None,
    sort: Annotated[str, typer.Option(help=f"one of {', '.join(SORT_KEYS)}")] = "received",
    asc: Annotated[bool, typer.Option("--asc", help="ascending (default: descending)")] = False,
) -> None:
    """List received studies (newest first), filtered as ``GET /api/studies`` is.

    Reads the index directly, as the owner of the data folder: patient data is printed, and
    each listing is audited (``phi.viewed``, actor ``cli:OS-USER``; never the values).
    """
    from node.store.index import StudyQuery

    if status is not None and status not in STUDY_STATES + AI_STATUSES:
        raise typer.BadParameter(f"unknown status {status!r}", param_hint="--status")
    if sort not in SORT_KEYS:
        raise typer.BadParameter(f"unknown sort key {sort!r}", param_hint="--sort")
    query = StudyQuery(
        patient_id=patient_id,
        patient_name=patient_name,
        accession=accession,
        description=description,
        modality=modality.upper() if modality else None,
        date_from=_date(since, "--since"),
        date_to=_date(until, "--until"),
        status=status,
        sort=sort,
        descending=not asc,
    )
    cfg = config_from(config)
    index = _index(cfg)
    try:
        rows, total = index.search_studies(query, limit=limit, offset=offset)
    finally:
        index.close()
    used = [k for k in ("patient_id", "patient_name", "accession") if getattr(query, k)]
    _audit_phi(cfg, [r["study_uid"] for r in rows], "ainode studies list", used)
    if as_json:
        typer.echo(json.dumps(rows, indent=2))
        return
    typer.echo(
        f"{'STUDY UID':64}  {'PATIENT ID':16}  {'PATIENT NAME':24}  {'ACCESSION':16}  "
        f"{'DATE':8}  {'MOD':7}  {'STATE':8}  {'AI':9}  {'SER':>3}  {'INST':>5}  "
        "LAST RECEIVED (UTC)  DESCRIPTION"
    )
    for r in rows:
        typer.echo(
            f"{r['study_uid']:64}  {r['patient_id'] or '-':16}  {r['patient_name'] or '-':24}  "
            f"{r['accession'] or '-':16}  {r['study_date'] or '-':8}  "
            f"{'/'.join(r['modalities']) or '-':7}  {r['state']:8}  {r['ai_status'] or '-':9}  "
            f"{r['series_count']:>3}  {r['instance_count']:>5}  {_when(r['last_received'])}  "
            f"{r['study_description'] or ''}"
        )
    typer.echo(f"{len(rows)} of {total} matching, from {offset}")


@studies_app.command("show")
def show(study_uid: str, config: ConfigOpt = None, as_json: JsonOpt = False) -> None:
    """Show one study: state, series and events (``--json``: with its patient columns, audited as
    ``phi.viewed``)."""
    cfg = config_from(config)
    index = _index(cfg)
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
        _audit_phi(cfg, [study_uid], "ainode studies show", [])
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


@studies_app.command("reroute")
def reroute(study_uid: str, config: ConfigOpt = None, as_json: JsonOpt = False) -> None:
    """Route a complete study again now, through the running node: with the active rules and
    the models' current versions; earlier results no longer produced are rejected."""
    import httpx

    from node.cli.pull import node_http

    cfg = config_from(config)
    base, headers, verify = node_http(cfg)
    try:
        r = httpx.post(
            f"{base}/api/studies/{study_uid}/reroute", timeout=600, headers=headers, verify=verify
        )
    except httpx.TransportError as exc:
        raise AinodeError(
            f"no node answers at {base} ({exc.__class__.__name__}); start it with "
            "'ainode serve' (re-routing queues jobs in the running node)"
        ) from exc
    if r.status_code == 404:
        raise NotFoundError(f"study {study_uid} is not known to this node")
    if r.status_code >= 400:
        detail = r.json().get("detail", r.text) if r.content else r.reason_phrase
        raise AinodeError(f"the node answered {r.status_code}: {str(detail)[:300]}")
    out: dict[str, Any] = r.json()
    if as_json:
        typer.echo(json.dumps(out))
        return
    rejection = out.get("rejection")
    typer.echo(
        f"study {study_uid} re-routed: {len(out.get('jobs', []))} job(s), "
        f"{len(out.get('new_jobs', []))} queued"
        + (f"; earlier results rejected ({rejection})" if rejection else "")
    )
