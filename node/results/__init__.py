"""Results: a Prediction plus the source headers -> standard DICOM objects (stage 5).

``build_results`` chooses what to write from what the Prediction holds:

=====================================  ==========================================================
Prediction                             objects
=====================================  ==========================================================
``label_map`` + ``segments``           DICOM-SEG (BINARY, one segment per label)
``findings`` (+ SEG refs, text)        TID 1500 Measurement Report (Comprehensive 3D SR)
``class_probabilities`` w/o findings   TID 1500 SR with a Certainty-of-Finding NUM (+ text)
``text`` alone                         TID 1500 SR with the impression as TEXT
``heatmaps``                           RGB Secondary Capture per heat-map over its key slice
``derived_voxels``                     derived CT/MR series (DERIVED\\SECONDARY), else SC series
``registration`` (prior -> current)    Spatial Registration (PS3.3 A.39), ``registration.py``
=====================================  ==========================================================

Every object passes ``check_results`` (the gate) before it is returned.  ``build_result_files``
also returns each object's file bytes: the gate encodes the objects anyway (it parses them back
from their bytes), so writers need not encode them a second time.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from pydicom.dataset import Dataset

from node.errors import ResultError
from node.imaging.sop_classes import SC_CLASS
from node.results.combine import build_combined_results
from node.results.derived import build_derived_series, can_derive
from node.results.gate import check_results, encode
from node.results.identity import ResultContext
from node.results.registration import build_spatial_registration
from node.results.rejection import build_rejection_note
from node.results.sc import build_gray_sc, build_heatmap_sc
from node.results.seg import build_seg, segment_numbers
from node.results.sources import SourceSet, load_sources
from node.results.sr import build_sr
from node.results.uids import result_uid
from node.types import Prediction, ResultKind, ResultObject, Volume

__all__ = [
    "ResultFile",
    "build_combined_files",
    "build_combined_results",
    "build_rejection_note",
    "build_result_files",
    "build_results",
    "check_results",
    "load_sources",
    "result_kind",
    "result_object",
    "result_uid",
]

log = logging.getLogger(__name__)


def result_kind(ds: Dataset) -> ResultKind:
    """Kind of a result object built here (for the store and delivery)."""
    modality = str(ds.get("Modality", ""))
    if modality == "SEG":
        return ResultKind.SEG
    if modality == "SR":
        return ResultKind.SR
    if str(ds.get("SOPClassUID", "")) == SC_CLASS:
        return ResultKind.SC
    if modality == "REG":
        return ResultKind.REG
    return ResultKind.DERIVED


def result_object(ds: Dataset, path: Path, *, model: str) -> ResultObject:
    """The ``ResultObject`` of result ``ds`` written (or to be written) at ``path``.

    ``ds`` carries its File Meta Information (``encode`` wrote it from there, or it was read
    from a file): its Transfer Syntax UID is the one the file has.
    """
    return ResultObject(
        path=path,
        sop_class_uid=str(ds.SOPClassUID),
        sop_uid=str(ds.SOPInstanceUID),
        study_uid=str(ds.StudyInstanceUID),
        series_uid=str(ds.SeriesInstanceUID),
        transfer_syntax_uid=str(ds.file_meta.TransferSyntaxUID),
        modality=str(ds.Modality),
        kind=result_kind(ds),
        model=model,
    )


@dataclass(frozen=True, slots=True)
class ResultFile:
    """One result object and its DICOM file bytes (PS3.10), ready to be written or sent."""

    dataset: Dataset
    data: bytes


def build_result_files(
    prediction: Prediction,
    volume: Volume,
    source_paths: Sequence[Path] | SourceSet,
    *,
    job_id: str,
    content_datetime: dt.datetime | None = None,
    series_number_base: int = 9000,
    references: SourceSet | None = None,
) -> list[ResultFile]:
    """``build_results`` (gate included) plus the file bytes of every object, encoded once.

    Parameters and errors as ``build_results``; the bytes are what the gate parsed back.
    """
    sources = source_paths if isinstance(source_paths, SourceSet) else load_sources(source_paths)
    datasets = build_results(
        prediction,
        volume,
        sources,
        job_id=job_id,
        content_datetime=content_datetime,
        check=False,
        series_number_base=series_number_base,
    )
    files = [encode(ds) for ds in datasets]
    check_results(datasets, sources, encoded=files, references=references)
    return [ResultFile(dataset=ds, data=data) for ds, data in zip(datasets, files, strict=True)]


def build_combined_files(
    predictions: Sequence[Prediction],
    volume: Volume,
    sources: SourceSet,
    *,
    job_id: str,
    rule: str,
    content_datetime: dt.datetime,
    series_number_base: int = 9000,
    prefer: Sequence[str] = (),
    failed: Mapping[str, str] | None = None,
    taken_series_numbers: Collection[int] = (),
) -> list[ResultFile]:
    """``build_combined_results`` through the gate, with each object's file bytes (encoded once).

    Parameters as ``build_combined_results``.

    Raises
    ------
    ResultError
        Nothing to combine, or an object fails the gate.
    """
    datasets = build_combined_results(
        predictions,
        volume,
        sources,
        job_id=job_id,
        rule=rule,
        content_datetime=content_datetime,
        series_number_base=series_number_base,
        prefer=prefer,
        failed=failed,
        taken_series_numbers=taken_series_numbers,
    )
    files = [encode(ds) for ds in datasets]
    check_results(datasets, sources, encoded=files)
    return [ResultFile(dataset=ds, data=data) for ds, data in zip(datasets, files, strict=True)]


def _registration(
    prediction: Prediction, volume: Volume, sources: SourceSet, ctx: ResultContext, *, index: int
) -> Dataset:
    """The Spatial Registration of ``prediction.registration`` (prior -> ``volume``)."""
    registration = prediction.registration
    if registration is None or registration.moving is None:
        raise ResultError(
            f"model {prediction.model_name} returned a registration without its moving (prior) "
            "series; set Registration.moving (RegisteredSeries.of(prior volume))"
        )
    return build_spatial_registration(
        registration,
        fixed=volume,
        moving=registration.moving,
        source=sources.first(volume),
        context=ctx,
        index=index,
    )


def build_results(
    prediction: Prediction,
    volume: Volume,
    source_paths: Sequence[Path] | SourceSet,
    *,
    job_id: str,
    content_datetime: dt.datetime | None = None,
    check: bool = True,
    workers: int = 0,
    series_number_base: int = 9000,
    references: SourceSet | None = None,
) -> list[Dataset]:
    """Build every result object of one job's prediction.

    Parameters
    ----------
    prediction
        What the model produced.
    volume
        The volume the model saw (voxels, geometry, per-slice source references).
    source_paths
        Files of the source series (headers are read, pixels are not), or loaded headers.
    job_id
        The job's id; with the model version it determines every UID (PS3.5 B.2).
    content_datetime
        Content/creation date-time written into every object. Pass a value fixed for the job
        (e.g. its creation time) so a retry is byte-identical; default: now (UTC, seconds).
    check
        Run the conformance gate (``check_results``) before returning.
    workers
        highdicom SEG frame-encoding workers (0 = in this thread).
    series_number_base
        Result series ``i`` of this job gets Series Number ``series_number_base + 1 + i``
        (PS3.3 C.7.3.1); give each job of a study its own base so numbers do not repeat.
    references
        Headers of the registered (prior) series a Spatial Registration references (for the
        gate).

    Returns
    -------
    list[pydicom.Dataset]
        In order: SEG, SR, heat-map SCs, derived series, Spatial Registration (each present
        only when applicable).

    Raises
    ------
    ResultError
        The prediction cannot be written, or an object fails the gate.
    """
    sources = source_paths if isinstance(source_paths, SourceSet) else load_sources(source_paths)
    when = content_datetime or dt.datetime.now(dt.UTC).replace(microsecond=0)
    ctx = ResultContext.from_prediction(
        prediction, job_id=job_id, content_datetime=when, series_number_base=series_number_base
    )
    out: list[Dataset] = []
    index = 0
    seg: Dataset | None = None
    if prediction.label_map is not None and not prediction.label_map.any():
        # Nothing segmented: an empty SEG shows nothing and some viewers reject it.
        log.info("results.seg_skipped_empty", extra={"job_id": job_id})
    elif prediction.label_map is not None:
        seg = build_seg(prediction, volume, sources, ctx, index=index, workers=workers)
        out.append(seg)
        index += 1
    if (
        prediction.findings
        or prediction.class_probabilities
        or prediction.text
        or prediction.resolved
        or prediction.prior_note
    ):
        out.append(
            build_sr(
                prediction,
                volume,
                sources,
                ctx,
                index=index,
                seg=seg,
                seg_numbers=segment_numbers(prediction) if seg is not None else None,
            )
        )
        index += 1
    for heatmap in prediction.heatmaps:
        out.append(build_heatmap_sc(heatmap, volume, sources, ctx, index=index))
        index += 1
    if prediction.derived_voxels is not None:
        if can_derive(volume, sources):
            out += build_derived_series(
                prediction.derived_voxels, volume, sources, ctx, index=index
            )
        else:
            out += build_gray_sc(prediction.derived_voxels, volume, sources, ctx, index=index)
        index += 1
    if prediction.registration is not None:
        out.append(_registration(prediction, volume, sources, ctx, index=index))
        index += 1
    if check:
        check_results(out, sources, references=references)
    log.info(
        "results.built",
        extra={"job_id": job_id, "objects": len(out), "series": index},
    )
    return out
