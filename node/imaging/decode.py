"""Decode the pixel data of one instance, frame by frame, through pydicom's pixel handlers.

Compressed transfer syntaxes go through the maintained plugins pydicom finds on its own
(pylibjpeg-libjpeg, pylibjpeg-openjpeg, pylibjpeg-rle, pyjpegls).  Two JPEG syntaxes have no
maintained decoder reachable from pydicom (python-gdcm's wheel also refuses 12-bit JPEG):
JPEG Spectral Selection (Process 6 & 8, 1.2.840.10008.1.2.4.53) and JPEG Full Progression
(Process 10 & 12, 1.2.840.10008.1.2.4.55); both are retired in PS3.5 and raise ``ImagingError``
naming the syntax.
"""

from __future__ import annotations

import logging
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pydicom
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError
from pydicom.filereader import read_dataset
from pydicom.pixels.utils import pixel_array
from pydicom.uid import UID, DeflatedExplicitVRLittleEndian

from node.errors import ImagingError

_PIXEL_TAG = 0x7FE00010
_PIXEL_TAG_LE = b"\xe0\x7f\x10\x00"
_PIXEL_TAG_BE = b"\x7f\xe0\x00\x10"

__all__ = ["decode_frame", "read_before_pixels", "transfer_syntax_name"]

log = logging.getLogger(__name__)


def transfer_syntax_name(uid: str) -> str:
    """Human name and UID of a transfer syntax, e.g. ``"JPEG Baseline (Process 1) (1.2...50)"``."""
    name = UID(uid).name if uid else "unknown transfer syntax"
    return f"{name} ({uid})" if name != uid else uid


def read_before_pixels(path: Path) -> tuple[Dataset, int | None]:
    """Read one file's header without its pixel data; also where the Pixel Data element starts.

    The offset (None for deflated files, or when Pixel Data is not the next element) lets
    ``decode_frame`` read the pixels of a single-frame file without parsing its header again.

    pydicom's warnings about file quirks (e.g. a deflated file declaring explicit VR but holding
    implicit VR) are logged at DEBUG instead of being raised as Python warnings.

    Raises
    ------
    ImagingError
        The file cannot be read as DICOM.
    """
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            with path.open("rb") as fp:
                ds = pydicom.dcmread(fp, stop_before_pixels=True)
                offset: int | None = fp.tell()  # pydicom stops at the Pixel Data tag
                if fp.read(4) not in (_PIXEL_TAG_LE, _PIXEL_TAG_BE):
                    offset = None
        except RecursionError as exc:
            raise ImagingError(f"cannot read {path.name}: sequences nested too deeply") from exc
        except (InvalidDicomError, OSError, ValueError, EOFError) as exc:
            raise ImagingError(f"cannot read {path.name} as DICOM: {exc}") from exc
    for w in caught:
        log.debug("imaging.read_warning", extra={"file": path.name, "warning": str(w.message)})
    if str(getattr(ds.file_meta, "TransferSyntaxUID", "")) == DeflatedExplicitVRLittleEndian:
        offset = None
    return ds, offset


def _read_pixel_element(path: Path, header: Dataset, offset: int) -> None:
    """Read the Pixel Data element at ``offset`` into ``header`` (no header re-parse)."""
    uid = UID(str(header.file_meta.TransferSyntaxUID))
    with path.open("rb") as fp:
        fp.seek(offset)
        rest = read_dataset(fp, uid.is_implicit_VR, uid.is_little_endian)
    header[_PIXEL_TAG] = rest[_PIXEL_TAG]


def decode_frame(
    path: Path,
    *,
    index: int | None,
    sop_uid: str,
    transfer_syntax_uid: str,
    header: Dataset | None = None,
    pixel_offset: int | None = None,
) -> npt.NDArray[Any]:
    """Decode one frame of one instance (stored values; colour as (rows, cols, 3) RGB).

    Only that frame is decoded and held in memory, so a caller can fill a preallocated volume
    slice by slice.

    Parameters
    ----------
    path:
        The DICOM file.
    index:
        0-based frame index for multi-frame instances; None for a single-frame instance.
    sop_uid, transfer_syntax_uid:
        Used in error messages only.
    header, pixel_offset:
        From ``read_before_pixels`` for a single-frame file: only the Pixel Data element is
        read, and it is dropped from ``header`` again once decoded.

    Raises
    ------
    ImagingError
        The pixel data cannot be decoded (unsupported transfer syntax, truncated data...);
        the message names the transfer syntax.
    """
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            if header is not None and pixel_offset is not None and index is None:
                _read_pixel_element(path, header, pixel_offset)
                try:
                    frame = pixel_array(header)
                finally:
                    del header[_PIXEL_TAG]
            elif transfer_syntax_uid == DeflatedExplicitVRLittleEndian:
                # reading pixels straight from the file cannot inflate; parse the dataset instead
                frame = pixel_array(pydicom.dcmread(path), index=index)
            else:
                frame = pixel_array(path, index=index)
        except NotImplementedError as exc:
            raise ImagingError(
                f"cannot decode pixel data of SOP instance {sop_uid}: transfer syntax "
                f"{transfer_syntax_name(transfer_syntax_uid)} is not supported by the installed "
                "decoders (pylibjpeg-libjpeg/openjpeg/rle, pyjpegls); convert the series to a "
                "supported syntax (e.g. with dcmtk dcmdjpeg) before sending it"
            ) from exc
        except RuntimeError as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise ImagingError(
                f"cannot decode pixel data of SOP instance {sop_uid}: every installed decoder "
                f"failed on this {transfer_syntax_name(transfer_syntax_uid)} data ({first})"
            ) from exc
        except (ValueError, AttributeError, KeyError, TypeError, EOFError, OSError) as exc:
            raise ImagingError(
                f"cannot decode pixel data of SOP instance {sop_uid} "
                f"({transfer_syntax_name(transfer_syntax_uid)}): {exc}"
            ) from exc
    for w in caught:
        log.debug("imaging.decode_warning", extra={"sop_uid": sop_uid, "warning": str(w.message)})
    return np.asarray(frame)
