"""What a worker process does with one job: series -> Volume -> model -> result objects on disk.

Runs inside an engine's child process (``runner="node.jobs.pipeline:run_job"``), so a model
that crashes takes only this process with it.  Result files are written under
``data_dir/results/<job_id>/`` with a temp-file + fsync + rename + directory fsync, and their
UIDs are deterministic (node/results/uids.py): a job run again after a crash writes the same
objects, which the outbox then recognises as already queued or delivered.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from node.errors import ImagingError, InputError, ModelError, NotFoundError
from node.jobs.prediction_file import dump_prediction, load_prediction
from node.jobs.priors import LoadedPrior, load_prior
from node.store.durable import write_durably
from node.types import Instance, Job, JobState, ResultObject

__all__ = ["PREDICTION_FILE", "prepare", "run_combine", "run_job", "run_series"]

#: What a model job whose results are combined keeps for the combine job: its ``Prediction`` as
#: an ``.npz`` archive (``node.jobs.prediction_file``; never a pickle, which would run code).
PREDICTION_FILE = "prediction.npz"

log = logging.getLogger(__name__)

#: Why a model that reads priors ran without one on a remote worker.
_NO_LOADER = "prior not read: remote workers (queue: redis://) do not load prior series"
#: What a combined job's outputs say about its registration.
_NOT_COMBINED = (
    "not written: a registration is not part of a combined result set; give "
    "chest-ct-register a rule of its own (or results.combine: false) to deliver it"
)

_REGISTRY: Any = None

#: The last series this worker loaded: (key, volume, source headers).  Jobs of one study usually
#: run one after another on the same series (seg, detect, classify, report), so the worker reads
#: the files and headers once; the key holds every instance's SOP UID and content hash, so a
#: changed series (late instance, replaced file) is read again.
_LAST_SERIES: tuple[tuple[str, ...], Any, Any] | None = None


def _registry(context: Mapping[str, Any]) -> Any:
    global _REGISTRY
    if _REGISTRY is None:
        import torch

        from node.models.registry import discover

        threads = int(context.get("torch_threads") or 0)
        if threads:
            torch.set_num_threads(threads)
        _REGISTRY = discover(
            [Path(p) for p in context.get("model_paths", [])],
            device=str(context.get("device", "auto")),
        )
    return _REGISTRY


def _model_for(context: Mapping[str, Any], job: Job) -> Any:
    """The model ``job`` runs; the registry is discovered again when the router recorded
    another version of it (``Job.model_version``: the model was re-registered since this worker
    started), so a re-routed job runs the new version."""
    global _REGISTRY
    wanted = job.model_version
    registry = _registry(context)
    if wanted is not None:
        have = {e.name: e.info.version for e in registry.entries() if e.info is not None}
        if job.model in have and have[job.model] != wanted:
            log.info(
                "models.rediscovered",
                extra={"model": job.model, "had": have[job.model], "wanted": str(wanted)},
            )
            _REGISTRY = None
            registry = _registry(context)
    return registry.get(job.model)


def prepare(context: Mapping[str, Any]) -> None:
    """Warm a new worker process up before its first job: torch, the model registry, imaging.

    The engine calls this once per worker (``EmbeddedEngine(prepare=...)``), so start-up time is
    not counted against a job's timeout and the first job of a worker is as fast as the next.
    """
    import node.imaging  # noqa: F401 - import cost paid here, not in the first job
    import node.results  # noqa: F401

    _registry(context)


def _series(
    key: tuple[str, ...] | None, paths: Sequence[Path], volume_id: str | None = None
) -> tuple[Any, Any]:
    """Volume and source headers of a series, read once per worker while it is unchanged.

    ``key`` identifies the series' content (None: do not cache).  The model gets its own copy of
    the voxels (a memory copy is ~50x faster than reading the files again), so a model that
    writes into its input cannot affect the next job.
    """
    global _LAST_SERIES
    from dataclasses import replace

    if key is None:
        return _read_series(paths, volume_id)
    key = (*key, volume_id or "")
    if _LAST_SERIES is None or _LAST_SERIES[0] != key:
        _LAST_SERIES = None  # free the previous series before reading the next
        _LAST_SERIES = (key, *_read_series(paths, volume_id))
    _, volume, sources = _LAST_SERIES
    return replace(volume, voxels=volume.voxels.copy()), sources


def _read_series(paths: Sequence[Path], volume_id: str | None = None) -> tuple[Any, Any]:
    """Volume and source headers, each file's header parsed once for both."""
    from node.imaging import load_volume
    from node.imaging.decode import read_before_pixels
    from node.results.sources import load_sources

    if volume_id is not None:
        read = {}
        for p in paths:
            try:
                read[Path(p)] = read_before_pixels(Path(p))
            except ImagingError:
                continue  # named among the split's dropped instances
        paths = [p for p in paths if Path(p) in read]
    else:
        read = {Path(p): read_before_pixels(Path(p)) for p in paths}
    volume = load_volume(paths, read=read, volume_id=volume_id)
    if volume_id is not None:
        used = {s.sop_uid for s in volume.sources}
        read = {p: r for p, r in read.items() if str(r[0].get("SOPInstanceUID", "")) in used}
        paths = [p for p in paths if Path(p) in read]
    # the volume is built: its reader is done with these datasets, the sources may sanitise them
    return volume, load_sources(paths, datasets={p: ds for p, (ds, _) in read.items()})


def run_job(job: Job, context: Mapping[str, Any]) -> dict[str, Any]:
    """Run ``job`` end to end and return what it wrote (``objects``: ``ResultObject``s, paths
    relative to ``data_dir``).

    ``context`` holds ``data_dir``, ``model_paths``, ``device``, ``torch_threads`` and
    ``created_at`` per job id (the job's creation time, frozen into the objects so that a rerun
    is byte-identical).
    """
    from node.jobs.store import COMBINE_MODEL
    from node.store.index import Index

    if job.model == COMBINE_MODEL:
        return run_combine(job, context)
    data_dir = Path(context["data_dir"])
    t0 = time.perf_counter()
    index = Index(data_dir / "index.sqlite")
    try:
        if len(job.series_uids) != 1:
            raise ModelError(f"a job runs on exactly one series, got {len(job.series_uids)}")
        instances = index.series_instances(job.series_uids[0])
    finally:
        index.close()
    if not instances:
        raise NotFoundError(f"series {job.series_uids[0]} has no stored instances")
    paths = [i.path if i.path.is_absolute() else data_dir / i.path for i in instances]
    return run_series(
        job,
        paths,
        context=context,
        out_dir=data_dir / "results" / job.job_id,
        relative_to=data_dir,
        timings={"route_lookup": time.perf_counter() - t0},
        cache_key=_content_key(job.series_uids[0], instances),
        prior_loader=lambda: load_prior(job, data_dir=data_dir, read=_read_series),
    )


def _content_key(series_uid: str, instances: Sequence[Instance]) -> tuple[str, ...]:
    return (series_uid, *sorted(f"{i.sop_uid}:{i.sha256}" for i in instances))


def run_series(
    job: Job,
    paths: Sequence[Path],
    *,
    context: Mapping[str, Any],
    out_dir: Path,
    relative_to: Path,
    timings: Mapping[str, float] | None = None,
    cache_key: tuple[str, ...] | None = None,
    prior_loader: Callable[[], LoadedPrior] | None = None,
) -> dict[str, Any]:
    """Run ``job``'s model on the series files ``paths`` and write its objects to ``out_dir``.

    Shared by the embedded engine (``run_job``) and remote workers (``node.jobs.remote``),
    which fetched the series over WADO-RS first.

    Parameters
    ----------
    job:
        The job (its model, id and frozen creation time decide the objects and their UIDs).
    paths:
        The series' instance files.
    context:
        ``model_paths``, ``device``, ``torch_threads`` (see ``run_job``).
    out_dir:
        Folder receiving ``NNN-<modality>.dcm`` files and ``prediction.json``.
    relative_to:
        Object paths in the returned outputs are relative to this folder.
    timings:
        Timings measured before (seconds), merged into the outputs.
    cache_key:
        Content key of the series: the worker keeps the last loaded series under it, so the
        next job on the same unchanged series skips reading it (None: no caching).
    prior_loader:
        Loads the job's prior (``node.jobs.priors.load_prior``) for a model that reads priors
        (``Model.uses_prior``); None: no prior can be read here (remote workers), the model
        runs without one and the outputs say so.

    Raises
    ------
    ModelError
        The model refuses the series.
    """
    from node.models.summary import prediction_summary
    from node.results import build_result_files

    timings = dict(timings or {})
    model = _model_for(context, job)

    t = time.perf_counter()
    volume_id = job.parameters.get("_volume")
    try:
        volume, sources = _series(cache_key, paths, str(volume_id) if volume_id else None)
    except ImagingError as exc:
        # the bytes will not change on a retry: the job fails once, as a source problem
        raise InputError(f"input: {exc}") from exc
    timings["load"] = time.perf_counter() - t
    refusal = model.accepts(volume)
    if refusal is not None:
        raise ModelError(f"model {job.model!r} cannot run on this series: {refusal}")

    prediction, loaded = _predict(model, volume, prior_loader, timings)

    t = time.perf_counter()
    combined_by = job.parameters.get("_combined_by")
    objects: list[ResultObject] = []
    if combined_by:
        # the combine job writes this model's part of the rule's one result set (a registration
        # is not part of it: the prediction file does not carry it, docs/followup.md)
        write_durably(out_dir / PREDICTION_FILE, dump_prediction(prediction))
    else:
        files = build_result_files(
            prediction,
            volume,
            sources,
            job_id=_uid_key(job),
            content_datetime=_content_datetime(job),
            series_number_base=job.series_number_base or 9000,
            references=loaded.sources if loaded is not None else None,
        )
        objects = _write_objects(files, out_dir, relative_to, model=job.model)
    summary = prediction_summary(prediction, volume.spacing)
    summary["timings_seconds"] = {**prediction.timings_seconds, **timings}
    write_durably(out_dir / "prediction.json", json.dumps(summary, indent=2).encode())
    timings["write"] = time.perf_counter() - t
    log.info("job.results_written", extra={"job_id": job.job_id, "objects": len(objects)})
    out: dict[str, Any] = {"objects": objects, "timings_seconds": timings, "summary": summary}
    if combined_by:
        out["combined_by"] = str(combined_by)
    if loaded is not None:
        out["prior"] = loaded.to_json()
    if prediction.registration is not None and combined_by:
        out["registration"] = _NOT_COMBINED
    if volume_id:
        out["volume_id"] = str(volume_id)
    if job.parameters.get("_dropped"):
        # partial: allow - the instances left out are named with the result (issue 24)
        out["dropped_instances"] = list(job.parameters["_dropped"])
    if volume.filled_slices:
        # slices interpolated to fill a small gap (0-based, volume order); the results say so
        out["interpolated_slices"] = list(volume.filled_slices)
    if sources.repairs:
        # what sanitising changed in the copied source headers (keywords and reasons, no values)
        out["source_repairs"] = list(sources.repairs)
    return out


def _predict(
    model: Any,
    volume: Any,
    prior_loader: Callable[[], LoadedPrior] | None,
    timings: dict[str, float],
) -> tuple[Any, LoadedPrior | None]:
    """The model's stamped ``Prediction`` (its Device UID added) and, for a model that reads
    priors, the prior it was given (``predict_with_prior``; None for the others)."""
    from node.models.identity import stamp

    loaded: LoadedPrior | None = None
    if getattr(model, "uses_prior", False):
        t = time.perf_counter()
        loaded = prior_loader() if prior_loader is not None else LoadedPrior(None, _NO_LOADER)
        timings["prior_load"] = time.perf_counter() - t
    t = time.perf_counter()
    if loaded is not None:
        raw = model.predict_with_prior(volume, loaded.prior, loaded.reason)
    else:
        raw = model.predict(volume)
    timings["model"] = time.perf_counter() - t
    return stamp(raw, model.info), loaded


def _content_datetime(job: Job) -> dt.datetime:
    """The job's frozen creation time (so that a rerun is byte-identical)."""
    created = float(job.created_at or 0.0) or time.time()
    return dt.datetime.fromtimestamp(int(created), tz=dt.UTC)


def _write_objects(
    files: Sequence[Any], out_dir: Path, relative_to: Path, *, model: str
) -> list[ResultObject]:
    """Write each ``ResultFile`` durably as ``NNN-<modality>.dcm``; what the outputs list.

    A file of an earlier run with other bytes (a re-run with a new model version: other UIDs)
    is kept, and the new object goes to ``NNN-<modality>-<hash of its SOP UID>.dcm``: the
    earlier object is still in the outbox, and its rejection note is built from that file.
    """
    from node.results import result_object

    objects = []
    for n, result in enumerate(files):
        ds = result.dataset
        name = f"{n:03d}-{str(ds.Modality).lower()}.dcm"
        if _other_bytes(out_dir / name, result.data):
            tag = hashlib.sha256(str(ds.SOPInstanceUID).encode()).hexdigest()[:12]
            name = f"{n:03d}-{str(ds.Modality).lower()}-{tag}.dcm"
        write_durably(out_dir / name, result.data)
        objects.append(result_object(ds, (out_dir / name).relative_to(relative_to), model=model))
    return objects


def _uid_key(job: Job) -> str:
    """What a job's result UIDs derive from (with the model version): its id, plus its
    revision once a re-routing brought it back after it was retired (its earlier objects were
    rejected, and a PACS that applied the note must not receive their UIDs again)."""
    revision = int(job.parameters.get("_revision", 0) or 0)
    return job.job_id if revision == 0 else f"{job.job_id}/r{revision}"


def _other_bytes(path: Path, data: bytes) -> bool:
    """Whether ``path`` holds a file other than ``data`` (False when absent)."""
    try:
        if path.stat().st_size != len(data):
            return True
        return path.read_bytes() != data
    except FileNotFoundError:
        return False


def run_combine(job: Job, context: Mapping[str, Any]) -> dict[str, Any]:
    """Run a combine job: the predictions of the model jobs in ``_combine_of`` (all final) ->
    one SEG, SR, key-image series and KOS under ``data_dir/results/<job_id>/``.

    A model job that did not succeed (failed, dead, cancelled) or was not applicable
    (``_not_run``) is named in the SR: "model X did not run: reason".  The UIDs derive from the
    combine job's id (itself derived from the jobs it combines) and the content date-time is
    frozen, so a rerun after a crash writes the same bytes.

    Raises
    ------
    InputError
        No model of the rule produced a prediction: nothing to combine (a final failure).
    """
    from node.jobs.store import JobStore
    from node.results import build_combined_files
    from node.store.index import Index

    data_dir = Path(context["data_dir"])
    t0 = time.perf_counter()
    store = JobStore(data_dir / "index.sqlite")
    predictions = []
    failed: dict[str, str] = {str(k): str(v) for k, v in job.parameters.get("_not_run", {}).items()}
    models = []
    for job_id in job.parameters.get("_combine_of", []):
        record = store.get(str(job_id))
        model = record.job.model
        if record.state is not JobState.SUCCEEDED:
            failed[model] = record.reason or record.state.value
            continue
        path = data_dir / "results" / record.job.job_id / PREDICTION_FILE
        try:
            predictions.append(load_prediction(path.read_bytes()))
        except FileNotFoundError:
            failed[model] = "its prediction was not kept (it ran before results were combined)"
            continue
        models.append(model)
    if not predictions:
        reasons = "; ".join(f"{m}: {r}" for m, r in sorted(failed.items())) or "no model job"
        raise InputError(
            f"nothing to combine for rule {job.rule!r}: no model succeeded ({reasons})"
        )
    index = Index(data_dir / "index.sqlite")
    try:
        instances = index.series_instances(job.series_uids[0])
    finally:
        index.close()
    if not instances:
        raise NotFoundError(f"series {job.series_uids[0]} has no stored instances")
    paths = [i.path if i.path.is_absolute() else data_dir / i.path for i in instances]
    volume_id = job.parameters.get("_volume")
    try:
        volume, sources = _series(
            _content_key(job.series_uids[0], instances),
            paths,
            str(volume_id) if volume_id else None,
        )
    except ImagingError as exc:
        raise InputError(f"input: {exc}") from exc
    timings = {"load": time.perf_counter() - t0}
    t = time.perf_counter()
    files = build_combined_files(
        predictions,
        volume,
        sources,
        job_id=_uid_key(job),
        rule=job.rule,
        content_datetime=_content_datetime(job),
        series_number_base=job.series_number_base or 9000,
        prefer=[str(m) for m in job.parameters.get("_prefer", [])],
        failed=failed,
        taken_series_numbers=[int(n) for n in job.parameters.get("_taken_series_numbers", [])],
    )
    objects = _write_objects(files, data_dir / "results" / job.job_id, data_dir, model=job.model)
    timings["write"] = time.perf_counter() - t
    log.info(
        "job.combined_written",
        extra={"job_id": job.job_id, "models": len(models), "objects": len(objects)},
    )
    out: dict[str, Any] = {
        "objects": objects,
        "timings_seconds": timings,
        "combined": {"models": models, "not_run": dict(sorted(failed.items()))},
    }
    if volume.filled_slices:
        out["interpolated_slices"] = list(volume.filled_slices)
    if sources.repairs:
        out["source_repairs"] = list(sources.repairs)
    return out
