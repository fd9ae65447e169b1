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
from pydicom.pixels.utils import pixel_array
from pydicom.uid import UID, DeflatedExplicitVRLittleEndian

from node.errors import ImagingError

__all__ = ["decode_frame", "read_header", "transfer_syntax_name"]

log = logging.getLogger(__name__)


def transfer_syntax_name(uid: str) -> str:
    """Human name and UID of a transfer syntax, e.g. ``"JPEG Baseline (Process 1) (1.2...50)"``."""
    name = UID(uid).name if uid else "unknown transfer syntax"
    return f"{name} ({uid})" if name != uid else uid


def read_header(path: Path) -> Dataset:
    """Read one file's header without its pixel data.

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
            ds = pydicom.dcmread(path, stop_before_pixels=True)
        except (InvalidDicomError, OSError, ValueError, EOFError) as exc:
            raise ImagingError(f"cannot read {path.name} as DICOM: {exc}") from exc
    for w in caught:
        log.debug("imaging.read_warning", extra={"file": path.name, "warning": str(w.message)})
    return ds


def decode_frame(
    path: Path, *, index: int | None, sop_uid: str, transfer_syntax_uid: str
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

    Raises
    ------
    ImagingError
        The pixel data cannot be decoded (unsupported transfer syntax, truncated data...);
        the message names the transfer syntax.
    """
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            if transfer_syntax_uid == DeflatedExplicitVRLittleEndian:
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
