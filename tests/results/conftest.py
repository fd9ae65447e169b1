"""Fixtures for result tests: real corpus sources, hand-made predictions, built objects on disk."""

from __future__ import annotations

import datetime as dt
import subprocess
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.dataset import Dataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from node.results import build_results
from node.types import Code, Finding, HeatMap, Prediction, SegmentDescription, Volume
from tests.results.phantoms import NODULE, chest_prediction, sphere
from tests.results.volumes import load_volume

WHEN = dt.datetime(2026, 11, 25, 12, 0, 0)
CHEST = "ct/chest-ct-siemens-sensation10-b40f-30sl"
ENHANCED_MR = "enhanced/siemens-xa10-enhanced-mr/6_1.dcm"
DX = "other-modalities/dx/dx_image.dcm"
LIVER = "ct/abdomen-liver-ct-ge-lightspeed-3sl"


def run_tool(tools: Path, name: str, *args: object, timeout: float = 240) -> str:
    """Run a checker; fail the test with its output unless it exits 0."""
    proc = subprocess.run(
        [str(tools / name), *map(str, args)], capture_output=True, text=True, timeout=timeout
    )
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, f"{name} exit {proc.returncode}:\n{out[-6000:]}"
    return out


def save(datasets: list[Dataset], folder: Path, stem: str) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, ds in enumerate(datasets):
        path = folder / f"{stem}-{i:02d}-{ds.Modality}.dcm"
        ds.save_as(path, enforce_file_format=True)
        paths.append(path)
    return paths


@dataclass
class Case:
    """One job: its sources, volume, prediction, built objects and their files."""

    sources: list[Path]
    volume: Volume
    prediction: Prediction
    results: list[Dataset]
    files: list[Path]

    def of(self, modality: str) -> list[Dataset]:
        return [d for d in self.results if d.Modality == modality]

    def files_of(self, modality: str) -> list[Path]:
        return [p for p in self.files if p.name.endswith(f"-{modality}.dcm")]


def _case(tmp: Path, stem: str, sources: list[Path], volume: Volume, pred: Prediction) -> Case:
    results = build_results(pred, volume, sources, job_id=f"job-{stem}", content_datetime=WHEN)
    return Case(sources, volume, pred, results, save(results, tmp / stem, stem))


@pytest.fixture(scope="session")
def chest_sources(corpus: Path) -> list[Path]:
    return sorted((corpus / CHEST).glob("*.dcm"))


@pytest.fixture(scope="session")
def chest_volume(chest_sources: list[Path]) -> Volume:
    return load_volume(chest_sources)


@pytest.fixture(scope="session")
def out_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("results")


@pytest.fixture(scope="session")
def chest_case(out_dir: Path, chest_sources: list[Path], chest_volume: Volume) -> Case:
    """Lungs + 2 nodules (SEG), 2 findings (SR), Grad-CAM (SC), text, demo model."""
    return _case(out_dir, "chest", chest_sources, chest_volume, chest_prediction(chest_volume))


@pytest.fixture(scope="session")
def single_case(out_dir: Path, chest_sources: list[Path], chest_volume: Volume) -> Case:
    """One nodule only: single-segment SEG and a one-finding SR, not a demo model."""
    full = chest_prediction(chest_volume, n_findings=1, is_demo=False)
    assert full.label_map is not None
    label_map = np.where(full.label_map == NODULE.label, NODULE.label, 0).astype(np.uint8)
    pred = replace(
        full,
        label_map=label_map,
        segments=(NODULE,),
        heatmaps=(),
        text=None,
        class_probabilities={},
    )
    return _case(out_dir, "single", chest_sources, chest_volume, pred)


@pytest.fixture(scope="session")
def detection_case(out_dir: Path, chest_sources: list[Path], chest_volume: Volume) -> Case:
    """Detections without a label map: findings become SR groups with SCOORD3D points."""
    full = chest_prediction(chest_volume)
    findings = tuple(replace(f, segment_label=None) for f in full.findings)
    pred = replace(
        full, label_map=None, segments=(), findings=findings, heatmaps=(), task="detection"
    )
    return _case(out_dir, "detect", chest_sources, chest_volume, pred)


@pytest.fixture(scope="session")
def enhanced_case(out_dir: Path, corpus: Path) -> Case:
    """Enhanced multi-frame MR source: SEG with frame references, SC heat-map, derived → SC."""
    sources = [corpus / ENHANCED_MR]
    volume = load_volume(sources)
    label_map = np.zeros(volume.voxels.shape, dtype=np.uint8)
    label_map |= sphere(volume.voxels.shape, (2, 30, 34), 9.0, volume.spacing).astype(np.uint8)
    heat = np.zeros(volume.voxels.shape[1:], dtype=np.float32)
    heat[20:40, 25:45] = 1.0
    pred = Prediction(
        model_name="brain-demo",
        model_version="1.0",
        task="segmentation",
        is_demo=True,
        label_map=label_map,
        segments=(replace(NODULE, label=1, tracking_id="lesion"),),
        heatmaps=(HeatMap(values=heat, label="attention", slice_index=2),),
        derived_voxels=volume.voxels * 2.0,
        text="Impression: one lesion (synthetic).",
    )
    return _case(out_dir, "enh", sources, volume, pred)


@pytest.fixture(scope="session")
def dx_case(out_dir: Path, corpus: Path) -> Case:
    """Radiograph (DX) classification: probabilities + heat-map, no findings."""
    sources = [corpus / DX]
    volume = load_volume(sources)
    heat = np.zeros(volume.voxels.shape[1:], dtype=np.float32)
    heat[60:110, 80:140] = np.linspace(0.2, 1.0, 60, dtype=np.float32)[None, :]
    pred = Prediction(
        model_name="cxr-classifier-demo",
        model_version="2.1",
        task="classification",
        is_demo=True,
        class_probabilities={"cardiomegaly": 0.72, "normal": 0.28},
        heatmaps=(HeatMap(values=heat, label="Grad-CAM cardiomegaly", slice_index=0),),
    )
    return _case(out_dir, "dx", sources, volume, pred)


@pytest.fixture(scope="session")
def synthetic_dx(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A minimal synthetic DX written with pydicom (for text-only reports on a radiograph)."""
    ds = Dataset()
    ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.1.1"
    ds.SOPInstanceUID = generate_uid()
    ds.StudyInstanceUID = generate_uid()
    ds.SeriesInstanceUID = generate_uid()
    ds.FrameOfReferenceUID = generate_uid()
    ds.PatientName = "Phantom^Chest"
    ds.PatientID = "PH-1"
    ds.PatientBirthDate = ""
    ds.PatientSex = "O"
    ds.StudyDate = "20261125"
    ds.StudyTime = "120000"
    ds.AccessionNumber = ""
    ds.ReferringPhysicianName = ""
    ds.StudyID = "1"
    ds.Modality = "DX"
    ds.SeriesNumber = 1
    ds.InstanceNumber = 1
    ds.BodyPartExamined = "CHEST"
    ds.SpecificCharacterSet = ""  # pitfall: empty value must not break result building
    ds.PatientOrientation = ["L", "F"]
    ds.ImageType = ["ORIGINAL", "PRIMARY"]
    ds.Rows, ds.Columns = 128, 96
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated = ds.BitsStored = 16
    ds.HighBit = 15
    ds.PixelRepresentation = 0
    ds.ImagerPixelSpacing = [0.5, 0.5]
    ds.PixelData = (np.arange(128 * 96, dtype=np.uint16) % 4096).tobytes()
    ds.file_meta = pydicom.dataset.FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    path = tmp_path_factory.mktemp("dx") / "synthetic-dx.dcm"
    ds.save_as(path, enforce_file_format=True)
    return path


@pytest.fixture(scope="session")
def text_case(out_dir: Path, synthetic_dx: Path) -> Case:
    """Report-text model alone on a synthetic radiograph: a simple SR."""
    volume = load_volume([synthetic_dx])
    pred = Prediction(
        model_name="report-demo",
        model_version="0.1",
        task="report",
        is_demo=True,
        text="No acute cardiopulmonary abnormality (demo).",
    )
    return _case(out_dir, "text", [synthetic_dx], volume, pred)


@pytest.fixture(scope="session")
def derived_case(out_dir: Path, chest_sources: list[Path], chest_volume: Volume) -> Case:
    """Enhancement model: denoised voxels written as a derived CT series."""
    from scipy import ndimage

    smooth = ndimage.uniform_filter(chest_volume.voxels, size=(1, 3, 3)).astype(np.float32)
    pred = Prediction(
        model_name="ct-denoise-demo",
        model_version="0.2",
        task="enhancement",
        is_demo=True,
        derived_voxels=np.rint(smooth),
    )
    return _case(out_dir, "derived", chest_sources, chest_volume, pred)


@pytest.fixture(scope="session")
def liver_case(out_dir: Path, corpus: Path) -> Case:
    """Source pitfalls: empty Specific Character Set, JANCT000 name, no Body Part/Laterality."""
    sources = sorted((corpus / LIVER).glob("*.dcm"))
    volume = load_volume(sources)
    label_map = np.zeros(volume.voxels.shape, dtype=np.uint8)
    label_map[:, 200:300, 150:260] = 1
    finding = Finding(
        tracking_id="liver-lesion",
        finding_type=Code("4147007", "SCT", "Mass"),
        center_xyz=(0.0, 0.0, 0.0),
        center_voxel=(1, 250, 205),
        score=0.8,
        diameter_mm=40.0,
        volume_mm3=1234.5,
        malignancy_probability=0.41,
        segment_label=1,
        finding_site=Code("10200004", "SCT", "Liver"),
    )
    heat = np.zeros(volume.voxels.shape, dtype=np.float32)
    heat[1, 200:300, 150:260] = 1.0
    pred = Prediction(
        model_name="liver-demo",
        model_version="0.0.1",
        task="segmentation",
        is_demo=True,
        label_map=label_map,
        segments=(
            SegmentDescription(
                label=1,
                name="Liver mass",
                category=Code("49755003", "SCT", "Morphologically Abnormal Structure"),
                property_type=Code("4147007", "SCT", "Mass"),
                tracking_id="liver-lesion",
            ),
        ),
        findings=(finding,),
        heatmaps=(HeatMap(values=heat, label="attention"),),
    )
    return _case(out_dir, "liver", sources, volume, pred)
