"""PNG previews of result objects for the console's study page.

- SEG (PS3.3 A.51): the source image with the most segmented pixels, every segment's mask
  on it tinted in the segment's colour.  The frame -> source image link is the per-frame
  Derivation Image Sequence (PS3.3 C.7.6.16.2.6), the segment is the per-frame Segment
  Identification Sequence (C.8.20.3); the source file is found through the index.
- Secondary Capture (heat-maps, PS3.3 A.8): its own pixels (the heat-map is burned in).

Previews are rendered on request from the stored objects (never modified) and are at most
``MAX_SIDE`` pixels on their longer side.
"""

from __future__ import annotations

import io
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pydicom
from PIL import Image
from pydicom.dataset import Dataset

from node.imaging import percentile_scale
from node.imaging.sop_classes import SC_CLASSES, SEG_CLASS
from node.types import Instance

__all__ = ["MAX_SIDE", "render_preview"]

MAX_SIDE = 384
#: Fallback segment colours when a SEG has no Recommended Display CIELab Value.
_PALETTE = ((255, 60, 60), (60, 200, 90), (70, 130, 255), (255, 190, 40), (200, 80, 220))
_ALPHA = 0.45


class PreviewError(ValueError):
    """The object cannot be previewed (kind not supported, source image missing...)."""


def _png(rgb: npt.NDArray[np.uint8]) -> bytes:
    image = Image.fromarray(rgb)
    image.thumbnail((MAX_SIDE, MAX_SIDE))
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return buf.getvalue()


def _lab_to_rgb(lab: Sequence[int]) -> tuple[int, int, int]:
    """DICOM scaled CIELab (PS3.3 C.10.7.1.1: 0..0xFFFF) -> sRGB (D65 white)."""
    lum = lab[0] * 100.0 / 0xFFFF
    a = lab[1] * 255.0 / 0xFFFF - 128.0
    b = lab[2] * 255.0 / 0xFFFF - 128.0
    fy = (lum + 16.0) / 116.0
    fx, fz = fy + a / 500.0, fy - b / 200.0

    def inv(t: float) -> float:
        return t**3 if t > 6 / 29 else 3 * (6 / 29) ** 2 * (t - 4 / 29)

    x, y, z = 0.95047 * inv(fx), 1.0 * inv(fy), 1.08883 * inv(fz)
    linear = (
        3.2406 * x - 1.5372 * y - 0.4986 * z,
        -0.9689 * x + 1.8758 * y + 0.0415 * z,
        0.0557 * x - 0.2040 * y + 1.0570 * z,
    )

    def gamma(c: float) -> int:
        c = min(max(c, 0.0), 1.0)
        v = 12.92 * c if c <= 0.0031308 else 1.055 * c ** (1 / 2.4) - 0.055
        return round(v * 255)

    r, g, bl = (gamma(c) for c in linear)
    return r, g, bl


def _segment_colours(seg: Dataset) -> dict[int, tuple[int, int, int]]:
    colours: dict[int, tuple[int, int, int]] = {}
    for n, item in enumerate(seg.get("SegmentSequence", [])):
        number = int(item.SegmentNumber)
        lab = item.get("RecommendedDisplayCIELabValue")
        colours[number] = _lab_to_rgb(list(lab)) if lab else _PALETTE[n % len(_PALETTE)]
    return colours


def _frame_refs(seg: Dataset) -> list[tuple[str, int | None, int]]:
    """Per SEG frame: (source SOP Instance UID, source frame number or None, segment number)."""
    shared = (seg.get("SharedFunctionalGroupsSequence") or [Dataset()])[0]

    def group(item: Dataset, keyword: str) -> Dataset:
        # a macro is per frame, or shared by all frames (PS3.3 C.7.6.16)
        found = item.get(keyword) or shared.get(keyword)
        if not found:
            raise PreviewError(f"SEG frame without {keyword}")
        first: Dataset = found[0]
        return first

    refs = []
    for item in seg.PerFrameFunctionalGroupsSequence:
        source = group(item, "DerivationImageSequence").SourceImageSequence[0]
        frame = source.get("ReferencedFrameNumber")
        segment = int(group(item, "SegmentIdentificationSequence").ReferencedSegmentNumber)
        refs.append((str(source.ReferencedSOPInstanceUID), int(frame) if frame else None, segment))
    return refs


def _source_pixels(path: Path, frame: int | None) -> npt.NDArray[Any]:
    ds = pydicom.dcmread(path)
    pixels = ds.pixel_array
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    if frames > 1:
        pixels = pixels[(frame or 1) - 1]
    if pixels.ndim == 3:  # colour source: luminance-ish mean
        pixels = pixels.mean(axis=-1)
    return np.asarray(pixels)


def seg_overlay(seg: Dataset, find_source: Callable[[str], Path | None]) -> bytes:
    """The source image with the most segmented pixels, with every segment tinted on it.

    Raises
    ------
    PreviewError
        The SEG has no non-empty frame, or its source image is not stored.
    """
    masks = np.asarray(seg.pixel_array)
    if masks.ndim == 2:
        masks = masks[None]
    refs = _frame_refs(seg)
    if len(refs) != masks.shape[0]:
        raise PreviewError("SEG frame count does not match its per-frame functional groups")
    counts: dict[tuple[str, int | None], int] = {}
    for (sop_uid, frame, _), mask in zip(refs, masks, strict=True):
        key = (sop_uid, frame)
        counts[key] = counts.get(key, 0) + int(np.count_nonzero(mask))
    if not counts or max(counts.values()) == 0:
        raise PreviewError("the SEG has no segmented pixel")
    best = max(counts, key=lambda k: counts[k])
    path = find_source(best[0])
    if path is None:
        raise PreviewError(f"source image {best[0]} of the SEG is not stored on this node")
    grey = percentile_scale(_source_pixels(path, best[1]), low=1.0, high=99.0)
    rgb = np.repeat(grey[..., None], 3, axis=-1)
    colours = _segment_colours(seg)
    for (sop_uid, frame, segment), mask in zip(refs, masks, strict=True):
        if (sop_uid, frame) != best or not mask.any():
            continue
        if mask.shape != grey.shape:  # not on the source grid: scale the mask to fit
            mask = np.asarray(
                Image.fromarray(mask.astype(np.uint8) * 255).resize(
                    (grey.shape[1], grey.shape[0]), Image.Resampling.NEAREST
                )
            )
        on = mask > 0
        colour = np.asarray(colours.get(segment, _PALETTE[0]), dtype=np.float32) / 255.0
        rgb[on] = rgb[on] * (1 - _ALPHA) + colour * _ALPHA
    return _png((rgb * 255).round().astype(np.uint8))


def sc_image(sc: Dataset) -> bytes:
    """The Secondary Capture's own pixels (first frame), as RGB."""
    pixels = np.asarray(sc.pixel_array)
    frames = int(sc.get("NumberOfFrames", 1) or 1)
    if frames > 1:
        pixels = pixels[0]
    if str(sc.get("PhotometricInterpretation", "")).startswith("YBR"):
        from pydicom.pixels.processing import convert_color_space

        pixels = convert_color_space(pixels, str(sc.PhotometricInterpretation), "RGB")
    if pixels.ndim == 2:
        grey = (percentile_scale(pixels, low=0.0, high=100.0) * 255).astype(np.uint8)
        pixels = np.repeat(grey[..., None], 3, axis=-1)
    return _png(pixels.astype(np.uint8))


def render_preview(path: Path, series_instances: Callable[[str], list[Instance]]) -> bytes:
    """A PNG preview of the result object at ``path``.

    Parameters
    ----------
    path:
        The stored SEG or Secondary Capture.
    series_instances:
        The index's ``series_instances`` (finds a SEG's source image files).

    Raises
    ------
    PreviewError
        Another kind of object (SR, derived series), or nothing to show.
    """
    try:
        ds = pydicom.dcmread(path)
        sop_class = str(ds.SOPClassUID)
        if sop_class in SC_CLASSES:
            return sc_image(ds)
        if sop_class != SEG_CLASS:
            raise PreviewError(f"no preview for SOP class {sop_class}")
        paths: dict[str, Path] = {}
        for series in ds.get("ReferencedSeriesSequence", []):
            for inst in series_instances(str(series.SeriesInstanceUID)):
                paths[inst.sop_uid] = inst.path
        return seg_overlay(ds, paths.get)
    except (AttributeError, KeyError, IndexError, TypeError, OSError) as exc:
        # ValueError (pydicom's InvalidDicomError, PreviewError) passes through as it is
        raise PreviewError(f"cannot render a preview: {type(exc).__name__}: {exc}") from exc
