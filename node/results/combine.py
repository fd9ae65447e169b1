"""One result set per study and rule: the predictions of every model of a rule in one SEG, one
TID 1500 SR, one key-image series and a Key Object Selection document.

``combine_predictions`` merges what the models produced over the same volume:

* segments: every model's segments get consecutive Segment Numbers in model order; the same
  anatomy (same property category and type) from two models is written once, from the model
  that comes first in ``prefer`` (then model order), and findings that referenced the other
  copy are pointed at the kept one;
* findings: a finding of one model that has the tracking id of a finding of an earlier model,
  or whose centre lies inside it (half its diameter, at least 5 mm), is the same finding: one
  tracking UID; its location and size come from the model that found it, its malignancy
  probability from the model that scored it (each NUM names its own algorithm, TID 4019);
* text: every model's report text, class probabilities and, for each model that failed,
  "model X did not run: reason".

``build_combined_results`` writes them (PS3.3 A.51 SEG, A.35.13 SR, A.8.1 SC, A.35.4 KOS) with
distinct series numbers ``series_number_base + 1..4`` and descriptions ``AI results <kind>``.
"""

from __future__ import annotations

import datetime as dt
import logging
import math
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, replace

import highdicom as hd
import numpy as np
import numpy.typing as npt
from pydicom.dataset import Dataset
from pydicom.sr.codedict import codes
from pydicom.valuerep import DT

from node.errors import ResultError
from node.results.identity import ResultContext
from node.results.modules import drop_reference_purposes
from node.results.sc import build_heatmap_sc
from node.results.seg import build_seg
from node.results.sources import SourceSet, quiet_highdicom
from node.results.sr import build_sr
from node.results.uids import algorithm_device_uid
from node.types import Finding, Prediction, SegmentDescription, Volume

__all__ = ["Combined", "build_combined_results", "combine_predictions"]

log = logging.getLogger(__name__)

_MIN_SAME_MM = 5.0


@dataclass(frozen=True, slots=True)
class Combined:
    """Predictions of several models merged into one, with who produced what."""

    prediction: Prediction
    #: combined label -> the model that made the segment
    segment_models: Mapping[int, str]
    #: tracking id -> (model that found it, model that scored it or None)
    finding_models: Mapping[str, tuple[str, str | None]]
    #: model name -> version
    versions: Mapping[str, str]
    #: model name -> device UID
    device_uids: Mapping[str, str]
    #: extra report text (class probabilities, failed models)
    notes: tuple[str, ...]
    #: the model of each heat-map, in ``prediction.heatmaps`` order
    heatmap_models: tuple[str, ...] = ()


def _key(sd: SegmentDescription) -> tuple[str, str, str, str]:
    return (sd.category.value, sd.category.scheme, sd.property_type.value, sd.property_type.scheme)


def _same(a: Finding, b: Finding) -> bool:
    if a.tracking_id == b.tracking_id:
        return True
    reach = max((a.diameter_mm or 0.0) / 2.0, _MIN_SAME_MM)
    return math.dist(a.center_xyz, b.center_xyz) <= reach


def combine_predictions(
    predictions: Sequence[Prediction],
    *,
    prefer: Sequence[str] = (),
    failed: Mapping[str, str] | None = None,
) -> Combined:
    """Merge the predictions of one rule's models (all over the same volume).

    Parameters
    ----------
    predictions
        In rule order (the order decides segment numbers and, after ``prefer``, which model's
        segment is kept when two models segment the same structure).
    prefer
        Model names whose segments win, first first (``results.prefer`` of the rule).
    failed
        Model name -> reason, for the models of the rule that did not run.

    Raises
    ------
    ResultError
        No prediction, or label maps of different shapes.
    """
    if not predictions:
        raise ResultError("nothing to combine: no model produced a prediction")
    rank = {name: i for i, name in enumerate(prefer)}
    order = sorted(
        range(len(predictions)),
        key=lambda i: (rank.get(predictions[i].model_name, len(rank)), i),
    )
    kept: dict[tuple[str, str, str, str], tuple[int, int]] = {}  # key -> (prediction, label)
    for i in order:
        for sd in predictions[i].segments:
            kept.setdefault(_key(sd), (i, sd.label))
    combined_map, segments, segment_models, remap = _merge_segments(predictions, kept)
    findings, finding_models = _merge_findings(predictions, remap)
    notes = [
        f"Class probabilities ({p.model_name} {p.model_version}): "
        + "; ".join(f"{k}: {v:.3f}" for k, v in sorted(p.class_probabilities.items()))
        for p in predictions
        if p.class_probabilities
    ]
    notes += [f"model {m} did not run: {reason}" for m, reason in sorted((failed or {}).items())]
    notes += list(dict.fromkeys(p.prior_note for p in predictions if p.prior_note))
    texts = [p.text for p in predictions if p.text]
    first = predictions[order[0]]
    resolved: dict[str, Finding] = {}
    for p in predictions:  # one per prior nodule, whichever models compared it
        for r in p.resolved:
            resolved.setdefault(r.tracking_uid or r.tracking_id, r)
    merged = Prediction(
        model_name=first.model_name,
        model_version=first.model_version,
        task="combined",
        is_demo=any(p.is_demo for p in predictions),
        label_map=combined_map,
        segments=tuple(segments),
        findings=tuple(findings),
        heatmaps=tuple(h for p in predictions for h in p.heatmaps),
        text="\n\n".join(texts) if texts else None,
        resolved=tuple(resolved.values()),
    )
    return Combined(
        prediction=merged,
        segment_models=segment_models,
        finding_models=finding_models,
        versions={p.model_name: p.model_version for p in predictions},
        device_uids={
            p.model_name: p.device_uid
            or algorithm_device_uid(model_name=p.model_name, model_version=p.model_version)
            for p in predictions
        },
        notes=tuple(notes),
        heatmap_models=tuple(p.model_name for p in predictions for _ in p.heatmaps),
    )


def _merge_segments(
    predictions: Sequence[Prediction], kept: Mapping[tuple[str, str, str, str], tuple[int, int]]
) -> tuple[
    npt.NDArray[np.uint8] | None,
    list[SegmentDescription],
    dict[int, str],
    dict[tuple[int, int], int],
]:
    """One label map of the kept segments, numbered 1.. in rule order; which model made each;
    and (prediction, own label) -> combined label, a dropped duplicate mapped to its kept copy."""
    shape = next((p.label_map.shape for p in predictions if p.label_map is not None), None)
    combined_map: npt.NDArray[np.uint8] | None = None
    segments: list[SegmentDescription] = []
    segment_models: dict[int, str] = {}
    remap: dict[tuple[int, int], int] = {}  # (prediction, own label) -> combined label
    number = 0
    for i, pred in enumerate(predictions):
        if pred.label_map is None:
            continue
        if pred.label_map.shape != shape:
            raise ResultError(f"{pred.model_name}: label map shape differs from the others")
        for sd in sorted(pred.segments, key=lambda s: s.label):
            if kept[_key(sd)] != (i, sd.label):
                continue
            mask = pred.label_map == sd.label
            if not mask.any():
                continue
            number += 1
            if combined_map is None:
                combined_map = np.zeros(shape, dtype=np.uint8)
            combined_map[mask] = number  # a later segment overlapping an earlier one wins there
            segments.append(replace(sd, label=number))
            segment_models[number] = pred.model_name
            remap[(i, sd.label)] = number
    for i, pred in enumerate(predictions):  # a dropped duplicate -> the kept copy
        for sd in pred.segments:
            if (i, sd.label) not in remap and kept[_key(sd)] in remap:
                remap[(i, sd.label)] = remap[kept[_key(sd)]]
    return combined_map, segments, segment_models, remap


def _merge_findings(
    predictions: Sequence[Prediction], remap: Mapping[tuple[int, int], int]
) -> tuple[list[Finding], dict[str, tuple[str, str | None]]]:
    """The findings of every model, one per lesion (``_same``), with the first model's finding
    completed from the others'; tracking id -> (model that found it, model that scored it)."""
    findings: list[Finding] = []
    finding_models: dict[str, tuple[str, str | None]] = {}
    for i, pred in enumerate(predictions):
        for f in pred.findings:
            label = remap.get((i, f.segment_label)) if f.segment_label is not None else None
            match = next((n for n, g in enumerate(findings) if _same(g, f)), None)
            if match is None:
                findings.append(replace(f, segment_label=label))
                scorer = pred.model_name if f.malignancy_probability is not None else None
                finding_models[f.tracking_id] = (pred.model_name, scorer)
                continue
            g = findings[match]
            found_by, scored_by = finding_models[g.tracking_id]
            if g.malignancy_probability is None and f.malignancy_probability is not None:
                g = replace(g, malignancy_probability=f.malignancy_probability)
                scored_by = pred.model_name
            if g.segment_label is None and label is not None:
                g = replace(g, segment_label=label)
            g = replace(
                g,
                diameter_mm=g.diameter_mm if g.diameter_mm is not None else f.diameter_mm,
                volume_mm3=g.volume_mm3 if g.volume_mm3 is not None else f.volume_mm3,
                finding_site=g.finding_site or f.finding_site,
                tracking_uid=g.tracking_uid or f.tracking_uid,
                tracking=g.tracking or f.tracking,
            )
            findings[match] = g
            finding_models[g.tracking_id] = (found_by, scored_by)
    return findings, finding_models


def _context(
    combined: Combined, model: str, *, job_id: str, when: dt.datetime, base: int
) -> ResultContext:
    # every model's version: a new version of any of them gives the set new UIDs
    versions = sorted(combined.versions.items())
    return ResultContext(
        job_id=job_id,
        model_name=model,
        model_version=combined.versions[model],
        is_demo=combined.prediction.is_demo,
        content_datetime=when,
        series_number_base=base,
        device_uid=combined.device_uids[model],
        uid_scope="".join(f"\x1f{m}={v}" for m, v in versions) if len(versions) > 1 else "",
    )


def _kos(images: Sequence[Dataset], ctx: ResultContext, *, index: int) -> Dataset:
    """Key Object Selection document flagging the key images (PS3.3 A.35.4, TID 2010): title
    "Of Interest" (CID 7010), description "AI results", ainode's device as observer."""
    observer = hd.sr.ObserverContext(
        observer_type=codes.DCM.Device,
        observer_identifying_attributes=hd.sr.DeviceObserverIdentifyingAttributes(
            uid=ctx.device_uid, name=ctx.model_name[:64], manufacturer_name="ainode"
        ),
    )
    with quiet_highdicom():
        kos = hd.ko.KeyObjectSelectionDocument(
            evidence=list(images),
            content=hd.ko.KeyObjectSelection(
                document_title=codes.DCM.OfInterest,
                referenced_objects=list(images),
                observer_device_context=observer,
                description="AI results",
            ),
            series_instance_uid=ctx.uid(index, "series"),
            series_number=ctx.series_number(index),
            sop_instance_uid=ctx.uid(index, "sop"),
            instance_number=1,
            manufacturer="ainode",
        )
    drop_reference_purposes(kos)
    equipment: Dataset = kos  # (highdicom types SoftwareVersions as one string)
    equipment.ManufacturerModelName = ctx.model_name[:64]  # as the set's other objects
    equipment.SoftwareVersions = ctx.software_versions
    kos.ContentDate = ctx.content_date
    kos.ContentTime = ctx.content_time
    kos.SeriesDate = ctx.content_date
    kos.SeriesTime = ctx.content_time
    # highdicom stamps "now": frozen, so a rebuilt set is byte-identical (and delivered once)
    kos.InstanceCreationDate = ctx.content_date
    kos.InstanceCreationTime = ctx.content_time
    for item in kos.get("ContributingEquipmentSequence", []):
        if "ContributionDateTime" in item:
            item.ContributionDateTime = DT(ctx.content_datetime.replace(microsecond=0))
    return kos


def _name_series(ds: Dataset, kind: str, *, rule: str, is_demo: bool) -> None:
    text = f"AI results {kind} ({rule})"
    ds.SeriesDescription = (text + (" DEMO" if is_demo else ""))[:64]


def build_combined_results(
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
) -> list[Dataset]:
    """One SEG, one TID 1500 SR, one key-image SC series and a KOS for one study and rule.

    Parameters
    ----------
    predictions
        Every prediction of the rule's models over ``volume``, in rule order.
    volume, sources
        The series the models saw and its (sanitised) source headers.
    job_id
        Identifier of the combined result set (e.g. derived from the jobs it combines); with
        the models' versions it determines every UID, so a rebuild is byte-identical.
    rule
        The rule's name (named in every Series Description).
    content_datetime
        Frozen content date-time.
    series_number_base
        SEG, SR, SC and KOS get Series Numbers ``base + 1`` .. ``base + 4``.
    prefer, failed
        See ``combine_predictions``.
    taken_series_numbers
        Series Numbers already used in the study (source series): the base moves up by 1000
        until none of ``base + 1..4`` is taken.

    Returns
    -------
    list[pydicom.Dataset]
        SEG (when any model segmented), SR (when there are findings, text or notes), heat-map
        SCs (one series), KOS (when there are key images). Not yet gated: pass them to
        ``check_results``.
    """
    taken = set(taken_series_numbers)
    while taken & set(range(series_number_base + 1, series_number_base + 5)):
        series_number_base += 1000
    combined = combine_predictions(predictions, prefer=prefer, failed=failed)
    pred = combined.prediction
    contexts = {
        m: _context(combined, m, job_id=job_id, when=content_datetime, base=series_number_base)
        for m in combined.versions
    }
    main = contexts[pred.model_name]
    out: list[Dataset] = []
    seg = None
    if pred.label_map is not None:
        seg = build_seg(
            pred,
            volume,
            sources,
            main,
            index=0,
            segment_contexts={n: contexts[m] for n, m in combined.segment_models.items()},
        )
        _name_series(seg, "SEG", rule=rule, is_demo=pred.is_demo)
        out.append(seg)
    # an SR when there is something to say; segmentations alone (every model ran): the SEG
    if pred.findings or pred.text or combined.notes:
        sr = build_sr(
            pred,
            volume,
            sources,
            main,
            index=1,
            seg=seg,
            seg_numbers={s.label: s.label for s in pred.segments} if seg is not None else None,
            finding_contexts={
                t: (contexts[a], contexts[b] if b is not None else None)
                for t, (a, b) in combined.finding_models.items()
            },
            notes=combined.notes,
            statement_models=list(contexts.values()),
        )
        _name_series(sr, "SR", rule=rule, is_demo=pred.is_demo)
        out.append(sr)
    images = []
    for n, (heatmap, model) in enumerate(
        zip(pred.heatmaps, combined.heatmap_models, strict=True), start=1
    ):
        # the banner and equipment name the heat-map's own model; one series for all
        sc = build_heatmap_sc(heatmap, volume, sources, contexts[model], index=2)
        sc.SeriesInstanceUID = main.uid(2, "series")
        sc.SeriesNumber = main.series_number(2)
        sc.SOPInstanceUID = main.uid(2, f"sop/{n}")
        sc.file_meta.MediaStorageSOPInstanceUID = sc.SOPInstanceUID
        sc.InstanceNumber = n
        _name_series(sc, "key images", rule=rule, is_demo=pred.is_demo)
        images.append(sc)
    out += images
    if images:
        kos = _kos(images, main, index=3)
        _name_series(kos, "KOS", rule=rule, is_demo=pred.is_demo)
        main.add_algorithm_equipment(kos)
        out.append(kos)
    log.info(
        "results.combined_built",
        extra={"job_id": job_id, "models": len(contexts), "objects": len(out)},
    )
    return out
