"""DICOM Segmentation (PS3.3 A.51) from a Prediction's label map, built with highdicom.

One BINARY segment per described label, with SNOMED CT property category/type (CID 7150/7151),
algorithm identification (PS3.3 C.8.20.2), a recommended display CIELab value and a tracking
id/UID. Frames reference the exact source instance/frame they were derived from (per-frame
Derivation Image Sequence); frames without any segment are omitted.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import highdicom as hd
import numpy as np
import numpy.typing as npt
from pydicom.dataset import Dataset
from pydicom.sr.codedict import codes

from node.errors import ResultError
from node.results.identity import DEMO_STATEMENT, ResultContext, interpolation_note
from node.results.sources import SourceSet, quiet_highdicom
from node.types import Prediction, SegmentDescription, Volume, label_counts

__all__ = ["build_seg", "segment_numbers"]

log = logging.getLogger(__name__)


def segment_numbers(prediction: Prediction) -> dict[int, int]:
    """Map each described label to its 1-based Segment Number (in ascending label order)."""
    labels = sorted({s.label for s in prediction.segments})
    return {label: i + 1 for i, label in enumerate(labels)}


def _description(
    sd: SegmentDescription, number: int, ctx: ResultContext, *, tracking_uid: str | None = None
) -> hd.seg.SegmentDescription:
    algorithm = hd.AlgorithmIdentificationSequence(
        name=ctx.model_name[:64],
        family=codes.cid7162.ArtificialIntelligence,
        version=ctx.model_version[:64],
        source="ainode",
    )
    tracking_id = sd.tracking_id or f"{sd.name} {sd.label}"
    return hd.seg.SegmentDescription(
        segment_number=number,
        segment_label=sd.name[:64],
        segmented_property_category=hd.sr.CodedConcept(
            sd.category.value, sd.category.scheme, sd.category.meaning
        ),
        segmented_property_type=hd.sr.CodedConcept(
            sd.property_type.value, sd.property_type.scheme, sd.property_type.meaning
        ),
        algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
        algorithm_identification=algorithm,
        tracking_id=tracking_id[:64],
        tracking_uid=tracking_uid or ctx.tracking_uid(tracking_id),
        display_color=hd.color.CIELabColor.from_rgb(*sd.color_rgb),
    )


def _frames(
    volume: Volume, sources: SourceSet, seg_labels: npt.NDArray[Any]
) -> tuple[list[Dataset], npt.NDArray[Any]]:
    """Source images and the segment-number array in the order highdicom expects."""
    refs = volume.sources
    if len(refs) != seg_labels.shape[0]:
        raise ResultError(
            f"label map has {seg_labels.shape[0]} slices but the volume has {len(refs)} sources"
        )
    images = sources.ordered(volume)
    multi = [ds for ds in images if int(ds.get("NumberOfFrames", 1) or 1) > 1]
    if not multi and volume.filled_slices:
        # an interpolated slice has no acquired image to refer to: no SEG frame for it (the
        # Derivation Description says so)
        filled = set(volume.filled_slices)
        keep = [i for i in range(len(refs)) if i not in filled]
        refs, seg_labels = tuple(refs[i] for i in keep), seg_labels[keep]
    if not multi:
        if len(images) != len(refs):
            raise ResultError("two volume slices refer to the same single-frame source instance")
        return images, seg_labels
    if len(images) != 1:
        raise ResultError(
            "a SEG can reference one multi-frame source instance only "
            f"(the volume spans {len(images)} instances)"
        )
    source = images[0]
    n_frames = int(source.NumberOfFrames)
    out = np.zeros((n_frames, *seg_labels.shape[1:]), dtype=seg_labels.dtype)
    for i, ref in enumerate(refs):
        if ref.frame_number is None or not 1 <= ref.frame_number <= n_frames:
            raise ResultError(
                f"slice {i} of a multi-frame source has frame number {ref.frame_number} "
                f"(source has {n_frames} frames)"
            )
        out[ref.frame_number - 1] = seg_labels[i]
    return [source], out


def _freeze_dimension_uid(seg: Dataset, uid: str) -> None:
    """Replace highdicom's random Dimension Organization UID (PS3.3 C.7.6.17) by ``uid``."""
    for item in seg.get("DimensionOrganizationSequence", []):
        item.DimensionOrganizationUID = uid
    for item in seg.get("DimensionIndexSequence", []):
        if "DimensionOrganizationUID" in item:
            item.DimensionOrganizationUID = uid


def build_seg(
    prediction: Prediction,
    volume: Volume,
    sources: SourceSet,
    ctx: ResultContext,
    *,
    index: int,
    workers: int = 0,
    segment_contexts: Mapping[int, ResultContext] | None = None,
) -> Dataset:
    """Build the Segmentation of ``prediction.label_map``.

    Parameters
    ----------
    prediction
        Must have ``label_map`` (shape = ``volume.voxels.shape``) and ``segments``.
    volume
        The volume the model saw; its ``sources`` decide the frame references.
    sources
        Headers of the source instances.
    ctx
        Job identity (UIDs, dates, series naming).
    index
        Index of this object among the job's results (drives its UIDs).
    workers
        Passed to highdicom (parallel frame encoding; 0 = in this thread).
    segment_contexts
        Label -> identity of the model that made that segment (combined results): its
        algorithm identification and Contributing Equipment item; default: ``ctx`` for all.

    Returns
    -------
    pydicom.Dataset
        A BINARY Segmentation (PS3.3 C.8.20.2), empty frames omitted.

    Raises
    ------
    ResultError
        The label map does not fit the volume, a label has no description, or it is empty.
    """
    numbers, seg_labels = _segment_labels(prediction, volume)
    images, array = _frames(volume, sources, seg_labels)
    by_label = {s.label: s for s in prediction.segments}
    own = segment_contexts or {}
    descriptions = [
        _description(
            by_label[label],
            n,
            own.get(label, ctx),
            tracking_uid=by_label[label].tracking_uid
            or ctx.tracking_uid(by_label[label].tracking_id or f"{by_label[label].name} {label}"),
        )
        for label, n in numbers.items()
    ]
    with quiet_highdicom():
        seg = hd.seg.Segmentation(
            source_images=images,
            pixel_array=array,
            segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
            segment_descriptions=descriptions,
            series_instance_uid=ctx.uid(index, "series"),
            series_number=ctx.series_number(index),
            sop_instance_uid=ctx.uid(index, "sop"),
            instance_number=1,
            manufacturer="ainode",
            manufacturer_model_name=ctx.model_name[:64],
            software_versions=ctx.software_versions[1],
            device_serial_number=ctx.job_id[:64],
            content_description=(DEMO_STATEMENT if ctx.is_demo else "AI segmentation")[:64],
            content_label="AINODE",
            content_creator_name="ainode^",
            omit_empty_frames=True,
            workers=workers,
            content_date=ctx.content_date,
            content_time=ctx.content_time,
            series_date=ctx.content_date,
            series_time=ctx.content_time,
        )
    _freeze_dimension_uid(seg, ctx.uid(index, "dimension-organization"))
    ctx.finish(seg, images[0], kind="seg", image=True)
    for other in own.values():
        other.add_algorithm_equipment(seg)
    note = interpolation_note(volume)
    if note is not None:
        # General Reference Module, Type 3 (ST)
        seg.DerivationDescription = f"{note}; this segmentation has no frame on them"
    log.info(
        "results.seg_built",
        extra={
            "sop_uid": seg.SOPInstanceUID,
            "segments": len(numbers),
            "frames": seg.NumberOfFrames,
        },
    )
    return seg


def _segment_labels(
    prediction: Prediction, volume: Volume
) -> tuple[dict[int, int], npt.NDArray[Any]]:
    """Label -> segment number, and the label map in segment numbers; checked: it fits the
    volume, every present label is described, and some segment has a voxel."""
    label_map = prediction.label_map
    if label_map is None:
        raise ResultError("prediction has no label map to write as SEG")
    if label_map.shape != volume.voxels.shape:
        raise ResultError(
            f"label map shape {label_map.shape} differs from volume shape {volume.voxels.shape}"
        )
    numbers = segment_numbers(prediction)
    if not numbers:
        raise ResultError("prediction has a label map but no segment descriptions")
    counts = label_counts(label_map)
    present = {int(v) for v in np.flatnonzero(counts)} - {0}
    undescribed = present - set(numbers)
    if undescribed:
        raise ResultError(f"labels {sorted(undescribed)} in the label map have no description")
    if not present:
        raise ResultError("label map is empty: no segment has any voxel")
    seg_labels: npt.NDArray[Any]
    if label_map.dtype == np.uint8 and all(label == n for label, n in numbers.items()):
        seg_labels = label_map  # labels are already the segment numbers 1..n: no 10^8 lookup
    else:
        lut_size = max(max(numbers), len(counts) - 1) + 1
        lut = np.zeros(lut_size, dtype=np.uint8 if len(numbers) < 256 else np.uint16)
        for label, number in numbers.items():
            lut[label] = number
        seg_labels = lut[label_map]
    return numbers, seg_labels
