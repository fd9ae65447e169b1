"""``ainode models list`` and ``ainode predict``: what a node can run, and one run on local files.

``predict`` is what an AI engineer does first with a new model: load a series from files outside
the node, run one model, write ``prediction.json`` (labels with volumes, probabilities,
detections, timings) into ``--out``.  Result DICOM objects (SEG/SR/SC) are added by
``write_result_objects`` once ``node.results`` is wired in (see its docstring).
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from node.config import Config, load_config
from node.errors import ModelError
from node.log import configure as configure_logging

if TYPE_CHECKING:  # torch, pydicom and scipy load only when a command below runs
    from node.models.registry import Registry
    from node.types import Prediction, Volume

__all__ = [
    "card_summary",
    "models_app",
    "predict",
    "predict_files",
    "write_result_objects",
]

models_app = typer.Typer(help="Models the node can run.", no_args_is_help=True)

ConfigOption = Annotated[
    Path, typer.Option("--config", help="Node config file (default ./ainode.yaml if present).")
]


def _config(path: Path) -> Config:
    if not logging.getLogger().handlers:  # keep stderr to the one error line unless set up
        configure_logging(json_lines=False, level="ERROR")
    if path == Path("ainode.yaml") and not path.exists():
        return load_config(None)
    return load_config(path)


def _registry(config: Config) -> Registry:
    from node.models.admission import model_paths
    from node.models.registry import discover
    from node.models.runtime import configure_threads

    configure_threads(config.inference.torch_threads)
    return discover(
        model_paths(config.models, config.node.data_dir), device=config.inference.device
    )


def _inventory(config: Config, registry: Registry) -> list[dict[str, Any]]:
    """Inventory rows: routes from the config's rule file, usage from the node's job store."""
    import dicom_rules
    from node.models.inventory import inventory_rows, routes_by_model, usage_by_model

    routes: dict[str, list[str]] = {}
    if config.rules is not None and config.rules.is_file():
        try:
            routes = routes_by_model(dicom_rules.load(config.rules))
        except dicom_rules.RuleError as exc:
            typer.echo(f"warning: rules not shown: {exc}", err=True)
    usage: dict[str, Any] = {}
    feedback: dict[tuple[str, str | None], dict[str, int]] = {}
    db = config.node.data_dir / "index.sqlite"
    if db.is_file():
        from node.jobs.store import JobStore
        from node.store.feedback import FeedbackStore

        store = JobStore(db)
        usage = usage_by_model(lambda since: store.model_runs(since=since))
        feedback = FeedbackStore(db).counts()
    return inventory_rows(
        registry.entries(),
        device=str(registry.device),
        routes=routes,
        usage=usage,
        card=card_summary,
        preference=config.inference.device,
        feedback=feedback,
    )


def card_summary(card: str, limit: int = 160) -> str:
    """First prose line of a model card (headings and blank lines skipped), shortened."""
    for line in card.splitlines():
        text = line.strip()
        if text and not text.startswith(("#", "|", "---", "<!--")):
            return text if len(text) <= limit else text[: limit - 1] + "…"
    return ""


@models_app.command("list")
def list_models(
    config: ConfigOption = Path("ainode.yaml"),
    as_json: Annotated[bool, typer.Option("--json", help="One JSON array on stdout.")] = False,
) -> None:
    """The model inventory: every model, what was checked, Device UID, rules and usage.

    A model is ``admitted`` (loaded and run once by `ainode models add`, hashes recorded),
    ``described`` (only its files were read: never loaded), ``changed`` or ``broken``.
    """
    cfg = _config(config)
    registry = _registry(cfg)
    rows = _inventory(cfg, registry)
    if as_json:
        typer.echo(json.dumps(rows, indent=2))
        return
    if not rows:
        typer.echo("no models found (built-ins, 'ainode.models' entry points, config 'models')")
        return
    for row in rows:
        if row["status"] in ("broken", "changed"):
            typer.echo(
                f"{row['name']:<28} {row['source']:<12} {row['status'].upper()}  {row['error']}"
            )
            continue
        demo = " demo" if row.get("is_demo") else ""
        day = row["usage"]["24h"]
        typer.echo(
            f"{row['name']:<28} {row['source']:<12} {row['status']:<9} {row['device']:<6} "
            f"v{row['version']} {row['task']}{demo} "
            f"[{','.join(row['modalities']) or 'any'}; {'/'.join(map(str, row['dims']))}D] "
            f"rules: {','.join(row['rules']) or '-'}; 24h: {day['runs']} runs, "
            f"{day['failures']} failed"
        )
        typer.echo(f"    checked: {row['checked']}")
        typer.echo(f"    device UID {row['device_uid']}")
        if row.get("card"):
            typer.echo(f"    {row['card']}")


@models_app.command("add")
def add(
    path: Annotated[Path, typer.Argument(help="Model folder, zip, or sidecar/network file.")],
    config: ConfigOption = Path("ainode.yaml"),
    replace: Annotated[
        bool, typer.Option("--replace", help="Admit it in place of a model of that name.")
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the admission record.")] = False,
) -> None:
    """Admit a model into DATA_DIR/models after loading it and running it once in isolation."""
    from node.models.admission import add_model

    cfg = _config(config)
    registry = _registry(cfg)
    existing = [e.name for e in registry.entries() if e.is_ok]
    if replace:  # the admitted model being replaced does not clash with itself
        existing = [
            e.name
            for e in registry.entries()
            if e.is_ok and not str(e.location).startswith(str(cfg.node.data_dir / "models"))
        ]
    record = add_model(
        path,
        data_dir=cfg.node.data_dir,
        existing=existing,
        device=cfg.inference.device,
        timeout_seconds=cfg.inference.job_timeout_seconds,
        replace=replace,
    )
    if as_json:
        typer.echo(json.dumps(record, indent=2))
        return
    trial = record["checks"]["isolated_load_and_run"]
    typer.echo(
        f"admitted {record['name']} v{record['version']} ({record['format']}): "
        f"ran on a synthetic {trial['modality']} input {trial['input_shape']} in "
        f"{trial['seconds']} s; {len(record['files'])} files hashed; "
        f"device UID {record['device_uid']}"
    )


@models_app.command("verify")
def verify(
    names: Annotated[
        list[str] | None, typer.Argument(metavar="[NAME]...", help="Admitted models (default all).")
    ] = None,
    config: ConfigOption = Path("ainode.yaml"),
    as_json: Annotated[bool, typer.Option("--json", help="One JSON array on stdout.")] = False,
) -> None:
    """Re-check the SHA-256 of every admitted model's files; exit 1 if any changed."""
    from node.models.admission import verify_models

    cfg = _config(config)
    rows = verify_models(cfg.node.data_dir, names or ())
    if as_json:
        typer.echo(json.dumps(rows, indent=2))
    elif not rows:
        typer.echo(f"no admitted models in {cfg.node.data_dir / 'models'}")
    for row in rows if not as_json else ():
        if row["ok"]:
            typer.echo(f"{row['name']:<28} ok: {row['files']} files match their admission hashes")
        else:
            typer.echo(f"{row['name']:<28} CHANGED: {'; '.join(row['problems'])}")
    if any(not row["ok"] for row in rows):
        raise typer.Exit(1)


def predict_files(
    name: str, files: list[Path], model_paths: list[Path], device: str, threads: int
) -> tuple[Prediction, Volume, dict[str, float]]:
    """Load ``files`` as one series and run model ``name``; picklable so it can run in a worker.

    The model gets the volume of the series the node's router would give it
    (``node.imaging.split`` then ``node.routing.qualify.choose_volume`` with the model's own
    refusal): a multi-echo series gives its first echo, a gantry-tilted one its sheared grid; a
    series the model cannot read is refused with the router's reason.

    Returns the prediction, the input volume (its ``sources`` map label-map slices to SOP
    instances/frames for the result objects) and the node-side timings.
    """
    from node.imaging import load_volume
    from node.imaging.split import split_series
    from node.models.identity import stamp
    from node.models.registry import discover
    from node.models.runtime import configure_threads
    from node.routing.qualify import choose_volume

    configure_threads(threads)
    timings: dict[str, float] = {}
    start = time.perf_counter()
    registry = discover(model_paths, device=device)
    model = registry.get(name)
    timings["discover"] = time.perf_counter() - start
    start = time.perf_counter()
    split = split_series(files)
    chosen = choose_volume(
        split.volumes,
        dropped=[(d.sop_uid, d.reason) for d in split.dropped],
        refusal=model.info.refusal,
    )
    if chosen.volume_id is None:
        raise ModelError(f"model {name!r} cannot run on this series: {chosen.detail}")
    volume = load_volume(files, volume_id=chosen.volume_id)
    timings["load_volume"] = time.perf_counter() - start
    reason = model.accepts(volume)
    if reason is not None:
        raise ModelError(f"model {name!r} cannot run on this series: {reason}")
    start = time.perf_counter()
    prediction = stamp(model.predict(volume), model.info)
    timings["predict"] = time.perf_counter() - start
    return prediction, volume, timings


def _volume_json(volume: Volume, n_files: int) -> dict[str, Any]:
    return {
        "study_uid": volume.study_uid,
        "series_uid": volume.series_uid,
        "modality": volume.modality,
        "body_part": volume.body_part,
        "files": n_files,
        "shape": list(volume.voxels.shape),
        "spacing_mm": list(volume.spacing),
        "origin_mm": list(volume.origin),
        "is_3d": volume.is_3d,
        "first_sop_uid": volume.sources[0].sop_uid,
    }


def write_result_objects(
    prediction: Prediction, volume: Volume, files: list[Path], out_dir: Path
) -> list[Path]:
    """Write the result DICOM objects (SEG, SR, SC) of ``prediction`` into ``out_dir``.

    The objects come from ``node.results.build_result_files`` (which runs the conformance gate);
    their UIDs derive from the model, its version and the input files, so predicting the same
    files again writes the same objects.  Files are ``out_dir/<n>-<modality>.dcm``.
    """
    import hashlib

    from node.results import build_result_files
    from node.store.durable import write_durably

    key = "\x1f".join([prediction.model_name, prediction.model_version, *sorted(map(str, files))])
    job_id = "predict-" + hashlib.sha256(key.encode()).hexdigest()[:20]
    paths = []
    for n, result in enumerate(build_result_files(prediction, volume, files, job_id=job_id)):
        path = out_dir / f"{n:03d}-{str(result.dataset.Modality).lower()}.dcm"
        write_durably(path, result.data)
        paths.append(path)
    return paths


def predict(
    paths: Annotated[
        list[Path],
        typer.Argument(metavar="DICOM_PATH...", help="DICOM files or folders of one series."),
    ],
    model: Annotated[str, typer.Option("--model", help="Model name (see `ainode models list`).")],
    out: Annotated[Path, typer.Option("--out", help="Folder for prediction.json and results.")],
    config: ConfigOption = Path("ainode.yaml"),
    device: Annotated[
        str | None,
        typer.Option("--device", help="auto, cpu, cuda or cuda:N (default: inference.device)."),
    ] = None,
    isolate: Annotated[
        bool,
        typer.Option(
            "--isolate/--in-process",
            help="Run in a worker process with inference.job_timeout_seconds as deadline.",
        ),
    ] = False,
) -> None:
    """Run one model on DICOM files outside the node; writes OUT/prediction.json."""
    from node.imaging import dicom_files
    from node.models.isolation import run_isolated
    from node.models.summary import prediction_summary

    cfg = _config(config)
    files = dicom_files(paths)
    started = time.perf_counter()
    from node.models.admission import model_paths

    paths_ = model_paths(cfg.models, cfg.node.data_dir)
    args = (model, files, paths_, device or cfg.inference.device, cfg.inference.torch_threads)
    if isolate:
        prediction, volume, timings = run_isolated(
            predict_files,
            *args,
            timeout_seconds=cfg.inference.job_timeout_seconds,
            what=f"model {model!r}",
        )
    else:
        prediction, volume, timings = predict_files(*args)
    out.mkdir(parents=True, exist_ok=True)
    results = write_result_objects(prediction, volume, files, out)
    summary = prediction_summary(prediction, volume.spacing)
    summary["input"] = _volume_json(volume, len(files))
    summary["timings_seconds"] = {
        **{k: round(v, 4) for k, v in timings.items()},
        **{f"model.{k}": round(v, 4) for k, v in prediction.timings_seconds.items()},
        "total": round(time.perf_counter() - started, 4),
    }
    summary["results"] = [p.name for p in results]
    (out / "prediction.json").write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    typer.echo(str(out / "prediction.json"))
