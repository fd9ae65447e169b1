"""Results stay valid when the source headers are not: corrupted copies of a real chest CT.

Each case copies five slices of the corpus chest CT and breaks their headers with ONE defect
class seen in real archives. The results built from them must pass every independent checker
with zero errors, and the repairs must be reported (``SourceSet.repairs``) without PHI.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom import config
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence as DicomSequence

from node.errors import ResultError
from node.results import build_result_files, load_sources
from node.types import Code, Finding, HeatMap, Prediction, Volume
from tests.results.conftest import CHEST, WHEN, run_tool
from tests.results.phantoms import NODULE, SITE_LUNG, sphere
from tests.results.volumes import load_volume

_SLICES = slice(12, 17)


def _code_item(value: str, scheme: str, meaning: str | None) -> Dataset:
    item = Dataset()
    item.CodeValue = value
    item.CodingSchemeDesignator = scheme
    if meaning is not None:
        item.CodeMeaning = meaning
    return item


def _incomplete_items(ds: Dataset) -> None:
    """Type 1 attributes missing in sequence items that results copy (PS3.3 C.7.2.1)."""
    ds.ProcedureCodeSequence = DicomSequence(
        [_code_item("CTCHEST", "99LOCAL", None), _code_item("CTTHX", "99LOCAL", "CT thorax")]
    )
    ref = Dataset()
    ref.ReferencedSOPInstanceUID = "1.2.826.0.1.3680043.2.1125.1"  # no Referenced SOP Class
    ds.ReferencedStudySequence = DicomSequence([ref])
    ident = Dataset()
    ident.InstitutionName = "Somewhere"  # Person Identification Code Sequence (Type 1) missing
    ds.ReferringPhysicianIdentificationSequence = DicomSequence([ident])


def _charset_empty(ds: Dataset) -> None:
    ds.SpecificCharacterSet = ""


def _charset_invalid(ds: Dataset) -> None:
    ds.SpecificCharacterSet = "ISO-8859-1"  # not a DICOM defined term (PS3.3 C.12.1.1.2)


def _over_long(ds: Dataset) -> None:
    ds.StudyDescription = "CT THORAX " * 9  # LO: at most 64 characters
    ds.StudyID = "STUDY-ID-TOO-LONG-20"  # SH: at most 16
    ds.InstitutionName = "A hospital whose name is far longer than sixty-four characters!!"
    ds.StationName = "STATION-NAME-TOO-LONG"  # SH
    ds.Manufacturer = "M" * 70  # copied into the Contributing Equipment item


def _wrong_vr(ds: Dataset) -> None:
    for keyword, vr in (("StudyID", "LO"), ("StationName", "LO"), ("StudyDate", "LO")):
        tag = pydicom.datadict.tag_for_keyword(keyword)
        assert tag is not None
        value = ds.get(keyword) or "20010101"
        ds[tag] = DataElement(tag, vr, str(value))
    tag = pydicom.datadict.tag_for_keyword("InstitutionName")
    assert tag is not None
    ds[tag] = DataElement(tag, "UT", "General Hospital")


def _private_in_standard_places(ds: Dataset) -> None:
    item = _code_item("CTCHEST", "99LOCAL", "CT chest")
    item.add_new(0x00091001, "LO", "no private creator")  # private, no creator element
    block = item.private_block(0x0011, "ACME 1.0", create=True)
    block.add_new(0x01, "LO", "vendor value")
    ds.ProcedureCodeSequence = DicomSequence([item])
    ds.add_new(0x00191010, "LO", "root private without creator")


DEFECTS: dict[str, Callable[[Dataset], None]] = {
    "incomplete-sequence-items": _incomplete_items,
    "empty-charset": _charset_empty,
    "invalid-charset": _charset_invalid,
    "over-long-values": _over_long,
    "wrong-vrs": _wrong_vr,
    "private-tags-in-standard-places": _private_in_standard_places,
}


def _corrupt(corpus: Path, folder: Path, defect: Callable[[Dataset], None]) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    out = []
    originals = sorted((corpus / CHEST).glob("*.dcm"))
    chosen = sorted(
        originals,
        key=lambda p: float(pydicom.dcmread(p, stop_before_pixels=True).ImagePositionPatient[2]),
    )[_SLICES]
    for path in chosen:
        ds = pydicom.dcmread(path)
        target = folder / path.name
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # writing invalid values on purpose
            defect(ds)
            old = config.settings.writing_validation_mode
            config.settings.writing_validation_mode = config.IGNORE
            try:
                ds.save_as(target, enforce_file_format=True)
            finally:
                config.settings.writing_validation_mode = old
        out.append(target)
    return out


def _prediction(volume: Volume) -> Prediction:
    shape = volume.voxels.shape
    label_map = np.zeros(shape, dtype=np.uint8)
    ball = sphere(shape, (2, 250, 150), 8.0, volume.spacing)
    label_map[ball] = NODULE.label
    idx = np.argwhere(ball)
    k = int(round(idx[:, 0].mean()))
    r, c = (int(round(v)) for v in idx[:, 1:].mean(axis=0))
    center = (
        np.asarray(volume.origin)
        + volume.direction[2] * k * volume.spacing[0]
        + volume.direction[1] * r * volume.spacing[1]
        + volume.direction[0] * c * volume.spacing[2]
    )
    finding = Finding(
        tracking_id="nodule-1",
        finding_type=Code("27925004", "SCT", "Nodule"),
        center_xyz=(float(center[0]), float(center[1]), float(center[2])),
        center_voxel=(k, r, c),
        score=0.9,
        diameter_mm=16.0,
        volume_mm3=float(ball.sum() * np.prod(volume.spacing)),
        malignancy_probability=0.6,
        segment_label=NODULE.label,
        finding_site=SITE_LUNG,
    )
    heat = np.zeros(shape, dtype=np.float32)
    heat[ball] = 1.0
    return Prediction(
        model_name="lung-nodule-demo",
        model_version="0.3.1",
        task="segmentation",
        is_demo=True,
        label_map=label_map,
        segments=(NODULE,),
        findings=(finding,),
        heatmaps=(HeatMap(values=heat, label="Grad-CAM nodule"),),
        text="Impression: one nodule (synthetic).",
    )


@dataclass
class Imperfect:
    """Results built from one corrupted copy of the chest CT."""

    sources: list[Path]
    files: list[Path]
    repairs: tuple[str, ...]


@pytest.fixture(scope="module")
def imperfect(corpus: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Imperfect]:
    cases = {}
    for name, defect in sorted(DEFECTS.items()):
        root = tmp_path_factory.mktemp(name)
        sources = _corrupt(corpus, root / "src", defect)
        with warnings.catch_warnings():
            # pydicom warns when it reads the broken headers; that is the point of the case
            warnings.simplefilter("ignore")
            volume = load_volume(sources)
            source_set = load_sources(sources)
        files = build_result_files(
            _prediction(volume), volume, source_set, job_id=f"bad-{name}", content_datetime=WHEN
        )
        out = []
        for n, result in enumerate(files):
            path = root / "out" / f"{n:02d}-{result.dataset.Modality}.dcm"
            path.parent.mkdir(exist_ok=True)
            path.write_bytes(result.data)
            out.append(path)
        cases[name] = Imperfect(sources, out, source_set.repairs)
    return cases


@pytest.mark.slow  # six result sets through PixelMed's JVM validator: ~40 s on an idle box
def test_results_from_imperfect_sources_pass_every_checker(
    checker_tools: Path, imperfect: dict[str, Imperfect]
) -> None:
    everything = [p for case in imperfect.values() for p in case.files]
    for name, case in imperfect.items():
        kinds = sorted(p.stem.split("-")[1] for p in case.files)
        assert kinds == ["OT", "SEG", "SR"], name
        folder = case.sources[0].parent
        run_tool(checker_tools, "check-refs", "--sources", folder, *case.files)
        seg_sr = [p for p in case.files if p.stem.endswith(("SEG", "SR"))]
        run_tool(checker_tools, "check-dcmjs", "--strict", "--sources", folder, *seg_sr)
    out = run_tool(checker_tools, "check-dicom", *everything)
    assert "0 error(s)" in out.splitlines()[-1], out
    srs = [p for p in everything if p.stem.endswith("SR")]
    run_tool(checker_tools, "check-sr", *srs, timeout=900)  # one JVM run per file


@pytest.mark.parametrize("name", sorted(DEFECTS))
def test_repairs_are_reported_without_values(name: str, imperfect: dict[str, Imperfect]) -> None:
    repairs = imperfect[name].repairs
    assert repairs, f"{name}: the sanitiser reported no repair"
    text = " ".join(repairs)
    for value in ("Somewhere", "General Hospital", "far longer", "ACME", "CTCHEST", "vendor"):
        assert value not in text  # keywords and reasons only, never source values


def test_broken_patient_id_is_refused_not_altered(corpus: Path, tmp_path: Path) -> None:
    def long_id(ds: Dataset) -> None:
        ds.PatientID = "P" * 70  # LO: at most 64; changing it would re-file the results

    sources = _corrupt(corpus, tmp_path, long_id)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(ResultError, match="PatientID is not valid DICOM"):
            load_sources(sources)


def test_gate_refuses_an_object_with_an_invalid_value(corpus: Path, tmp_path: Path) -> None:
    from node.results import check_results

    sources = _corrupt(corpus, tmp_path, _charset_empty)
    volume = load_volume(sources)
    source_set = load_sources(sources)
    files = build_result_files(
        _prediction(volume), volume, source_set, job_id="gate", content_datetime=WHEN
    )
    datasets = [f.dataset for f in files]
    item = Dataset()
    item.CodeValue = "X"
    item.CodingSchemeDesignator = "99LOCAL"  # CodeMeaning (Type 1) missing
    datasets[1].ProcedureCodeSequence = DicomSequence([item])
    with pytest.raises(ResultError, match="CodeMeaning"):
        check_results(datasets, source_set)
    del datasets[1].ProcedureCodeSequence
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        datasets[0].StudyID = "X" * 20  # SH: at most 16
    with pytest.raises(ResultError, match="StudyID"):
        check_results(datasets, source_set)
