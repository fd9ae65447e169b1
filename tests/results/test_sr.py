"""TID 1500 SR: content read back equals the findings; PixelMed, dcmtk, dcmjs and refs agree."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import highdicom as hd
import pytest
from pydicom.sr.codedict import codes

from node.results.sr import malignancy_category
from node.types import Volume
from tests.results.conftest import CHEST, Case, run_tool


def _content(case: Case) -> Any:
    """The TID 1500 content of the case's SR, parsed by highdicom."""
    return hd.sr.srread(case.files_of("SR")[0]).content


def _groups(case: Case) -> list[Any]:
    sr = SimpleNamespace(content=_content(case))
    return list(sr.content.get_planar_roi_measurement_groups()) + list(
        sr.content.get_volumetric_roi_measurement_groups()
    )


def _nums(case: Case, tracking_id: str) -> dict[str, float]:
    out: dict[str, float] = {}
    for group in _groups(case):
        if group.tracking_identifier == tracking_id:
            for m in group.get_measurements():
                out[m.name.meaning] = m.value
    return out


def test_each_finding_has_planar_and_volumetric_groups_sharing_tracking(chest_case: Case) -> None:
    sr = SimpleNamespace(content=_content(chest_case))
    planar = sr.content.get_planar_roi_measurement_groups()
    volumetric = sr.content.get_volumetric_roi_measurement_groups()
    for finding in chest_case.prediction.findings:
        p = [g for g in planar if g.tracking_identifier == finding.tracking_id]
        v = [g for g in volumetric if g.tracking_identifier == finding.tracking_id]
        assert len(p) == 2 and len(v) == 1
        uids = {g.tracking_uid for g in (*p, *v)}
        assert len(uids) == 1
        assert p[0].roi is not None and p[0].roi.graphic_type.value == "POLYLINE"
        ref = p[0].roi.ContentSequence[0].ReferencedSOPSequence
        key = chest_case.volume.sources[finding.center_voxel[0]].sop_uid
        assert ref[0].ReferencedSOPInstanceUID == key
        segment = v[0].referenced_segment
        assert segment is not None
        seg = chest_case.of("SEG")[0]
        assert v[0].finding_type.value == finding.finding_type.value
        assert [s.value.value for s in v[0].finding_sites] == ["39607008"]
        assert seg.SOPInstanceUID in str(v[0])


@pytest.mark.parametrize("index", [0, 1])
def test_measurements_equal_the_findings(chest_case: Case, index: int) -> None:
    finding = chest_case.prediction.findings[index]
    nums = _nums(chest_case, finding.tracking_id)
    assert nums["Long axis"] == pytest.approx(finding.diameter_mm, abs=0.01)
    assert nums["Volume"] == pytest.approx(finding.volume_mm3, abs=0.01)
    assert nums["Probability of cancer"] == pytest.approx(finding.malignancy_probability, abs=1e-4)
    volumetric = [
        g
        for g in _groups(chest_case)
        if g.tracking_identifier == finding.tracking_id
        and isinstance(g, hd.sr.VolumetricROIMeasurementsAndQualitativeEvaluations)
    ][0]
    evaluations = volumetric.get_qualitative_evaluations()
    assert [e.value for e in evaluations] == [
        malignancy_category(finding.malignancy_probability or 0.0)
    ]


def test_observer_is_the_model_and_text_and_demo_are_stated(chest_case: Case) -> None:
    sr = chest_case.of("SR")[0]
    ctx = _content(chest_case).get_observer_contexts()
    device = [c for c in ctx if c.observer_type == codes.DCM.Device]
    assert device and device[0].observer_identifying_attributes.name == "lung-nodule-demo"
    texts = [item.TextValue for item in _walk(sr.ContentSequence) if item.ValueType == "TEXT"]
    assert chest_case.prediction.text in texts
    assert any(t.startswith("DEMO MODEL - NOT FOR DIAGNOSIS") for t in texts)
    assert sr.SeriesDescription.endswith("SR DEMO")
    assert sr.Manufacturer == "ainode"


def _walk(items: Any) -> Iterator[Any]:
    for item in items:
        yield item
        yield from _walk(item.get("ContentSequence", []))


def test_evidence_lists_every_source_and_the_seg(chest_case: Case) -> None:
    sr = chest_case.of("SR")[0]
    listed = {
        ref.ReferencedSOPInstanceUID
        for study in sr.CurrentRequestedProcedureEvidenceSequence
        for series in study.ReferencedSeriesSequence
        for ref in series.ReferencedSOPSequence
    }
    expected = {r.sop_uid for r in chest_case.volume.sources} | {
        chest_case.of("SEG")[0].SOPInstanceUID
    }
    assert listed == expected


def test_detection_writes_scoord3d_points(detection_case: Case) -> None:
    sr = detection_case.of("SR")[0]
    points = [item for item in _walk(sr.ContentSequence) if item.ValueType == "SCOORD3D"]
    assert len(points) == len(detection_case.prediction.findings)
    for item, finding in zip(points, detection_case.prediction.findings, strict=True):
        assert item.GraphicType == "POINT"
        assert list(item.GraphicData) == pytest.approx(list(finding.center_xyz), abs=1e-3)
        assert item.ReferencedFrameOfReferenceUID == detection_case.volume.frame_of_reference_uid


def test_classification_and_text_only_reports(dx_case: Case, text_case: Case) -> None:
    nums = _nums(dx_case, "class cardiomegaly")
    assert nums == {"Certainty of Finding": pytest.approx(0.72)}
    texts = [
        i.TextValue for i in _walk(text_case.of("SR")[0].ContentSequence) if i.ValueType == "TEXT"
    ]
    assert "No acute cardiopulmonary abnormality (demo)." in texts
    assert str(text_case.of("SR")[0].SpecificCharacterSet) in ("ISO_IR 100", "")


@pytest.mark.slow
def test_checkers_accept_every_sr(
    checker_tools: Path,
    corpus: Path,
    chest_case: Case,
    single_case: Case,
    detection_case: Case,
    enhanced_case: Case,
    dx_case: Case,
    text_case: Case,
) -> None:
    cases = (chest_case, single_case, detection_case, enhanced_case, dx_case, text_case)
    srs = [p for c in cases for p in c.files_of("SR")]
    assert len(srs) == len(cases)
    # PixelMed costs 10-25 s per file: validate each distinct layout once (2 findings + SEG,
    # 1 finding + SEG, detections with SCOORD3D, classification without findings).
    layouts = [
        p for c in (chest_case, single_case, detection_case, dx_case) for p in c.files_of("SR")
    ]
    # Two check-sr processes side by side (one per core); each runs one JVM per file.
    procs = [
        subprocess.Popen(
            [str(checker_tools / "check-sr"), "--quiet", *map(str, half)],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for half in (layouts[0::2], layouts[1::2])
    ]
    for proc in procs:
        out, _ = proc.communicate(timeout=500)
        assert proc.returncode == 0, out[-6000:]
        assert "0 error(s)" in out.splitlines()[-1]
    out = run_tool(checker_tools, "check-dicom", *srs)
    assert "0 error(s)" in out.splitlines()[-1]
    chest = [p for c in (chest_case, single_case, detection_case) for p in c.files_of("SR")]
    seg_files = chest_case.files_of("SEG") + single_case.files_of("SEG")
    run_tool(checker_tools, "check-dcmjs", "--strict", "--sources", corpus / CHEST, *chest)
    run_tool(checker_tools, "check-refs", "--sources", corpus / CHEST, *chest, *seg_files)
    for case in (enhanced_case, dx_case, text_case):
        folder = case.sources[0].parent
        run_tool(checker_tools, "check-refs", "--sources", folder, *case.files)


def test_long_axis_follows_the_lesion_not_its_neighbours(
    chest_volume: Volume, chest_sources: list[Path]
) -> None:
    """Two lesions share one label on the key slice: the long axis of the first is along its own
    elongated shape (vertical), not along the line joining both lesions (horizontal)."""
    import numpy as np

    from node.results import build_results
    from node.types import Code, Finding, Prediction
    from tests.results.conftest import WHEN
    from tests.results.phantoms import NODULE

    label_map = np.zeros(chest_volume.voxels.shape, dtype=np.uint8)
    label_map[10, 200:260, 140:150] = NODULE.label  # tall, thin lesion
    label_map[10, 225:235, 300:380] = NODULE.label  # wide lesion elsewhere, same label
    finding = Finding(
        tracking_id="tall",
        finding_type=Code("27925004", "SCT", "Nodule"),
        center_xyz=(0.0, 0.0, 0.0),
        center_voxel=(10, 230, 145),
        score=0.9,
        diameter_mm=38.8,
        volume_mm3=100.0,
        malignancy_probability=0.5,
        segment_label=NODULE.label,
    )
    pred = Prediction(
        model_name="m",
        model_version="1",
        task="segmentation",
        is_demo=False,
        label_map=label_map,
        segments=(NODULE,),
        findings=(finding,),
    )
    sr = [
        d
        for d in build_results(
            pred, chest_volume, chest_sources, job_id="axis", content_datetime=WHEN
        )
        if d.Modality == "SR"
    ][0]
    lines = [
        i for i in _walk(sr.ContentSequence) if i.ValueType == "SCOORD" and len(i.GraphicData) == 4
    ]
    assert len(lines) == 1
    x0, y0, x1, y1 = (float(v) for v in lines[0].GraphicData)
    assert abs(y1 - y0) > 10 * abs(x1 - x0)
    length_mm = abs(y1 - y0) * chest_volume.spacing[1]
    assert length_mm == pytest.approx(38.8, abs=0.01)
