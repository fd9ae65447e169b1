"""``ainode pull --from SOURCE (--study UID | --patient-id ID [--from-date D] [--to-date D]
[--modality M]) [--via-node | --local]``: fetch studies from a configured source into the node.

When the node of ``--config`` is running (it answers ``GET /api/health``), the pull is handed to
it (``POST /api/pull``) and followed with ``GET /api/pulls/{id}``: the node pulls through its
own ingest spool and completes (routes) each study when the pull ends.  ``--via-node`` insists on
that; ``--local`` pulls in this process instead.

A local pull stores C-GET and WADO-RS instances through an ingest spool under ``node.data_dir``
(the same durable path as pushed instances).  C-MOVE asks the source to send to the node's own
SCP, so the node must be running and known to the source as ``node.ae_title``.  Once a study is
in, a running node is told over HTTP (``POST /api/studies/{uid}/complete``); with no node running,
the node's study tracker picks the open study up from the index when it starts.

With ``node.http_tls`` set, the node is reached over HTTPS, trusting the node's own certificate
(``http_tls.cert``) and ``http_tls.ca``.
"""

from __future__ import annotations

import datetime as dt
import json
import ssl
import time
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from node.cli import app
from node.cli.deliveries import ConfigOpt, config_from
from node.config import Config, DicomwebSource, DimseSource, UpsDimseSource, UpsRsSource
from node.errors import AinodeError, NotFoundError

if TYPE_CHECKING:
    from node.ingest.pull import PullQuery, PullResult

__all__ = ["node_http", "pull_command"]


def _date(value: str | None, option: str) -> dt.date | None:
    if value is None:
        return None
    try:
        return dt.date.fromisoformat(value)
    except ValueError:
        raise AinodeError(f"{option} must be a date like 2024-03-31, not '{value}'") from None


def _sink(cfg: Config) -> tuple[Any, Any]:
    from node.ingest.spool import Spool
    from node.store.index import Index

    cfg.node.data_dir.mkdir(parents=True, exist_ok=True)
    index = Index(cfg.node.data_dir / "index.sqlite")
    spool = Spool(
        cfg.node.data_dir,
        index,
        quota_bytes=cfg.node.quota_bytes,
        min_free_bytes=cfg.node.min_free_bytes,
    )
    spool.start()
    return spool, index


@app.command("pull")
def pull_command(
    source: Annotated[str, typer.Option("--from", help="a name under 'sources' in the config")],
    study: Annotated[str | None, typer.Option(help="Study Instance UID")] = None,
    patient_id: Annotated[str | None, typer.Option(help="Patient ID to search for")] = None,
    from_date: Annotated[str | None, typer.Option(help="first study date, YYYY-MM-DD")] = None,
    to_date: Annotated[str | None, typer.Option(help="last study date, YYYY-MM-DD")] = None,
    modality: Annotated[str | None, typer.Option(help="modality in study, e.g. CT")] = None,
    config: ConfigOpt = None,
    as_json: Annotated[bool, typer.Option("--json", help="print the result as JSON")] = False,
    via_node: Annotated[
        bool | None,
        typer.Option(
            "--via-node/--local",
            help="have the running node pull (POST /api/pull), or pull in this process; "
            "default: the node when it answers",
            show_default=False,
        ),
    ] = None,
) -> None:
    """Pull studies from a DIMSE (C-MOVE/C-GET) or DICOMweb (QIDO/WADO-RS) source."""
    from node.ingest.pull import PullQuery  # pynetdicom loads only when pulling

    cfg = config_from(config)
    query = PullQuery(
        study_uid=study,
        patient_id=patient_id,
        date_from=_date(from_date, "--from-date"),
        date_to=_date(to_date, "--to-date"),
        modality=modality,
    )
    if via_node or (via_node is None and _node_answers(cfg)):
        out = _pull_via_node(cfg, source, query, quiet=as_json)
        _report(out, source, as_json=as_json)
        if out["state"] != "succeeded":
            raise AinodeError(
                f"pull {out['id']} from '{source}' {out['state']}: {out['received']} of "
                f"{out['expected']} received" + (f" ({out['errors'][0]})" if out["errors"] else "")
            )
        return
    src = cfg.sources.get(source)
    if src is None:
        raise NotFoundError(
            f"unknown source '{source}'; configured: {', '.join(cfg.sources) or 'none'} "
            "(see 'sources' in the config)"
        )
    if isinstance(src, UpsRsSource | UpsDimseSource):
        raise AinodeError(
            f"source '{source}' is a UPS worklist (type {src.type}): the node performs its "
            "workitems itself; pull from a dimse or dicomweb source"
        )
    needs_sink = isinstance(src, DicomwebSource) or (
        isinstance(src, DimseSource) and src.method == "c-get"
    )
    spool, index = _sink(cfg) if needs_sink else (None, None)
    try:
        result = _run(src, query, cfg, spool, quiet=as_json)
    finally:
        if spool is not None and index is not None:
            spool.stop()
            index.close()
    announced = [uid for uid in result.studies if result.received and _announce(cfg, uid)]
    out = {
        "studies": result.studies,
        "expected": result.expected,
        "received": result.received,
        "failed": result.failed,
        "errors": result.errors,
        "announced": announced,
    }
    _report(out, source, as_json=as_json)
    if not result.is_complete:
        raise AinodeError(
            f"pull from '{source}' incomplete: {result.received} of {result.expected} received"
            + (f" ({result.errors[0]})" if result.errors else "")
        )


def _report(out: dict[str, Any], source: str, *, as_json: bool) -> None:
    if as_json:
        typer.echo(json.dumps(out, indent=2))
        return
    typer.echo(
        f"pulled {out['received']} instance(s) of {len(out['studies'])} study(ies) "
        f"from '{source}'" + (f"; {out['failed']} failed" if out["failed"] else "")
    )


def node_http(cfg: Config) -> tuple[str, dict[str, str], ssl.SSLContext | bool]:
    """Base URL, auth headers and TLS verification for talking to the node of ``cfg``."""
    host = cfg.node.host if cfg.node.host not in ("0.0.0.0", "::", "") else "127.0.0.1"
    from node.api.auth import client_token

    token = client_token(cfg.auth)
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    tls = cfg.node.http_tls
    if tls.cert is None:
        return f"http://{host}:{cfg.node.http_port}", headers, True
    try:  # trust the node's own certificate (self-signed or not) and its CA bundle
        ctx = ssl.create_default_context(cafile=str(tls.cert))
        if tls.ca is not None:
            ctx.load_verify_locations(cafile=str(tls.ca))
    except (OSError, ValueError) as exc:
        raise AinodeError(f"node.http_tls: cannot read {tls.cert} or {tls.ca}: {exc}") from exc
    ctx.verify_flags |= ssl.VERIFY_X509_PARTIAL_CHAIN
    return f"https://{host}:{cfg.node.http_port}", headers, ctx


def _node_answers(cfg: Config) -> bool:
    import httpx

    base, headers, verify = node_http(cfg)
    try:
        return httpx.get(f"{base}/api/health", timeout=2, verify=verify).status_code == 200
    except httpx.HTTPError:
        return False


def _problem(r: Any) -> str:
    try:
        body = r.json()
        return str(body.get("detail") or body.get("title") or r.text[:200])
    except ValueError:
        return str(r.text[:200])


def _pull_via_node(cfg: Config, source: str, query: PullQuery, *, quiet: bool) -> dict[str, Any]:
    """Hand the pull to the running node and follow it to the end; return its final record."""
    import httpx

    base, headers, verify = node_http(cfg)
    body = {
        "source": source,
        "study_uid": query.study_uid,
        "patient_id": query.patient_id,
        "date_from": query.date_from.isoformat() if query.date_from else None,
        "date_to": query.date_to.isoformat() if query.date_to else None,
        "modality": query.modality,
    }
    with httpx.Client(base_url=base, headers=headers, verify=verify, timeout=30) as client:
        try:
            r = client.post("/api/pull", json={k: v for k, v in body.items() if v is not None})
        except httpx.TransportError as exc:
            raise AinodeError(
                f"no node answers at {base} ({type(exc).__name__}); start 'ainode serve' or "
                "pull with --local"
            ) from exc
        if r.status_code != 202:
            raise AinodeError(f"the node refused the pull ({r.status_code}): {_problem(r)}")
        record: dict[str, Any] = r.json()
        with _progress(quiet) as bar:
            task = bar.add_task("pull", total=None)
            while record["state"] in ("queued", "running"):
                time.sleep(0.25)  # a status poll, not a wait for an event we could block on
                try:
                    r = client.get(f"/api/pulls/{record['id']}")
                except httpx.TransportError as exc:
                    raise AinodeError(
                        f"lost the node at {base} while pull {record['id']} ran: {exc}"
                    ) from exc
                if r.status_code != 200:
                    raise AinodeError(f"pull {record['id']}: {r.status_code} {_problem(r)}")
                record = r.json()
                progress = record["progress"]
                bar.update(task, completed=progress["done"], total=progress["total"])
    return {
        "pull_id": record["id"],
        "id": record["id"],
        "state": record["state"],
        "studies": record["studies"],
        "expected": record["expected"],
        "received": record["received"],
        "failed": record["failed"],
        "errors": record["errors"],
        "announced": record["completed"],
    }


def _progress(quiet: bool) -> Progress:
    """The pull's progress bar (instances received of those announced), hidden by --quiet."""
    return Progress(
        TextColumn("[bold]pull"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        transient=True,
        disable=quiet,
    )


def _announce(cfg: Config, study_uid: str) -> bool:
    """Tell a running node the pulled study is complete; False when no node answers."""
    import httpx

    base, headers, verify = node_http(cfg)
    url = f"{base}/api/studies/{study_uid}/complete"
    try:
        r = httpx.post(url, timeout=30, headers=headers, verify=verify)
    except httpx.TransportError:
        return False
    if r.status_code >= 400:
        raise AinodeError(
            f"pulled study {study_uid}, but the node answered {r.status_code} when told it is "
            f"complete: {r.text[:200]}"
        )
    return True


def _run(
    src: DimseSource | DicomwebSource, query: PullQuery, cfg: Config, spool: Any, *, quiet: bool
) -> PullResult:
    from node.ingest.pull import pull

    with _progress(quiet) as bar:
        task = bar.add_task("pull", total=None)

        def report(done: int, total: int | None) -> None:
            bar.update(task, completed=done, total=total)

        return pull(
            src,
            query,
            sink=spool,
            node_ae_title=cfg.node.ae_title,
            progress=report,
            timeout_seconds=cfg.node.network_timeout_seconds,
        )
