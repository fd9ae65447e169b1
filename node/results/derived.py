"""Derived image series of the source's own kind (e.g. enhanced CT from an enhancement model).

Each output slice is a copy of its source slice's header (private attributes removed) with new
UIDs, Image Type ``DERIVED\\SECONDARY`` (PS3.3 C.7.6.1.1.2), a Source Image Sequence pointing at
the slice it came from, and the model's voxels as pixel data. Sources that are not single-frame
CT/MR cannot be written this way; ``build_results`` writes those as Secondary Captures.
"""

from __future__ import annotations

import copy
import logging
from typing import Any

import numpy as np
import numpy.typing as npt
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence as DicomSequence
from pydicom.uid import PYDICOM_IMPLEMENTATION_UID, ExplicitVRLittleEndian

from node.errors import ResultError
from node.results.identity import ResultContext
from node.results.sources import SourceSet
from node.types import Volume

__all__ = ["DERIVABLE_SOP_CLASSES", "build_derived_series", "can_derive"]

log = logging.getLogger(__name__)

#: Single-frame SOP classes whose header can be reused for a derived image.
DERIVABLE_SOP_CLASSES = frozenset({"1.2.840.10008.5.1.4.1.1.2", "1.2.840.10008.5.1.4.1.1.4"})

_DROP = (
    "SmallestImagePixelValue",
    "LargestImagePixelValue",
    "PixelPaddingValue",
    "PixelPaddingRangeLimit",
    "ReferencedImageSequence",
    "SourceImageSequence",
    "DerivationCodeSequence",
    "LossyImageCompression",
    "LossyImageCompressionRatio",
    "LossyImageCompressionMethod",
    "RequestAttributesSequence",
)


def can_derive(volume: Volume, sources: SourceSet) -> bool:
    """True when every slice comes from its own single-frame CT or MR instance."""
    return all(
        ref.frame_number is None and ref.sop_class_uid in DERIVABLE_SOP_CLASSES
        for ref in volume.sources
    ) and len({ref.sop_uid for ref in volume.sources}) == len(volume.sources)


def _stored(values: npt.NDArray[Any], header: Dataset) -> npt.NDArray[Any]:
    slope = float(header.get("RescaleSlope", 1) or 1)
    intercept = float(header.get("RescaleIntercept", 0) or 0)
    signed = int(header.get("PixelRepresentation", 0)) == 1
    dtype = np.int16 if signed else np.uint16
    info = np.iinfo(dtype)
    stored = np.rint((values.astype(np.float64) - intercept) / slope)
    return np.clip(stored, info.min, info.max).astype(dtype)


def build_derived_series(
    voxels: npt.NDArray[Any],
    volume: Volume,
    sources: SourceSet,
    ctx: ResultContext,
    *,
    index: int,
) -> list[Dataset]:
    """One derived instance per slice of ``voxels`` (same units as ``volume.voxels``).

    Raises
    ------
    ResultError
        Shape mismatch, or the source is not single-frame CT/MR (see ``can_derive``).
    """
    if voxels.shape != volume.voxels.shape:
        raise ResultError(
            f"derived voxels shape {voxels.shape} differs from volume shape {volume.voxels.shape}"
        )
    if not can_derive(volume, sources):
        raise ResultError("derived series need single-frame CT or MR sources")
    series_uid = ctx.uid(index, "series")
    out = []
    for k, ref in enumerate(volume.sources):
        src = sources.header(ref)
        ds = copy.deepcopy(src)
        ds.remove_private_tags()
        for keyword in _DROP:
            if keyword in ds:
                delattr(ds, keyword)
        image_type = list(src.get("ImageType", ["DERIVED", "SECONDARY"]))
        ds.ImageType = ["DERIVED", "SECONDARY", *image_type[2:3]]
        ds.SOPInstanceUID = ctx.uid(index, f"sop/{k}")
        ds.SeriesInstanceUID = series_uid
        ds.SeriesNumber = ctx.series_number(index)
        ds.InstanceNumber = k + 1
        ds.DerivationDescription = f"Processed by {ctx.model_name} {ctx.model_version} (ainode)"
        item = Dataset()
        item.ReferencedSOPClassUID = src.SOPClassUID
        item.ReferencedSOPInstanceUID = src.SOPInstanceUID
        ds.SourceImageSequence = DicomSequence([item])
        pixels = _stored(voxels[k], src)
        ds.BitsAllocated = 16
        ds.BitsStored = 16
        ds.HighBit = 15
        ds.SamplesPerPixel = 1
        ds.PixelRepresentation = 1 if pixels.dtype == np.int16 else 0
        ds.Rows, ds.Columns = pixels.shape
        ds.add_new(0x7FE00010, "OW", pixels.tobytes())
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = ds.SOPClassUID
        meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
        ds.file_meta = meta
        ctx.finish(ds, src, kind="derived", image=True)
        out.append(ds)
    log.info("results.derived_built", extra={"series_uid": series_uid, "instances": len(out)})
    return out
