"""Every transfer syntax in the corpus decodes to the uncompressed reference pixels.

Lossless syntaxes must match exactly.  Lossy ones are compared in HU: the mean absolute error
must stay within one quantisation step of the re-encoded file (its RescaleSlope) + 4 HU and the
maximum within 2 % of the reference range (88 HU here).  Measured: JPEG baseline 8-bit (slope 32)
mean 19.8 / max 64 HU; JPEG extended 12-bit mean 3.8 / max 36; JPEG 2000 lossy 0.57 / 5;
JPEG-LS near-lossless 0.69 / 1.  JPEG processes 6/8 and 10/12 have no decoder for pydicom
(python-gdcm's wheel refuses 12-bit JPEG too) and must fail naming the syntax.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pydicom
import pytest

from node.errors import ImagingError
from node.imaging import load_volume
from tests.conftest import CORPUS

FILES = sorted(p for d in CORPUS.glob("transfer-syntax*") for p in d.rglob("*.dcm"))
REFERENCE_SYNTAX = "1.2.840.10008.1.2.1"
LOSSY = {
    "1.2.840.10008.1.2.4.50",
    "1.2.840.10008.1.2.4.51",
    "1.2.840.10008.1.2.4.81",
    "1.2.840.10008.1.2.4.91",
}
UNDECODABLE = {"1.2.840.10008.1.2.4.53": "Process 6", "1.2.840.10008.1.2.4.55": "Process 10"}


def _syntax(path: Path) -> str:
    return str(pydicom.dcmread(path, stop_before_pixels=True).file_meta.TransferSyntaxUID)


def _reference(folder: Path) -> np.ndarray:
    ref = next(p for p in folder.iterdir() if _syntax(p) == REFERENCE_SYNTAX)
    return load_volume([ref], dtype="float32").voxels


def test_corpus_has_the_syntaxes() -> None:
    syntaxes = {_syntax(p) for p in FILES}
    assert len(syntaxes) >= 15, sorted(syntaxes)
    assert syntaxes >= LOSSY and set(UNDECODABLE) <= syntaxes


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.name.split("_")[-1].removesuffix(".dcm"))
def test_decodes_like_the_reference(path: Path) -> None:
    syntax = _syntax(path)
    if syntax in UNDECODABLE:
        with pytest.raises(ImagingError) as info:
            load_volume([path])
        assert syntax in str(info.value) and UNDECODABLE[syntax] in str(info.value)
        return
    reference = _reference(path.parent)
    voxels = load_volume([path], dtype="float32").voxels
    assert voxels.shape == reference.shape
    if syntax not in LOSSY:
        np.testing.assert_array_equal(voxels, reference)
        return
    slope = float(pydicom.dcmread(path, stop_before_pixels=True).get("RescaleSlope") or 1)
    diff = np.abs(voxels.astype(np.float64) - reference)
    span = float(reference.max() - reference.min())
    assert diff.mean() <= slope + 4.0, f"mean error {diff.mean():.2f} HU"
    assert diff.max() <= 0.02 * span, f"max error {diff.max():.1f} HU"
    assert diff.max() > 0  # really lossy: a lossless decode slipped in otherwise
