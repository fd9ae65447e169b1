"""Write synthetic single-frame CT series with pydicom (tests and bench/inference.py)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import numpy.typing as npt
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import UID, CTImageStorage, ExplicitVRLittleEndian, generate_uid


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


def write_mr_frames(
    folder: Path,
    frames: list[dict[str, object]],
    *,
    rows: int = 16,
    cols: int = 16,
    modality: str = "MR",
    description: str = "t1_axial",
) -> list[Path]:
    """One series of single-frame MR (or CT) images, one file per item of ``frames``.

    Each item gives ``position`` (x, y, z) and may give ``orientation`` (6 cosines, default
    axial), ``echo`` (EchoNumbers), ``echo_time``, ``image_type``, ``acquisition``, ``b_value``,
    ``direction`` (DiffusionGradientOrientation), ``temporal`` (TemporalPositionIdentifier) and
    ``tilt`` (GantryDetectorTilt).  Pixels are small gradients (the split reads no pixels).
    """
    folder.mkdir(parents=True, exist_ok=True)
    study, series, frame_uid = generate_uid(), generate_uid(), generate_uid()
    sop_class = UID("1.2.840.10008.5.1.4.1.1.4") if modality == "MR" else CTImageStorage
    paths = []
    for k, item in enumerate(frames):
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = sop_class
        meta.MediaStorageSOPInstanceUID = generate_uid()
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds = Dataset()
        ds.file_meta = meta
        ds.SOPClassUID = sop_class
        ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
        ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.FrameOfReferenceUID = study, series, frame_uid
        ds.Modality = modality
        ds.Manufacturer = "Synthetic"
        ds.SeriesDescription = description
        ds.SeriesNumber = 7
        ds.PatientName = "Synthetic^Series"
        ds.PatientID = "SYN1"
        ds.StudyDate, ds.SeriesTime, ds.AcquisitionTime = "20260101", "120000", f"12{k:04d}"
        ds.InstanceNumber = k + 1
        ds.ImagePositionPatient = list(item["position"])  # type: ignore[call-overload]
        ds.ImageOrientationPatient = list(item.get("orientation", [1, 0, 0, 0, 1, 0]))  # type: ignore[call-overload]
        ds.PixelSpacing = [1.0, 1.0]
        ds.SliceThickness = float(item.get("thickness", 2.0))  # type: ignore[arg-type]
        ds.ImageType = list(item.get("image_type", ["ORIGINAL", "PRIMARY", "M", "ND"]))  # type: ignore[call-overload]
        ds.AcquisitionNumber = int(item.get("acquisition", 1))  # type: ignore[call-overload]
        if "echo" in item:
            ds.EchoNumbers = int(item["echo"])  # type: ignore[call-overload]
        if modality == "MR":
            ds.EchoTime = float(item.get("echo_time", 10.0))  # type: ignore[arg-type]
            ds.RepetitionTime = 500.0
            ds.MagneticFieldStrength = 3
        if "b_value" in item:
            ds.DiffusionBValue = float(item["b_value"])  # type: ignore[arg-type]
        if "direction" in item:
            ds.DiffusionGradientOrientation = list(item["direction"])  # type: ignore[call-overload]
        if "temporal" in item:
            ds.TemporalPositionIdentifier = int(item["temporal"])  # type: ignore[call-overload]
        if "tilt" in item:
            ds.GantryDetectorTilt = float(item["tilt"])  # type: ignore[arg-type]
        ds.Rows, ds.Columns = rows, cols
        ds.SamplesPerPixel = 1
        ds.PhotometricInterpretation = "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
        ds.RescaleSlope, ds.RescaleIntercept = 1, 0
        yy, xx = np.mgrid[0:rows, 0:cols]
        ds.PixelData = ((yy * 7 + xx * 3 + k * 11) % 1000).astype(np.int16).tobytes()
        path = folder / f"im{k:04d}.dcm"
        ds.save_as(path, enforce_file_format=True)
        paths.append(path)
    return paths


def constructed_series() -> dict[str, list[dict[str, object]]]:
    """Multi-volume series as scanners write them: name -> frames for ``write_mr_frames``."""
    axial = [1, 0, 0, 0, 1, 0]
    sag = [0, 1, 0, 0, 0, -1]
    cor = [1, 0, 0, 0, 0, -1]

    def stack(n: int, step: float = 2.0, **extra: object) -> list[dict[str, object]]:
        return [{"position": (-8.0, -8.0, k * step), **extra} for k in range(n)]

    gap = [f for k, f in enumerate(stack(20)) if k != 9]
    big_gap = [f for k, f in enumerate(stack(20)) if not 5 <= k < 12]
    tilt: list[dict[str, object]] = [
        {"position": (-8.0, -8.0 + k * 2.0 * 0.2679, k * 2.0), "tilt": 15.0} for k in range(12)
    ]
    survey: list[dict[str, object]] = []
    for v in (-10.0, 0.0, 10.0):
        survey.append({"position": (-8.0, -8.0, v), "orientation": axial})
    for v in (-10.0, 0.0, 10.0):
        survey.append({"position": (v, -8.0, 8.0), "orientation": sag})
    for v in (-10.0, 0.0, 10.0):
        survey.append({"position": (-8.0, v, 8.0), "orientation": cor})
    return {
        "multi-echo": stack(10, echo=1, echo_time=5.0) + stack(10, echo=2, echo_time=15.0),
        "magnitude-phase": stack(8) + stack(8, image_type=["ORIGINAL", "PRIMARY", "P", "ND"]),
        "repeated-acquisition": stack(6, acquisition=1) + stack(6, acquisition=2),
        "time-series": [f for t in (1, 2, 3) for f in stack(5, temporal=t)],
        "dwi": stack(5, b_value=0)
        + [
            f
            for d in ((1.0, 0.0, 0.0), (0.0, 1.0, 0.0), (0.0, 0.0, 1.0))
            for f in stack(5, b_value=1000, direction=d)
        ],
        "three-plane-survey": survey,
        "small-gap": gap,
        "missing-slices": big_gap,
        "gantry-tilt": tilt,
        "plain-stack": stack(24),
        "echo-time-only": stack(7, echo_time=4.9) + stack(7, echo_time=9.8),
        "coronal-stack": [{"position": (-8.0, y * 3.0, 8.0), "orientation": cor} for y in range(9)],
        "oblique-stack": [
            {"position": (-8.0, k * 0.5, k * 1.8), "orientation": [1, 0, 0, 0, 0.9659, -0.2588]}
            for k in range(10)
        ],
        "localizer-image-type": stack(
            3, step=20.0, image_type=["ORIGINAL", "PRIMARY", "LOCALIZER", "ND"]
        ),
        "dwi-trace": stack(6, b_value=0) + stack(6, b_value=1000),
        "cardiac-phases": [f for t in (1, 2, 3, 4) for f in stack(4, temporal=t, echo=1)],
        "thin-slices": stack(40, step=0.625, thickness=0.625),
    }
