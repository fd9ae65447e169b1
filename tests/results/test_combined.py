"""One result set for a study and rule: four models' predictions over the corpus chest CT in one
SEG, one TID 1500 SR, one key-image series and a KOS, checked by the independent tools."""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pytest
from pydicom.dataset import Dataset

from node.results import check_results, encode, load_sources
from node.results.combine import build_combined_results, combine_predictions
from node.types import Prediction, Volume
from tests.results.air import algorithm_device_uid, assert_air
from tests.results.conftest import CHEST, WHEN, run_tool
from tests.results.phantoms import MASS, NODULE, chest_prediction


def _rule_predictions(volume: Volume) -> list[Prediction]:
    """What the four models of chest-ct-lung-nodules produce, in rule order."""
    full = chest_prediction(volume)
    assert full.label_map is not None
    seg = replace(
        full,
        model_name="lung-nodule-seg",
        model_version="0.4.0",
        findings=(),
        heatmaps=(),
        text=None,
        class_probabilities={},
    )
    nodules = np.where(full.label_map >= NODULE.label, full.label_map, 0).astype(np.uint8)
    detect = replace(
        full,
        model_name="lung-nodule-detect",
        model_version="0.2.0",
        task="detection",
        label_map=nodules,
        segments=(NODULE, MASS),
        findings=tuple(replace(f, malignancy_probability=None) for f in full.findings),
        heatmaps=(),
        text=None,
        class_probabilities={},
    )
    classify = replace(
        full,
        model_name="lung-nodule-classify",
        model_version="0.1.0",
        task="classification",
        label_map=None,
        segments=(),
        # the classifier scores the same nodules under its own tracking ids
        findings=tuple(
            replace(f, tracking_id=f"cls-{n}", segment_label=None, volume_mm3=None)
            for n, f in enumerate(full.findings)
        ),
        text=None,
    )
    report = Prediction(
        model_name="report-text",
        model_version="0.1.0",
        task="report",
        is_demo=True,
        text=full.text,
    )
    return [seg, detect, classify, report]


@dataclass
class CombinedCase:
    predictions: list[Prediction]
    results: list[Dataset]
    files: list[Path]

    def of(self, modality: str) -> list[Dataset]:
        return [d for d in self.results if d.Modality == modality]


@pytest.fixture(scope="module")
def combined(
    chest_sources: list[Path], chest_volume: Volume, tmp_path_factory: pytest.TempPathFactory
) -> CombinedCase:
    predictions = _rule_predictions(chest_volume)
    sources = load_sources(chest_sources)
    results = build_combined_results(
        predictions,
        chest_volume,
        sources,
        job_id="combined-chest",
        rule="chest-ct-lung-nodules",
        content_datetime=WHEN,
        series_number_base=9000,
        failed={"lung-lobes": "timed out after 1800 s"},
    )
    data = [encode(ds) for ds in results]
    check_results(results, sources, encoded=data)  # the pre-delivery gate
    folder = tmp_path_factory.mktemp("combined")
    files = []
    for n, (ds, raw) in enumerate(zip(results, data, strict=True)):
        path = folder / f"{n:02d}-{ds.Modality}.dcm"
        path.write_bytes(raw)
        files.append(path)
    return CombinedCase(predictions, results, files)


def test_one_seg_one_sr_one_key_image_series_and_a_kos(combined: CombinedCase) -> None:
    kinds = [ds.Modality for ds in combined.results]
    assert kinds.count("SEG") == 1 and kinds.count("SR") == 1 and kinds.count("KO") == 1
    scs = combined.of("OT")
    assert len(scs) == 1 and len({ds.SeriesInstanceUID for ds in scs}) == 1
    numbers = [int(ds.SeriesNumber) for ds in combined.results]
    assert sorted(set(numbers)) == [9001, 9002, 9003, 9004]
    for ds in combined.results:
        assert ds.Manufacturer == "ainode" and ds.ManufacturerModelName  # the KOS too
        assert ds.SeriesDescription.startswith("AI results ")
        assert "chest-ct-lung-nodules" in ds.SeriesDescription
    (kos,) = combined.of("KO")
    flagged = {
        str(ref.ReferencedSOPInstanceUID)
        for item in kos.ContentSequence
        for ref in item.get("ReferencedSOPSequence", [])
    }
    assert flagged == {str(ds.SOPInstanceUID) for ds in scs}


def test_segments_from_every_model_without_duplicated_anatomy(combined: CombinedCase) -> None:
    (seg,) = combined.of("SEG")
    labels = [(s.SegmentLabel, s.SegmentAlgorithmName) for s in seg.SegmentSequence]
    # Nodule and Mass came from both the segmentation and the detection model: written once,
    # from the first model of the rule
    assert labels == [
        ("Lung", "lung-nodule-seg"),
        ("Lung nodule", "lung-nodule-seg"),
        ("Lung mass", "lung-nodule-seg"),
    ]
    for s in seg.SegmentSequence:
        (alg,) = s.SegmentationAlgorithmIdentificationSequence
        assert alg.AlgorithmName == s.SegmentAlgorithmName


def test_prefer_decides_which_model_segment_wins(
    combined: CombinedCase, chest_volume: Volume
) -> None:
    merged = combine_predictions(combined.predictions, prefer=["lung-nodule-detect"])
    models = {merged.prediction.segments[n - 1].name: m for n, m in merged.segment_models.items()}
    assert models == {
        "Lung": "lung-nodule-seg",
        "Lung nodule": "lung-nodule-detect",
        "Lung mass": "lung-nodule-detect",
    }


def _groups(sr: Dataset) -> list[Dataset]:
    out = []

    def walk(items: list[Dataset]) -> None:
        for item in items:
            if item.ConceptNameCodeSequence[0].CodeValue == "125007":
                out.append(item)
            walk(list(item.get("ContentSequence", [])))

    walk(list(sr.ContentSequence))
    return out


def _text(item: Dataset, code: str) -> str | None:
    for child in item.get("ContentSequence", []):
        if child.ConceptNameCodeSequence[0].CodeValue == code:
            return str(child.get("TextValue"))
    return None


def test_one_finding_per_nodule_naming_its_models(combined: CombinedCase) -> None:
    (sr,) = combined.of("SR")
    groups = _groups(sr)
    tracking = {_text(g, "112039") for g in groups}
    assert tracking == {"nodule-1", "nodule-2"}  # detection + classification: one finding each
    for group in groups:
        assert _text(group, "111001") == "lung-nodule-detect"  # found by the detector
    probabilities = [
        (_text(num, "111001"), num)
        for g in groups
        for num in g.ContentSequence
        if num.ValueType == "NUM"
        and num.ConceptNameCodeSequence[0].CodeMeaning == "Probability of cancer"
    ]
    assert probabilities and {a for a, _ in probabilities} == {"lung-nodule-classify"}
    texts = [
        str(i.TextValue)
        for c in sr.ContentSequence
        for i in c.get("ContentSequence", [])
        if i.ValueType == "TEXT"
    ]
    assert "model lung-lobes did not run: timed out after 1800 s" in texts
    assert any(t.startswith("Class probabilities (lung-nodule-classify") for t in texts)
    assert any("Impression" in t for t in texts)


def test_every_combined_object_names_every_contributing_model(combined: CombinedCase) -> None:
    for ds in combined.results:
        assert_air(ds)
    (sr,) = combined.of("SR")
    devices = {str(i.ManufacturerModelName) for i in sr.ContributingEquipmentSequence}
    assert {p.model_name for p in combined.predictions} <= devices
    assert algorithm_device_uid(sr)


@pytest.mark.slow  # PixelMed's JVM and the Cornerstone adapters over a 30-slice SEG
def test_combined_results_pass_every_checker(
    checker_tools: Path, corpus: Path, combined: CombinedCase
) -> None:
    folder = corpus / CHEST
    out = run_tool(checker_tools, "check-dicom", *combined.files)
    assert "0 error(s)" in out.splitlines()[-1], out
    run_tool(checker_tools, "check-refs", "--sources", folder, *combined.files)
    seg_sr = [p for p in combined.files if p.stem.endswith(("SEG", "SR"))]
    run_tool(checker_tools, "check-dcmjs", "--strict", "--sources", folder, *seg_sr)
    run_tool(
        checker_tools,
        "check-sr",  # the SR and the KOS (TID 2010)
        *[p for p in combined.files if p.stem.endswith(("SR", "KO"))],
        timeout=600,
    )


def test_series_numbers_avoid_the_source_study(
    chest_sources: list[Path], chest_volume: Volume, combined: CombinedCase
) -> None:
    report = [p for p in combined.predictions if p.model_name == "report-text"]
    out = build_combined_results(
        report,
        chest_volume,
        load_sources(chest_sources),
        job_id="numbers",
        rule="r",
        content_datetime=WHEN,
        series_number_base=9000,
        taken_series_numbers={2, 9002, 10003},
    )
    assert [int(ds.SeriesNumber) for ds in out] == [11002]  # SR = base + 2, clear of all


def test_a_rebuild_is_byte_identical(
    chest_sources: list[Path], chest_volume: Volume, combined: CombinedCase
) -> None:
    """The node reruns a combine after a crash: same bytes, so the outbox delivers it once
    (highdicom stamps the KOS and its own equipment item with "now"; ainode freezes them)."""
    again = build_combined_results(
        combined.predictions,
        chest_volume,
        load_sources(chest_sources),
        job_id="combined-chest",
        rule="chest-ct-lung-nodules",
        content_datetime=WHEN,
        series_number_base=9000,
        failed={"lung-lobes": "timed out after 1800 s"},
    )
    assert [encode(ds) for ds in again] == [p.read_bytes() for p in combined.files]


def test_a_new_version_of_any_combined_model_gives_new_uids(
    chest_sources: list[Path], chest_volume: Volume, combined: CombinedCase
) -> None:
    """A re-run after the third model of the rule was re-registered as a new version: every
    object of the set gets new UIDs, so the outbox sends it and the old set is rejected."""
    newer = [
        replace(p, model_version="0.2.0") if p.model_name == "lung-nodule-classify" else p
        for p in combined.predictions
    ]
    again = build_combined_results(
        newer,
        chest_volume,
        load_sources(chest_sources),
        job_id="combined-chest",
        rule="chest-ct-lung-nodules",
        content_datetime=WHEN,
        series_number_base=9000,
        failed={"lung-lobes": "timed out after 1800 s"},
    )
    old = {str(ds.SOPInstanceUID) for ds in combined.results}
    new = {str(ds.SOPInstanceUID) for ds in again}
    assert len(new) == len(old) and not new & old
    old_series = {str(ds.SeriesInstanceUID) for ds in combined.results}
    assert not {str(ds.SeriesInstanceUID) for ds in again} & old_series


def test_segmentations_alone_need_no_sr(
    chest_sources: list[Path], chest_volume: Volume, combined: CombinedCase
) -> None:
    seg_only = [
        replace(p, findings=(), text=None, class_probabilities={}, heatmaps=())
        for p in combined.predictions
        if p.label_map is not None
    ]
    assert seg_only
    out = build_combined_results(
        seg_only,
        chest_volume,
        load_sources(chest_sources),
        job_id="seg-only",
        rule="r",
        content_datetime=WHEN,
    )
    assert [ds.Modality for ds in out] == ["SEG"]
    # a model that did not run is still said, in an SR
    out = build_combined_results(
        seg_only,
        chest_volume,
        load_sources(chest_sources),
        job_id="seg-only",
        rule="r",
        content_datetime=WHEN,
        failed={"lung-lobes": "worker process was killed by SIGKILL while running the model"},
    )
    assert [ds.Modality for ds in out] == ["SEG", "SR"]
