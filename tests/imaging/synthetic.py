"""Write synthetic single-frame CT series with pydicom (tests and bench/inference.py)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import numpy.typing as npt
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid


def ct_phantom_slice(k: int, rows: int, cols: int) -> npt.NDArray[np.int16]:
    """A stored-value slice (HU + 1024): air outside, a body ellipse, two darker lungs."""
    yy, xx = np.mgrid[0:rows, 0:cols]
    cy, cx = rows / 2, cols / 2
    body = ((yy - cy) / (0.40 * rows)) ** 2 + ((xx - cx) / (0.45 * cols)) ** 2 <= 1
    lung_l = ((yy - cy) / (0.25 * rows)) ** 2 + ((xx - 0.32 * cols) / (0.12 * cols)) ** 2 <= 1
    lung_r = ((yy - cy) / (0.25 * rows)) ** 2 + ((xx - 0.68 * cols) / (0.12 * cols)) ** 2 <= 1
    hu = np.full((rows, cols), -1000, np.int16)
    hu[body] = 40
    hu[lung_l | lung_r] = -800
    hu += np.int16(k % 7)
    return (hu + 1024).astype(np.int16)


def write_ct_series(
    folder: Path,
    *,
    slices: int,
    rows: int = 64,
    cols: int = 64,
    spacing: tuple[float, float, float] = (2.0, 0.7, 0.7),
    pixels: Callable[[int, int, int], npt.NDArray[np.int16]] = ct_phantom_slice,
) -> list[Path]:
    """Write ``slices`` CT files (explicit VR little endian), InstanceNumber in reverse order."""
    folder.mkdir(parents=True, exist_ok=True)
    study, series, frame = generate_uid(), generate_uid(), generate_uid()
    paths = []
    for k in range(slices):
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = CTImageStorage
        meta.MediaStorageSOPInstanceUID = generate_uid()
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds = Dataset()
        ds.file_meta = meta
        ds.SOPClassUID = CTImageStorage
        ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
        ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.FrameOfReferenceUID = study, series, frame
        ds.Modality = "CT"
        ds.BodyPartExamined = "CHEST"
        ds.PatientName = "Synthetic^Phantom"
        ds.InstanceNumber = slices - k
        ds.ImagePositionPatient = [-100.0, -120.0, -300.0 + k * spacing[0]]
        ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
        ds.PixelSpacing = [spacing[1], spacing[2]]
        ds.SliceThickness = spacing[0]
        ds.Rows, ds.Columns = rows, cols
        ds.SamplesPerPixel = 1
        ds.PhotometricInterpretation = "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
        ds.RescaleSlope, ds.RescaleIntercept = 1, -1024
        ds.PixelData = pixels(k, rows, cols).tobytes()
        path = folder / f"ct{k:04d}.dcm"
        ds.save_as(path, enforce_file_format=True)
        paths.append(path)
    return paths
