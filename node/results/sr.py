"""TID 1500 Measurement Report (Comprehensive 3D SR, PS3.3 A.35.13) built with highdicom.

Layout (the one OHIF 3.13.2 displays and every checker passes, see docs/results.md):
per finding, groups that share ONE Tracking Identifier and Tracking UID:

1. TID 1410 planar group: closed POLYLINE outline on the key slice, finding type/site;
2. TID 1410 planar group: the long axis as a 2-point POLYLINE carrying the Long Axis NUM;
3. TID 1411 volumetric group: the SEG segment (or, for a detection without segment, a SCOORD3D
   POINT at the centre), Volume NUM, Probability of cancer as NUM and as a coded evaluation.

OHIF merges groups by tracking UID and draws the first SCOORD, so every finding has one. Classes
without findings become one planar group (Certainty of Finding NUM) over the attention region.
The report text and the demo statement are TEXT items in the Qualitative Evaluations container
(TID 1500 row 12).

A finding compared with a prior study carries the follow-up content of ``sr_followup``.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from typing import Any

import highdicom as hd
import numpy as np
import numpy.typing as npt
from pydicom.dataset import Dataset
from pydicom.sr.codedict import codes
from pydicom.sr.coding import Code as PdCode
from scipy import ndimage

from node.errors import ResultError
from node.results.identity import DEMO_STATEMENT, ResultContext, interpolation_note
from node.results.sources import SourceSet, quiet_highdicom
from node.results.sr_followup import (
    change_evaluations,
    change_measurements,
    prior_group,
    tracking_identifier,
)
from node.types import Code, Finding, HeatMap, NoduleChange, Prediction, Volume

__all__ = ["build_sr", "malignancy_category", "procedure_reported"]

log = logging.getLogger(__name__)

_QUALITATIVE_EVALUATIONS = PdCode("C0034375", "UMLS", "Qualitative Evaluations")
_HIGH = PdCode("75540009", "SCT", "High")
_MODERATE = PdCode("6736007", "SCT", "Moderate")
_LOW = PdCode("62482003", "SCT", "Low")
_CLINICAL_FINDING = PdCode("404684003", "SCT", "Clinical finding")
_NO_UNITS = codes.UCUM.NoUnits

#: Procedure Reported by modality (TID 1500 row 4, CID 100 Quantitative Diagnostic Imaging
#: Procedures) when the source names no procedure code. Only entries that validators built on
#: older editions also know (PixelMed 20220618 lacks "XR unspecified body region"); other
#: modalities get the generic "Imaging procedure" of the same context group.
_PROCEDURE_BY_MODALITY = {
    "CT": codes.cid100.CTUnspecifiedBodyRegion,
    "MR": codes.cid100.MRIUnspecifiedBodyRegion,
}


#: (value, scheme) of every CID 100 member: TID 1500 row 4 takes its Procedure Reported from it.
_CID100 = frozenset(
    (getattr(codes.cid100, k).value, getattr(codes.cid100, k).scheme_designator)
    for k in codes.cid100.dir()
)


def procedure_reported(source: Dataset) -> hd.sr.CodedConcept:
    """The imaging procedure the report is about (IHE AIR: the procedure, not the algorithm).

    The source's own Procedure Code Sequence item when it is a member of CID 100 (the context
    group TID 1500 defines for it; local codes are not), else the unspecified-region procedure
    of its modality, else "Imaging procedure".
    """
    for item in source.get("ProcedureCodeSequence", []):
        key = (str(item.get("CodeValue", "")), str(item.get("CodingSchemeDesignator", "")))
        if key in _CID100 and item.get("CodeMeaning"):
            return hd.sr.CodedConcept(key[0], key[1], str(item.CodeMeaning)[:64])
    code = _PROCEDURE_BY_MODALITY.get(str(source.get("Modality", "")).upper())
    if code is None:
        code = codes.SCT.ImagingProcedure
    return hd.sr.CodedConcept(code.value, code.scheme_designator, code.meaning)


def malignancy_category(probability: float) -> PdCode:
    """Coded probability of cancer: High (≥ 0.7), Moderate (≥ 0.3) or Low."""
    if probability >= 0.7:
        return _HIGH
    if probability >= 0.3:
        return _MODERATE
    return _LOW


def _cc(code: Code) -> hd.sr.CodedConcept:
    return hd.sr.CodedConcept(code.value, code.scheme, code.meaning)


class _Slice:
    """Where a finding is drawn: key slice header, its frame and in-plane pixel spacing."""

    def __init__(self, volume: Volume, sources: SourceSet, k: int) -> None:
        if not 0 <= k < len(volume.sources):
            raise ResultError(f"key slice {k} outside the volume (0..{len(volume.sources) - 1})")
        self.ref = volume.sources[k]
        self.header = sources.header(self.ref)
        self.spacing = (volume.spacing[1], volume.spacing[2])
        self.shape = volume.voxels.shape[1:]

    def source(self) -> hd.sr.SourceImageForRegion:
        frames = [self.ref.frame_number] if self.ref.frame_number is not None else None
        return hd.sr.SourceImageForRegion(
            referenced_sop_class_uid=self.header.SOPClassUID,
            referenced_sop_instance_uid=self.header.SOPInstanceUID,
            referenced_frame_numbers=frames,
        )

    def region(self, points: npt.NDArray[np.float64]) -> hd.sr.ImageRegion:
        rows, cols = self.shape
        pts = np.clip(points, 0.0, [float(cols), float(rows)])
        return hd.sr.ImageRegion(
            graphic_type=hd.sr.GraphicTypeValues.POLYLINE,
            graphic_data=pts.astype(np.float32),
            source_image=self.source(),
        )


def _outline(center: tuple[float, float], radius_px: tuple[float, float]) -> npt.NDArray[Any]:
    """Closed 24-point polygon (column, row) around ``center`` (pixel centres at +0.5)."""
    angles = np.linspace(0.0, 2 * math.pi, 25)
    pts = np.stack(
        [
            center[1] + 0.5 + radius_px[1] * np.cos(angles),
            center[0] + 0.5 + radius_px[0] * np.sin(angles),
        ],
        axis=1,
    )
    pts[-1] = pts[0]
    return pts


def _component_at(
    mask: npt.NDArray[np.bool_], point: tuple[int, int]
) -> npt.NDArray[np.bool_] | None:
    """The connected part of ``mask`` that contains ``point`` (one lesion among several that
    share a label), or None when the point is outside the mask."""
    if not (0 <= point[0] < mask.shape[0] and 0 <= point[1] < mask.shape[1]):
        return None
    if not mask[point]:
        return None
    labels, _ = ndimage.label(mask)
    out: npt.NDArray[np.bool_] = labels == labels[point]
    return out


def _long_axis(
    finding: Finding, mask: npt.NDArray[np.bool_] | None, spacing: tuple[float, float]
) -> npt.NDArray[Any]:
    """2-point line (column, row) of length ``diameter_mm`` through the centre, along the
    principal axis of the finding's segment on the key slice (horizontal without one)."""
    _, r, c = finding.center_voxel
    direction = np.array([0.0, 1.0])  # (row, col) in mm space
    if mask is not None and mask.sum() >= 3:
        idx = np.argwhere(mask).astype(np.float64) * np.asarray(spacing)
        idx -= idx.mean(axis=0)
        _, vecs = np.linalg.eigh(idx.T @ idx)
        direction = vecs[:, -1]
    half = (finding.diameter_mm or 0.0) / 2.0
    d_px = direction * half / np.asarray(spacing)  # (row, col) pixels
    a = (c + 0.5 - d_px[1], r + 0.5 - d_px[0])
    b = (c + 0.5 + d_px[1], r + 0.5 + d_px[0])
    return np.array([a, b], dtype=np.float64)


def _device_observer(ctx: ResultContext) -> Any:
    """The model as the SR's observer device (TID 1004)."""
    return hd.sr.ObserverContext(
        observer_type=codes.DCM.Device,
        observer_identifying_attributes=hd.sr.DeviceObserverIdentifyingAttributes(
            uid=ctx.device_uid,  # the Contributing Equipment item's Device UID (IHE AIR)
            name=ctx.model_name[:64],
            manufacturer_name="ainode",
            model_name=f"{ctx.model_name} {ctx.model_version}"[:64],
        ),
    )


def _measurement_groups(
    prediction: Prediction,
    volume: Volume,
    sources: SourceSet,
    ctx: ResultContext,
    *,
    seg: Dataset | None,
    seg_numbers: dict[int, int],
    finding_contexts: Mapping[str, tuple[ResultContext, ResultContext | None]],
    has_notes: bool,
) -> list[Any]:
    """The report's measurement groups: two per finding, else one for the class
    probabilities, else one on the middle slice that the report's text hangs on."""
    algorithm = _algorithm(ctx)
    groups: list[Any] = []
    for finding in prediction.findings:
        found_by, scored_by = finding_contexts.get(finding.tracking_id, (ctx, None))
        groups += _finding_groups(
            finding,
            prediction,
            volume,
            sources,
            ctx,
            seg,
            seg_numbers,
            _algorithm(found_by),
            _algorithm(scored_by) if scored_by is not None else None,
        )
    for finding in prediction.resolved:
        groups.append(_prior_group(finding, volume, sources, ctx, algorithm))
    if not prediction.findings and prediction.class_probabilities:
        groups.append(_classification_group(prediction, volume, sources, ctx, algorithm))
    if not groups:
        if not prediction.text and not has_notes:
            raise ResultError("prediction has no findings, probabilities or text for an SR")
        k = len(volume.sources) // 2
        box = _hot_region(volume, None)[1]
        groups.append(
            hd.sr.PlanarROIMeasurementsAndQualitativeEvaluations(
                tracking_identifier=hd.sr.TrackingIdentifier(
                    uid=ctx.tracking_uid("report"), identifier="report"
                ),
                referenced_region=_Slice(volume, sources, k).region(box),
                finding_type=_CLINICAL_FINDING,
                algorithm_id=algorithm,
            )
        )
    return groups


def _finding_groups(
    finding: Finding,
    prediction: Prediction,
    volume: Volume,
    sources: SourceSet,
    ctx: ResultContext,
    seg: Dataset | None,
    seg_numbers: dict[int, int],
    algorithm: hd.sr.AlgorithmIdentification,
    scorer: hd.sr.AlgorithmIdentification | None = None,
) -> list[Any]:
    k, r, c = finding.center_voxel
    where = _Slice(volume, sources, k)
    tracking = tracking_identifier(finding, ctx)
    finding_type = _cc(finding.finding_type)
    sites = [hd.sr.FindingSite(_cc(finding.finding_site))] if finding.finding_site else None
    mask = None
    if prediction.label_map is not None and finding.segment_label is not None:
        mask = _component_at(prediction.label_map[k] == finding.segment_label, (r, c))
    radius_mm = (finding.diameter_mm or 5.0) / 2.0
    radius_px = (radius_mm / where.spacing[0], radius_mm / where.spacing[1])
    groups: list[Any] = [
        hd.sr.PlanarROIMeasurementsAndQualitativeEvaluations(
            tracking_identifier=tracking,
            referenced_region=where.region(_outline((r, c), radius_px)),
            finding_type=finding_type,
            algorithm_id=algorithm,
            finding_sites=sites,
        )
    ]
    if finding.diameter_mm is not None:
        groups.append(
            hd.sr.PlanarROIMeasurementsAndQualitativeEvaluations(
                tracking_identifier=tracking,
                referenced_region=where.region(_long_axis(finding, mask, where.spacing)),
                finding_type=finding_type,
                algorithm_id=algorithm,
                measurements=[
                    hd.sr.Measurement(
                        name=codes.SCT.LongAxis,
                        value=round(float(finding.diameter_mm), 2),
                        unit=codes.UCUM.Millimeter,
                        algorithm_id=algorithm,
                    ),
                    *change_measurements(finding.tracking, "diameter", algorithm),
                ],
            )
        )
    measurements, evaluations = _volumetric_measurements(finding, algorithm, scorer)
    measurements += change_measurements(finding.tracking, "volume", algorithm)
    evaluations += change_evaluations(finding.tracking)
    if seg is not None and finding.segment_label in seg_numbers:
        volumetric = hd.sr.VolumetricROIMeasurementsAndQualitativeEvaluations(
            tracking_identifier=tracking,
            referenced_segment=hd.sr.ReferencedSegment(
                sop_class_uid=seg.SOPClassUID,
                sop_instance_uid=seg.SOPInstanceUID,
                segment_number=seg_numbers[finding.segment_label],
                source_series=hd.sr.SourceSeriesForSegmentation(volume.series_uid),
            ),
            finding_type=finding_type,
            algorithm_id=algorithm,
            finding_sites=sites,
            measurements=measurements,
            qualitative_evaluations=evaluations,
        )
    else:
        frame_uid = where.header.get("FrameOfReferenceUID") or volume.frame_of_reference_uid
        if not frame_uid:
            raise ResultError("a detection needs a Frame of Reference UID for its SCOORD3D point")
        volumetric = hd.sr.VolumetricROIMeasurementsAndQualitativeEvaluations(
            tracking_identifier=tracking,
            referenced_volume_surface=hd.sr.VolumeSurface(
                graphic_type=hd.sr.GraphicTypeValues3D.POINT,
                graphic_data=np.array([finding.center_xyz], dtype=np.float64),
                frame_of_reference_uid=frame_uid,
                source_series=hd.sr.SourceSeriesForSegmentation(volume.series_uid),
            ),
            finding_type=finding_type,
            algorithm_id=algorithm,
            finding_sites=sites,
            measurements=measurements,
            qualitative_evaluations=evaluations,
        )
    groups.append(volumetric)
    if finding.tracking is not None and finding.tracking.status is not NoduleChange.NEW:
        groups.append(_prior_group(finding, volume, sources, ctx, algorithm))
    return groups


def _prior_group(
    finding: Finding,
    volume: Volume,
    sources: SourceSet,
    ctx: ResultContext,
    algorithm: hd.sr.AlgorithmIdentification,
) -> Any:
    """The prior study's group of a tracked or resolved finding (``sr_followup.prior_group``),
    in the Frame of Reference of the finding's key slice."""
    where = _Slice(volume, sources, finding.center_voxel[0])
    frame_uid = where.header.get("FrameOfReferenceUID") or volume.frame_of_reference_uid
    if not frame_uid:
        raise ResultError("a tracked finding needs a Frame of Reference UID for its prior centre")
    return prior_group(
        finding,
        frame_uid=str(frame_uid),
        series_uid=volume.series_uid,
        ctx=ctx,
        algorithm=algorithm,
    )


def _volumetric_measurements(
    finding: Finding,
    algorithm: hd.sr.AlgorithmIdentification,
    scorer: hd.sr.AlgorithmIdentification | None,
) -> tuple[list[Any], list[Any]]:
    """A finding's volume and probability of cancer (by the model that scored it), and the
    qualitative category of that probability."""
    measurements = []
    if finding.volume_mm3 is not None:
        measurements.append(
            hd.sr.Measurement(
                name=codes.SCT.Volume,
                value=round(float(finding.volume_mm3), 2),
                unit=codes.UCUM.CubicMillimeter,
                algorithm_id=algorithm,
            )
        )
    evaluations = []
    if finding.malignancy_probability is not None:
        p = float(finding.malignancy_probability)
        measurements.append(
            hd.sr.Measurement(
                name=codes.DCM.ProbabilityOfCancer,
                value=round(p, 4),
                unit=_NO_UNITS,
                algorithm_id=scorer or algorithm,
            )
        )
        evaluations.append(
            hd.sr.QualitativeEvaluation(codes.DCM.ProbabilityOfCancer, malignancy_category(p))
        )
    return measurements, evaluations


def _hot_region(volume: Volume, heatmap: HeatMap | None) -> tuple[int, npt.NDArray[Any]]:
    """Key slice and outline (column, row) of the attention region (whole image without one)."""
    rows, cols = volume.voxels.shape[1:]
    if heatmap is not None and heatmap.values.size and float(heatmap.values.max()) > 0:
        values = heatmap.values
        if values.ndim == 3:
            k = int(np.argmax(values.reshape(values.shape[0], -1).max(axis=1)))
            plane = values[k]
        else:
            k = heatmap.slice_index or 0
            plane = values
        hot = np.argwhere(plane >= 0.5 * float(plane.max()))
        (r0, c0), (r1, c1) = hot.min(axis=0), hot.max(axis=0) + 1
    else:
        k, r0, c0, r1, c1 = len(volume.sources) // 2, 0, 0, rows, cols
    box = np.array([[c0, r0], [c1, r0], [c1, r1], [c0, r1], [c0, r0]], dtype=np.float64)
    return k, box


def _classification_group(
    prediction: Prediction,
    volume: Volume,
    sources: SourceSet,
    ctx: ResultContext,
    algorithm: hd.sr.AlgorithmIdentification,
) -> Any:
    name, p = max(prediction.class_probabilities.items(), key=lambda kv: kv[1])
    k, box = _hot_region(volume, prediction.heatmaps[0] if prediction.heatmaps else None)
    where = _Slice(volume, sources, k)
    tracking_id = f"class {name}"[:64]
    return hd.sr.PlanarROIMeasurementsAndQualitativeEvaluations(
        tracking_identifier=hd.sr.TrackingIdentifier(
            uid=ctx.tracking_uid(tracking_id), identifier=tracking_id
        ),
        referenced_region=where.region(box),
        finding_type=_CLINICAL_FINDING,
        algorithm_id=algorithm,
        measurements=[
            hd.sr.Measurement(
                name=codes.DCM.CertaintyOfFinding,
                value=round(float(p), 4),
                unit=_NO_UNITS,
                algorithm_id=algorithm,
            )
        ],
    )


def _algorithm(ctx: ResultContext) -> hd.sr.AlgorithmIdentification:
    """TID 4019 Algorithm Identification of the model of ``ctx``."""
    return hd.sr.AlgorithmIdentification(name=ctx.model_name[:64], version=ctx.model_version[:64])


def _text_items(
    prediction: Prediction,
    ctx: ResultContext,
    notes: Sequence[str] = (),
    models: Sequence[ResultContext] = (),
) -> list[hd.sr.TextContentItem]:
    items = []
    if prediction.text:
        items.append(
            hd.sr.TextContentItem(
                name=codes.DCM.Impression,
                value=prediction.text,
                relationship_type=hd.sr.RelationshipTypeValues.CONTAINS,
            )
        )
    if prediction.class_probabilities:
        summary = "; ".join(
            f"{k}: {v:.3f}" for k, v in sorted(prediction.class_probabilities.items())
        )
        items.append(
            hd.sr.TextContentItem(
                name=codes.DCM.Probability,
                value=f"Class probabilities ({ctx.model_name} {ctx.model_version}): {summary}",
                relationship_type=hd.sr.RelationshipTypeValues.CONTAINS,
            )
        )
    for note in notes:
        items.append(
            hd.sr.TextContentItem(
                name=codes.DCM.Comment,
                value=note,
                relationship_type=hd.sr.RelationshipTypeValues.CONTAINS,
            )
        )
    named = ", ".join(f"{m.model_name} {m.model_version}" for m in (models or [ctx]))
    statement = f"Produced by {named} (ainode)"
    if ctx.is_demo:
        statement = f"{DEMO_STATEMENT}. {statement}"
    items.append(
        hd.sr.TextContentItem(
            name=codes.DCM.Comment,
            value=statement,
            relationship_type=hd.sr.RelationshipTypeValues.CONTAINS,
        )
    )
    return items


def build_sr(
    prediction: Prediction,
    volume: Volume,
    sources: SourceSet,
    ctx: ResultContext,
    *,
    index: int,
    seg: Dataset | None = None,
    seg_numbers: dict[int, int] | None = None,
    finding_contexts: Mapping[str, tuple[ResultContext, ResultContext | None]] | None = None,
    notes: Sequence[str] = (),
    statement_models: Sequence[ResultContext] = (),
) -> Dataset:
    """Build the TID 1500 Measurement Report of ``prediction``.

    Parameters
    ----------
    prediction
        Findings, class probabilities and/or text.
    volume
        The volume the model saw (key slices come from ``Finding.center_voxel``).
    sources
        Headers of the source instances.
    ctx
        Job identity.
    index
        Index of this object among the job's results.
    seg, seg_numbers
        The job's SEG and label → segment number, when findings reference segments.
    finding_contexts
        Tracking id -> (model that found the finding, model that scored it) for combined
        results: each group and NUM names its own model (TID 4019); default: ``ctx``.
    notes
        Further TEXT items (class probabilities of several models, models that did not run).
    statement_models
        Every model of combined results (named in the "Produced by" statement and given a
        Contributing Equipment item); default: ``ctx`` alone.

    Returns
    -------
    pydicom.Dataset
        A Comprehensive 3D SR (PS3.3 A.35.13) whose Current Requested Procedure Evidence lists
        every referenced instance (the source series and the SEG).

    Raises
    ------
    ResultError
        Nothing to report, or a finding points outside the volume.
    """
    observer = _device_observer(ctx)
    groups = _measurement_groups(
        prediction,
        volume,
        sources,
        ctx,
        seg=seg,
        seg_numbers=seg_numbers or {},
        finding_contexts=finding_contexts or {},
        has_notes=bool(notes) or bool(prediction.prior_note),
    )
    report = hd.sr.MeasurementReport(
        observation_context=hd.sr.ObservationContext(observer_device_context=observer),
        procedure_reported=procedure_reported(sources.first(volume)),
        imaging_measurements=groups,
    )
    container = hd.sr.ContainerContentItem(
        name=_QUALITATIVE_EVALUATIONS,
        relationship_type=hd.sr.RelationshipTypeValues.CONTAINS,
    )
    note = interpolation_note(volume)
    prior = [prediction.prior_note] if prediction.prior_note else []
    container.ContentSequence = hd.sr.ContentSequence(
        _text_items(prediction, ctx, [*prior, *notes, *([note] if note else [])], statement_models)
    )
    report[0].ContentSequence.append(container)
    evidence = sources.ordered(volume)
    if seg is not None:
        evidence = [*evidence, seg]
    with quiet_highdicom():
        sr = hd.sr.Comprehensive3DSR(
            evidence=evidence,
            content=report[0],
            series_instance_uid=ctx.uid(index, "series"),
            series_number=ctx.series_number(index),
            sop_instance_uid=ctx.uid(index, "sop"),
            instance_number=1,
            manufacturer="ainode",
            series_description=ctx.series_description("sr"),
            is_complete=True,
            content_date=ctx.content_date,
            content_time=ctx.content_time,
            series_date=ctx.content_date,
            series_time=ctx.content_time,
        )
    ctx.finish(sr, evidence[0], kind="sr", image=False)
    for other in statement_models:
        other.add_algorithm_equipment(sr)
    log.info(
        "results.sr_built",
        extra={"sop_uid": sr.SOPInstanceUID, "findings": len(prediction.findings)},
    )
    return sr
