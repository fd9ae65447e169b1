"""Secondary Capture (PS3.3 A.8.1) key images: a heat-map burned over the source slice.

The image carries a visible banner naming the model and version and, for demo models,
"DEMO MODEL — NOT FOR DIAGNOSIS"; the text is burned into the pixels, so Burned In Annotation is
YES (PS3.3 C.7.6.1.1.11). The slice it was made from is referenced in Source Image Sequence.
"""

from __future__ import annotations

import logging
from typing import Any

import highdicom as hd
import numpy as np
import numpy.typing as npt
from PIL import Image, ImageDraw, ImageFont
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue
from pydicom.sequence import Sequence as DicomSequence

from node.errors import ResultError
from node.results.identity import ResultContext
from node.results.sources import SourceSet, quiet_highdicom
from node.types import HeatMap, Volume

__all__ = ["BANNER_DEMO", "build_gray_sc", "build_heatmap_sc", "heatmap_key_slice"]

log = logging.getLogger(__name__)

BANNER_DEMO = "DEMO MODEL — NOT FOR DIAGNOSIS"
_MIN_COLUMNS = 512  # small images are enlarged so the banner stays readable


def heatmap_key_slice(heatmap: HeatMap, n_slices: int) -> int:
    """Slice a heat-map is shown on: its own ``slice_index``, else the slice of its maximum."""
    if heatmap.values.ndim == 2:
        k = heatmap.slice_index if heatmap.slice_index is not None else 0
    else:
        flat = heatmap.values.reshape(heatmap.values.shape[0], -1)
        k = int(np.argmax(flat.max(axis=1)))
    if not 0 <= k < n_slices:
        raise ResultError(f"heat-map slice {k} outside the volume (0..{n_slices - 1})")
    return k


def _window(plane: npt.NDArray[Any], header: Dataset) -> npt.NDArray[np.uint8]:
    """Grey levels 0..255 of a slice, with the source's first VOI window when it has one."""
    center = header.get("WindowCenter")
    width = header.get("WindowWidth")
    # node.imaging already inverted MONOCHROME1 voxels (higher = brighter); the header's window
    # refers to the stored polarity, so such planes are scaled by percentiles instead.
    mono1 = header.get("PhotometricInterpretation") == "MONOCHROME1"
    if center is not None and width is not None and not mono1:
        c = float(center[0] if isinstance(center, MultiValue) else center)
        w = float(width[0] if isinstance(width, MultiValue) else width)
        lo, hi = c - w / 2.0, c + w / 2.0
    else:
        lo, hi = (float(v) for v in np.percentile(plane, [1.0, 99.0]))
    if hi <= lo:
        hi = lo + 1.0
    grey = np.clip((plane.astype(np.float64) - lo) / (hi - lo), 0.0, 1.0) * 255.0
    return grey.astype(np.uint8)


def _jet(values: npt.NDArray[Any]) -> npt.NDArray[np.float64]:
    v = np.clip(values.astype(np.float64), 0.0, 1.0)[..., None]
    centres = np.array([3.0, 2.0, 1.0])
    out: npt.NDArray[np.float64] = np.clip(1.5 - np.abs(4.0 * v - centres), 0.0, 1.0)
    return out


def _fit(values: npt.NDArray[Any], shape: tuple[int, int]) -> npt.NDArray[np.float64]:
    if values.shape == shape:
        return values.astype(np.float64)
    img = Image.fromarray(values.astype(np.float32), mode="F")
    return np.asarray(img.resize((shape[1], shape[0]), Image.Resampling.BILINEAR), dtype=np.float64)


def _text(
    draw: ImageDraw.ImageDraw,
    xy: tuple[int, int],
    line: str,
    colour: tuple[int, int, int],
    font: ImageFont.FreeTypeFont | ImageFont.ImageFont,
    size: int,
) -> None:
    """Draw ``line``; an em dash (absent from Pillow's bundled font) is drawn as a bar."""
    x, y = xy
    for j, part in enumerate(line.split("\u2014")):
        if j:
            bar = max(2, size // 10)
            mid = y + size // 2 + 1
            draw.rectangle([x + 2, mid - bar // 2, x + size - 2, mid + bar - bar // 2], fill=colour)
            x += size
        draw.text((x, y), part, fill=colour, font=font)
        x += round(draw.textlength(part, font=font))


def _banner(rgb: npt.NDArray[np.uint8], lines: list[str]) -> npt.NDArray[np.uint8]:
    """Enlarge small images, then burn ``lines`` in a black band across the top."""
    img = Image.fromarray(rgb, mode="RGB")
    if img.width < _MIN_COLUMNS:
        scale = _MIN_COLUMNS / img.width
        img = img.resize(
            (_MIN_COLUMNS, max(1, round(img.height * scale))), Image.Resampling.BILINEAR
        )
    size = max(12, img.width // 32)
    font = ImageFont.load_default(size=size)
    band = (size + 6) * len(lines) + 6
    draw = ImageDraw.Draw(img)
    draw.rectangle([0, 0, img.width, band], fill=(0, 0, 0))
    for i, line in enumerate(lines):
        colour = (255, 64, 64) if i == 0 and line == BANNER_DEMO else (255, 255, 0)
        _text(draw, (6, 4 + i * (size + 6)), line, colour, font, size)
    return np.asarray(img, dtype=np.uint8)


def _orientation(volume: Volume, header: Dataset) -> tuple[str, str]:
    """Patient Orientation (PS3.3 C.7.6.1.1.1) of the rows and columns of the slice."""
    given = header.get("PatientOrientation")
    if given is not None and len(given) == 2 and all(given):
        return str(given[0]), str(given[1])
    letters = (("L", "R"), ("P", "A"), ("H", "F"))

    def name(vec: npt.NDArray[np.float64]) -> str:
        out = ""
        for axis in np.argsort(-np.abs(vec))[:2]:
            if abs(vec[axis]) > 0.25:
                out += letters[axis][0] if vec[axis] > 0 else letters[axis][1]
        return out or "L"

    return name(volume.direction[0]), name(volume.direction[1])


def _sc(
    pixels: npt.NDArray[np.uint8],
    photometric: str,
    volume: Volume,
    sources: SourceSet,
    ctx: ResultContext,
    *,
    k: int,
    index: int,
    instance: int,
    description: str,
) -> Dataset:
    ref = volume.sources[k]
    header = sources.header(ref)
    with quiet_highdicom():
        sc = hd.sc.SCImage.from_ref_dataset(
            ref_dataset=header,
            pixel_array=pixels,
            photometric_interpretation=photometric,
            bits_allocated=8,
            coordinate_system=hd.CoordinateSystemNames.PATIENT,
            series_instance_uid=ctx.uid(index, "series"),
            series_number=ctx.series_number(index),
            sop_instance_uid=ctx.uid(index, f"sop/{instance}"),
            instance_number=instance,
            manufacturer="ainode",
            patient_orientation=_orientation(volume, header),
            laterality=None,  # set by ResultContext.finish (Type 2C rules)
            transfer_syntax_uid=hd.UID("1.2.840.10008.1.2.1"),
        )
    item = Dataset()
    item.ReferencedSOPClassUID = header.SOPClassUID
    item.ReferencedSOPInstanceUID = header.SOPInstanceUID
    if ref.frame_number is not None:
        item.ReferencedFrameNumber = ref.frame_number
    sc.SourceImageSequence = DicomSequence([item])
    sc.DerivationDescription = description[:1024]
    sc.BurnedInAnnotation = "YES"
    ctx.finish(sc, header, kind="sc", image=True)
    return sc


def _lines(ctx: ResultContext, what: str) -> list[str]:
    lines = [BANNER_DEMO] if ctx.is_demo else []
    return [*lines, f"{ctx.model_name} {ctx.model_version}", what]


def build_heatmap_sc(
    heatmap: HeatMap,
    volume: Volume,
    sources: SourceSet,
    ctx: ResultContext,
    *,
    index: int,
) -> Dataset:
    """Burn ``heatmap`` (jet colours, 0..1) over its key slice, with the model banner.

    Parameters
    ----------
    heatmap
        Attention map over the volume (3D) or one slice (2D with ``slice_index``).
    volume
        Source voxels; the key slice is windowed with the source's VOI window.
    sources
        Headers of the source instances (the key slice's header supplies patient/study).
    ctx
        Job identity.
    index
        Index of this object among the job's results.

    Returns
    -------
    pydicom.Dataset
        An RGB Secondary Capture Image with Burned In Annotation YES.
    """
    k = heatmap_key_slice(heatmap, len(volume.sources))
    plane = volume.voxels[k]
    values = heatmap.values[k] if heatmap.values.ndim == 3 else heatmap.values
    heat = _fit(values, plane.shape)
    grey = _window(plane, sources.header(volume.sources[k])).astype(np.float64)[..., None] / 255.0
    alpha = np.where(heat > 0.2, 0.5 * heat, 0.0)[..., None]
    rgb = (grey * (1.0 - alpha) + _jet(heat) * alpha) * 255.0
    pixels = _banner(np.clip(rgb, 0, 255).astype(np.uint8), _lines(ctx, heatmap.label[:60]))
    sc = _sc(
        pixels,
        "RGB",
        volume,
        sources,
        ctx,
        k=k,
        index=index,
        instance=1,
        description=f"{heatmap.label} heat-map of {ctx.model_name} {ctx.model_version} over the "
        "source slice",
    )
    log.info("results.sc_built", extra={"sop_uid": sc.SOPInstanceUID, "slice": k})
    return sc


def build_gray_sc(
    voxels: npt.NDArray[Any],
    volume: Volume,
    sources: SourceSet,
    ctx: ResultContext,
    *,
    index: int,
) -> list[Dataset]:
    """One greyscale Secondary Capture per slice of ``voxels`` (derived images that cannot be
    written as the source's own kind), each with the model banner burned in."""
    if voxels.shape != volume.voxels.shape:
        raise ResultError(
            f"derived voxels shape {voxels.shape} differs from volume shape {volume.voxels.shape}"
        )
    out = []
    for k in range(voxels.shape[0]):
        grey = _window(voxels[k], sources.header(volume.sources[k]))
        rgb = _banner(np.repeat(grey[..., None], 3, axis=2), _lines(ctx, f"derived slice {k + 1}"))
        pixels = rgb[..., 0] if not ctx.is_demo else rgb  # red demo text needs colour
        photometric = "RGB" if pixels.ndim == 3 else "MONOCHROME2"
        out.append(
            _sc(
                pixels,
                photometric,
                volume,
                sources,
                ctx,
                k=k,
                index=index,
                instance=k + 1,
                description=f"derived by {ctx.model_name} {ctx.model_version}",
            )
        )
    return out
