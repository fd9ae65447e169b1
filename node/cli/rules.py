"""``ainode rules check|explain|replay``: validate a rule file; dry-run it on files or a stored
study; replay it on the stored studies of a window (``node.routing.replay``).

``check`` exits 0 when the file is valid, else prints one ``FILE:LINE:COL: message`` line per
problem on stderr and exits 2.  ``explain`` prints JSON: per study, the decisions and, per
series, the canonical body part (and how it was derived) and every rule's verdict and reason.
"""

from __future__ import annotations

import json
import sys
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer

import dicom_rules
from dicom_rules import RuleError, RuleSet, SeriesInput
from node.config import WORKLIST_SOURCE_TYPES, Config, load_config
from node.errors import ConfigError

__all__ = ["app", "collect_studies"]

app = typer.Typer(
    name="rules",
    help="Check routing rules and explain their decisions on real DICOM.",
    no_args_is_help=True,
)

_STUDY_UID = "0020000D"
_SERIES_UID = "0020000E"
_SOP_UID = "00080018"


def _fail(lines: list[str]) -> NoReturn:
    for line in lines:
        typer.echo(line, err=True)
    raise typer.Exit(2)


def _config(path: Path | None) -> Config | None:
    if path is None:
        return None
    try:
        return load_config(path)
    except ConfigError as exc:
        _fail(exc.problems)
    return None  # pragma: no cover - _fail raises


def _load_rules(path: Path, config: Config | None, models: list[str] | None = None) -> RuleSet:
    if not path.is_file():
        _fail([f"{path}:1:1: rule file not found"])
    destinations = set(config.destinations) if config is not None else None
    sources = (
        {n for n, s in config.sources.items() if s.type not in WORKLIST_SOURCE_TYPES}
        if config is not None
        else None
    )
    try:
        return dicom_rules.load(
            path,
            destinations=destinations,
            sources=sources,
            models=set(models) if models else None,
        )
    except RuleError as exc:
        _fail(exc.lines)
    raise AssertionError("unreachable")  # pragma: no cover


@app.command("check")
def check(
    file: Annotated[Path, typer.Argument(help="The rule file (YAML).")],
    config: Annotated[
        Path | None,
        typer.Option("--config", help="Also check destination names against this config."),
    ] = None,
    model: Annotated[
        list[str] | None,
        typer.Option(
            "--model",
            help="A model name the node knows (repeat); rules naming other models are errors.",
        ),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print a JSON summary.")] = False,
) -> None:
    """Validate a rule file: exit 0, or FILE:LINE:COL: message lines and exit 2."""
    cfg = _config(config)
    rules = _load_rules(file, cfg, model)
    if as_json:
        typer.echo(
            json.dumps(
                {
                    "file": str(file),
                    "valid": True,
                    "rules": [r.name for r in rules.rules],
                    "destinations_checked": cfg is not None,
                    "models_checked": bool(model),
                }
            )
        )
    else:
        typer.echo(f"{file}: ok ({len(rules.rules)} rules)")


def _header_uid(header: dict[str, Any], tag: str) -> str | None:
    elem = header.get(tag)
    if isinstance(elem, dict):
        vals = elem.get("Value")
        if isinstance(vals, list) and vals and isinstance(vals[0], str) and vals[0].strip():
            return vals[0].strip()
    return None


def collect_studies(
    paths: list[Path],
    *,
    read: Callable[[Path], dict[str, Any]] | None = None,
) -> tuple[dict[str, list[SeriesInput]], list[dict[str, str]]]:
    """Read DICOM headers under ``paths`` (files or folders, recursively) into studies.

    ``read`` turns one file into its DICOM JSON header (default: ``header_from_file``).

    Returns
    -------
    (studies, unreadable)
        study UID -> its series (header of the first instance by file name, instance count);
        and the files that could not be read, with the reason.
    """
    if read is None:
        from node.imaging.dicom_json import header_from_file

        read = header_from_file
    files: list[Path] = []
    for p in paths:
        if p.is_dir():
            files.extend(sorted(f for f in p.rglob("*") if f.is_file()))
        else:
            files.append(p)
    series: dict[tuple[str, str], list[tuple[Path, dict[str, Any]]]] = defaultdict(list)
    unreadable: list[dict[str, str]] = []
    for f in files:
        try:
            header = read(f)
        except Exception as exc:  # pydicom raises many types on bad files; each is reported
            unreadable.append({"path": str(f), "error": f"{type(exc).__name__}: {exc}"})
            continue
        study_uid = _header_uid(header, _STUDY_UID) or "(no StudyInstanceUID)"
        series_uid = _header_uid(header, _SERIES_UID) or f"(no SeriesInstanceUID: {f})"
        series[(study_uid, series_uid)].append((f, header))
    studies: dict[str, list[SeriesInput]] = defaultdict(list)
    for (study_uid, series_uid), members in sorted(series.items()):
        sops = {_header_uid(h, _SOP_UID) or str(p) for p, h in members}
        studies[study_uid].append(
            SeriesInput(series_uid=series_uid, header=members[0][1], instance_count=len(sops))
        )
    return dict(studies), unreadable


def _stored_study(config: Config, study_uid: str) -> list[SeriesInput]:
    """The stored headers of ``study_uid`` from the node's index (``data_dir/index.sqlite``)."""
    from node.routing.dispatch import series_inputs
    from node.store.index import Index

    db_path = Path(config.node.data_dir) / "index.sqlite"
    if not db_path.is_file():
        _fail([f"ainode: error: no study index at {db_path} (is --config the node's config?)"])
    index = Index(db_path)
    try:
        study = index.get_study(study_uid)
    finally:
        index.close()
    if study is None:
        _fail([f"ainode: error: study {study_uid} is not in the index at {db_path}"])
    return series_inputs(study)


def _files_by_series(paths: list[Path]) -> dict[str, list[Path]]:
    """Series UID -> its files under ``paths`` (headers only)."""
    from node.imaging.dicom_json import header_from_file
    from node.imaging.volume import dicom_files

    out: dict[str, list[Path]] = defaultdict(list)
    for f in dicom_files(paths):
        try:
            uid = _header_uid(header_from_file(f), _SERIES_UID)
        except Exception:  # noqa: BLE001 - unreadable files are listed by collect_studies
            continue
        if uid:
            out[uid].append(f)
    return dict(out)


def _stored_paths(config: Config, study_uid: str) -> dict[str, list[Path]]:
    from node.store.index import Index

    data_dir = Path(config.node.data_dir)
    index = Index(data_dir / "index.sqlite")
    try:
        out: dict[str, list[Path]] = defaultdict(list)
        for inst in index.study_instances(study_uid):
            path = inst.path if inst.path.is_absolute() else data_dir / inst.path
            out[inst.series_uid].append(path)
        return dict(out)
    finally:
        index.close()


def _model_refusals(config: Config | None) -> dict[str, Any]:
    """Each discovered model's volume check (imports torch: only when a rule names a model)."""
    from node.models.registry import discover

    cfg = config or Config()
    registry = discover(cfg.models, device=cfg.inference.device)
    return {e.name: e.info.refusal for e in registry.entries() if e.info is not None}


def _qualify(
    rules: Any,
    decisions: Any,
    series_uids: list[str],
    files: dict[str, list[Path]],
    refusals: dict[str, Any],
) -> dict[str, Any]:
    """What the live router does next (node.routing.qualify): volumes and not-applicable."""
    from node.routing.qualify import SeriesQualifier, qualify_study

    qualifier = SeriesQualifier(paths=lambda uid: files.get(uid, []), refusals=refusals)
    return qualify_study(
        rules=rules, decisions=decisions, series_uids=series_uids, qualifier=qualifier
    )


@app.command("explain")
def explain(
    paths: Annotated[
        list[Path] | None,
        typer.Argument(help="DICOM files or folders (one header per series is used)."),
    ] = None,
    rules_file: Annotated[Path, typer.Option("--rules", help="The rule file (YAML).")] = Path(
        "rules.yaml"
    ),
    study: Annotated[
        str | None,
        typer.Option("--study", help="Explain a study stored in the node (needs --config)."),
    ] = None,
    config: Annotated[
        Path | None, typer.Option("--config", help="The node's config (destinations, index).")
    ] = None,
) -> None:
    """Route DICOM files (or a stored study) with a rule file and print why, as JSON."""
    from node.routing.qualify import unrouted_series

    cfg = _config(config)
    rules = _load_rules(rules_file, cfg)
    destinations = sorted(cfg.destinations) if cfg is not None else None
    unreadable: list[dict[str, str]] = []
    if study is not None:
        if cfg is None:
            cfg = _config(Path("ainode.yaml")) if Path("ainode.yaml").is_file() else Config()
        assert cfg is not None
        studies = {study: _stored_study(cfg, study)}
    elif paths:
        missing = [str(p) for p in paths if not p.exists()]
        if missing:
            _fail([f"ainode: error: no such file or folder: {m}" for m in missing])
        studies, unreadable = collect_studies(paths)
    else:
        _fail(["ainode: error: give DICOM files/folders or --study UID"])
    out: dict[str, Any] = {"rules": str(rules_file), "studies": []}
    if study is not None:
        assert cfg is not None
        files = _stored_paths(cfg, study)
    else:
        files = _files_by_series(paths or [])
    refusals: dict[str, Any] | None = None
    for study_uid, series in sorted(studies.items()):
        explanation = dicom_rules.explain(rules, series, destinations=destinations)
        entry = {"study_uid": study_uid, **explanation.to_json()}
        uids = [s.series_uid for s in series]
        if refusals is None and (
            any(d.model for d in explanation.decisions)
            or unrouted_series(rules, explanation.decisions, uids)
        ):
            refusals = _model_refusals(cfg)
        entry.update(_qualify(rules, explanation.decisions, uids, files, refusals or {}))
        out["studies"].append(entry)
    out["unreadable"] = unreadable
    json.dump(out, sys.stdout, indent=2)
    sys.stdout.write("\n")


def _replay_lines(out: dict[str, Any]) -> list[str]:
    """The human table of a replay: changed studies, then the model runs per day."""
    lines: list[str] = []
    for s in out["studies"]:
        d = s["diff"]
        parts = (
            [f"+{a['model']} on {a['series_uid']}" for a in d["models_added"]]
            + [f"-{a['model']} on {a['series_uid']}" for a in d["models_removed"]]
            + [
                f"{c['model']} on {c['series_uid']}: deliver {','.join(c['before']) or '-'}"
                f" -> {','.join(c['after']) or '-'}"
                for c in d["destinations_changed"]
            ]
            + [f"+send {f['series_uid']} to {f['destination']}" for f in d["forwards_added"]]
            + [f"-send {f['series_uid']} to {f['destination']}" for f in d["forwards_removed"]]
            + [f"newly ignored {u}" for u in d["newly_ignored"]]
            + [f"no longer ignored {u}" for u in d["no_longer_ignored"]]
        )
        lines.append(
            f"{s['received']}  {s['study_uid']}  ({s['current_source']})  "
            f"runs {s['current']['model_runs']} -> {s['new']['model_runs']}"
        )
        lines.extend(f"    {p}" for p in parts or ["(no change)"])
    t = out["totals"]
    lines.append("")
    lines.append(f"{'day':<10}  {'studies':>7}  {'changed':>7}  {'runs now':>8}  {'new':>6}  extra")
    for day in out["per_day"]:
        lines.append(
            f"{day['day']:<10}  {day['studies']:>7}  {day['changed']:>7}  "
            f"{day['current_runs']:>8}  {day['new_runs']:>6}  {day['extra_runs']:+d}"
        )
    lines.append(
        f"{'total':<10}  {t['studies']:>7}  {t['changed']:>7}  {t['current_runs']:>8}  "
        f"{t['new_runs']:>6}  {t['extra_runs']:+d}  ({t['extra_runs_per_day']:+} per day)"
    )
    lines.append(
        f"{out['since']} .. {out['until']}: {t['studies']} studies replayed in "
        f"{out['seconds']} s; nothing was queued"
    )
    return lines


def _audit_replay(
    data_dir: Path, rules: bytes, active: bytes | None, detail: dict[str, Any]
) -> None:
    """A ``rules.replayed`` audit record (actor ``cli:OS-USER``): rule files' sha256, counts."""
    import getpass
    import hashlib

    from node.audit import AuditLog

    log = AuditLog(data_dir)
    try:
        log.record(
            "rules.replayed",
            actor=f"cli:{getpass.getuser()}",
            via="cli",
            rules_sha256=hashlib.sha256(rules).hexdigest(),
            active_sha256=hashlib.sha256(active).hexdigest() if active is not None else None,
            **detail,
        )
    finally:
        log.close()


@app.command("replay")
def replay_cmd(
    rules_file: Annotated[Path, typer.Option("--rules", help="The candidate rule file (YAML).")],
    since: Annotated[
        str, typer.Option("--since", help="Window start: 7d, 24h, 90m ago, or an ISO date.")
    ] = "7d",
    until: Annotated[
        str | None, typer.Option("--until", help="Window end (default: now), same forms.")
    ] = None,
    config: Annotated[
        Path | None,
        typer.Option("--config", help="The node's config (index, destinations, active rules)."),
    ] = None,
    show_all: Annotated[
        bool, typer.Option("--all", help="List unchanged studies too (default: changed only).")
    ] = False,
    limit: Annotated[
        int | None, typer.Option("--limit", min=0, help="List at most this many studies.")
    ] = None,
    workers: Annotated[
        int | None,
        typer.Option(
            "--workers", min=1, help="Processes for 20,000+ studies (default: CPUs, at most 4)."
        ),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the replay as JSON.")] = False,
) -> None:
    """What a rule file would have done to the stored studies of a window (nothing is queued).

    Per study: the current routing (the stored routing record, else the active rules) beside
    the new one, the models added or removed, destinations changed and series newly ignored;
    then the model runs per day.  Stored headers only: no instance file is read.
    """
    from node.jobs.store import JobStore
    from node.routing import DEFAULT_RULES
    from node.routing.replay import default_workers, parse_since, replay
    from node.store.index import Index

    cfg = _config(config)
    if cfg is None:
        cfg = _config(Path("ainode.yaml")) if Path("ainode.yaml").is_file() else Config()
    assert cfg is not None
    rules = _load_rules(rules_file, cfg)
    try:
        start = parse_since(since)
        end = parse_since(until) if until is not None else None
    except ValueError as exc:
        _fail([f"ainode: error: {exc}"])
    active_path = cfg.rules or DEFAULT_RULES
    try:
        active = dicom_rules.load(active_path, destinations=set(cfg.destinations) or None)
    except (RuleError, OSError):
        active = None  # studies without a routing record then show an empty current routing
    db_path = Path(cfg.node.data_dir) / "index.sqlite"
    if not db_path.is_file():
        _fail([f"ainode: error: no study index at {db_path} (is --config the node's config?)"])
    index = Index(db_path)
    jobs = JobStore(db_path)
    try:
        result = replay(
            index,
            rules,
            since=start,
            until=end,
            current_rules=active,
            stored_many=jobs.routing_decisions_many,
            destinations=sorted(cfg.destinations),
            workers=workers or default_workers(),
        )
    finally:
        index.close()
    _audit_replay(
        cfg.node.data_dir,
        rules_file.read_bytes(),
        active_path.read_bytes() if active is not None else None,
        result.audit_detail(),
    )
    out = {
        "rules": str(rules_file),
        "active_rules": str(active_path) if active is not None else None,
        **result.to_json(limit=limit, changed_only=not show_all),
    }
    if as_json:
        json.dump(out, sys.stdout, indent=2)
        sys.stdout.write("\n")
    else:
        for line in _replay_lines(out):
            typer.echo(line)
