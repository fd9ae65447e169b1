"""``ainode pull --from SOURCE (--study UID | --patient-id ID [--from-date D] [--to-date D]
[--modality M])``: fetch studies from a configured source into the node.

C-GET and WADO-RS store what arrives through the ingest spool under ``node.data_dir`` (the same
durable path as pushed instances).  C-MOVE asks the source to send to the node's own SCP, so the
node must be running (``ainode serve``) and known to the source as ``node.ae_title``.

Once a study is in, a running node is told over HTTP (``POST /api/studies/{uid}/complete``) so it
assembles and routes the study at once; with no node running, the node's study tracker picks the
open study up from the index when it starts.
"""

from __future__ import annotations

import datetime as dt
import json
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from node.cli import app
from node.cli.deliveries import ConfigOpt, config_from
from node.config import Config, DicomwebSource, DimseSource
from node.errors import AinodeError, NotFoundError

if TYPE_CHECKING:
    from node.ingest.pull import PullQuery, PullResult

__all__ = ["pull_command"]


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
) -> None:
    """Pull studies from a DIMSE (C-MOVE/C-GET) or DICOMweb (QIDO/WADO-RS) source."""
    from node.ingest.pull import PullQuery  # pynetdicom loads only when pulling

    cfg = config_from(config)
    src = cfg.sources.get(source)
    if src is None:
        raise NotFoundError(
            f"unknown source '{source}'; configured: {', '.join(cfg.sources) or 'none'} "
            "(see 'sources' in the config)"
        )
    query = PullQuery(
        study_uid=study,
        patient_id=patient_id,
        date_from=_date(from_date, "--from-date"),
        date_to=_date(to_date, "--to-date"),
        modality=modality,
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
    if as_json:
        typer.echo(
            json.dumps(
                {
                    "studies": result.studies,
                    "expected": result.expected,
                    "received": result.received,
                    "failed": result.failed,
                    "errors": result.errors,
                    "announced": announced,
                },
                indent=2,
            )
        )
    else:
        typer.echo(
            f"pulled {result.received} instance(s) of {len(result.studies)} study(ies) "
            f"from '{source}'" + (f"; {result.failed} failed" if result.failed else "")
        )
    if not result.is_complete:
        raise AinodeError(
            f"pull from '{source}' incomplete: {result.received} of {result.expected} received"
            + (f" ({result.errors[0]})" if result.errors else "")
        )


def _announce(cfg: Config, study_uid: str) -> bool:
    """Tell a running node the pulled study is complete; False when no node answers."""
    import httpx

    host = cfg.node.host if cfg.node.host not in ("0.0.0.0", "::", "") else "127.0.0.1"
    url = f"http://{host}:{cfg.node.http_port}/api/studies/{study_uid}/complete"
    token = cfg.auth.token
    if token is None and cfg.auth.token_file is not None:
        try:
            token = cfg.auth.token_file.read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise AinodeError(f"cannot read auth.token_file: {exc.strerror}") from exc
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    try:
        r = httpx.post(url, timeout=30, headers=headers)
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

    with Progress(
        TextColumn("[bold]pull"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        transient=True,
        disable=quiet,
    ) as bar:
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
