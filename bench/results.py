"""Benchmark: build + write time and size of SEG (3 segments, 300x512x512), SR (10 findings), SC.

Run: PYTHONPATH=. python bench/results.py [--slices 300] [--combined]
``--combined`` (issue 18): four models' predictions (segmentation, detection, classification with
a heat-map, report text) merged into one SEG + SR + SC + KOS and gated (encode + check_results):
target <= 3 s excluding model time, peak RSS <= 1.5 GB.
Sources are synthetic in-memory CT headers (no corpus needed). Reference in the same run: the
encoding floor of the SEG (numpy bit-packing of the same non-empty frames), so the ratio shows
what highdicom's bookkeeping costs on top. Targets (issue 6): SEG <= 3 s, SR <= 1 s, one core.
"""

from __future__ import annotations

import argparse
import datetime as dt
import io
import os
import time

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402
from pydicom.dataset import Dataset  # noqa: E402
from pydicom.uid import generate_uid  # noqa: E402

from node.results.identity import ResultContext  # noqa: E402
from node.results.sc import build_heatmap_sc  # noqa: E402
from node.results.seg import build_seg, segment_numbers  # noqa: E402
from node.results.sources import SourceSet  # noqa: E402
from node.results.sr import build_sr  # noqa: E402
from node.types import Code, Finding, HeatMap, Prediction, SegmentDescription, SourceRef, Volume  # noqa: E402

CT = "1.2.840.10008.5.1.4.1.1.2"


def _sources(n: int, rows: int, cols: int) -> tuple[SourceSet, Volume]:
    study, series, frame = generate_uid(), generate_uid(), generate_uid()
    by_uid = {}
    refs = []
    for k in range(n):
        ds = Dataset()
        ds.SOPClassUID = CT
        ds.SOPInstanceUID = generate_uid()
        ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.FrameOfReferenceUID = study, series, frame
        ds.PatientName, ds.PatientID, ds.PatientBirthDate, ds.PatientSex = (
            "Bench^Mark",
            "B1",
            "",
            "O",
        )
        ds.StudyDate, ds.StudyTime, ds.StudyID, ds.AccessionNumber = "20261125", "120000", "1", ""
        ds.ReferringPhysicianName = ""
        ds.Modality, ds.SeriesNumber, ds.InstanceNumber = "CT", 1, k + 1
        ds.BodyPartExamined = "CHEST"
        ds.ImagePositionPatient = [-200.0, -200.0, float(k)]
        ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
        ds.PixelSpacing = [0.7, 0.7]
        ds.SliceThickness = 1.0
        ds.Rows, ds.Columns = rows, cols
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 1
        ds.WindowCenter, ds.WindowWidth = -600, 1500
        by_uid[ds.SOPInstanceUID] = ds
        refs.append(SourceRef(sop_uid=ds.SOPInstanceUID, sop_class_uid=CT))
    voxels = np.full((n, rows, cols), -800.0, dtype=np.float32)
    volume = Volume(
        voxels=voxels,
        spacing=(1.0, 0.7, 0.7),
        origin=(-200.0, -200.0, 0.0),
        direction=np.eye(3),
        sources=tuple(refs),
        study_uid=study,
        series_uid=series,
        modality="CT",
        body_part="CHEST",
        frame_of_reference_uid=frame,
    )
    return SourceSet(by_uid=by_uid), volume


def _prediction(volume: Volume, n_findings: int) -> Prediction:
    n, rows, cols = volume.voxels.shape
    label_map = np.zeros((n, rows, cols), dtype=np.uint8)
    label_map[n // 6 : 5 * n // 6, rows // 5 : 4 * rows // 5, cols // 8 : cols // 2 - 10] = 1
    label_map[n // 6 : 5 * n // 6, rows // 5 : 4 * rows // 5, cols // 2 + 10 : 7 * cols // 8] = 2
    zz, yy, xx = np.ogrid[:n, :rows, :cols]
    findings = []
    for i in range(n_findings):
        c = (n // 2 + (i - n_findings // 2) * max(1, n // 30), rows // 2, cols // 4 + 20 * i)
        ball = (zz - c[0]) ** 2 + ((yy - c[1]) * 0.7) ** 2 + ((xx - c[2]) * 0.7) ** 2 <= 36
        label_map[ball] = 3
        findings.append(
            Finding(
                tracking_id=f"nodule-{i + 1}",
                finding_type=Code("27925004", "SCT", "Nodule"),
                center_xyz=(0.0, 0.0, float(c[0])),
                center_voxel=c,
                score=0.9,
                diameter_mm=12.0,
                volume_mm3=900.0,
                malignancy_probability=0.1 * (i % 10),
                segment_label=3,
                finding_site=Code("39607008", "SCT", "Lung"),
            )
        )
    cat = Code("123037004", "SCT", "Anatomical Structure")
    abn = Code("49755003", "SCT", "Morphologically Abnormal Structure")
    segments = (
        SegmentDescription(1, "Right lung", cat, Code("39607008", "SCT", "Lung")),
        SegmentDescription(2, "Left lung", cat, Code("39607008", "SCT", "Lung")),
        SegmentDescription(3, "Nodules", abn, Code("27925004", "SCT", "Nodule")),
    )
    heat = np.zeros((rows, cols), dtype=np.float32)
    heat[rows // 3 : rows // 2, cols // 3 : cols // 2] = 1.0
    return Prediction(
        model_name="bench",
        model_version="1",
        task="segmentation",
        is_demo=True,
        label_map=label_map,
        segments=segments,
        findings=tuple(findings),
        heatmaps=(HeatMap(values=heat, label="Grad-CAM", slice_index=n // 2),),
        text="Benchmark impression.",
    )


def _write(ds: Dataset) -> tuple[float, int]:
    t = time.perf_counter()
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    return time.perf_counter() - t, len(buf.getvalue())


def _combined(sources: SourceSet, volume: Volume, pred: Prediction) -> None:
    import resource
    from dataclasses import replace

    from node.results.combine import build_combined_results
    from node.results.gate import check_results, encode

    assert pred.label_map is not None
    seg = replace(pred, model_name="seg", findings=(), heatmaps=(), text=None)
    detect = replace(
        pred,
        model_name="detect",
        label_map=np.where(pred.label_map == 3, 3, 0).astype(np.uint8),
        segments=pred.segments[2:],
        findings=tuple(replace(f, malignancy_probability=None) for f in pred.findings),
        heatmaps=(),
        text=None,
    )
    classify = replace(
        pred,
        model_name="classify",
        label_map=None,
        segments=(),
        findings=tuple(replace(f, segment_label=None) for f in pred.findings),
        class_probabilities={"nodule": 0.9, "normal": 0.1},
        text=None,
    )
    report = Prediction(
        model_name="report", model_version="1", task="report", is_demo=True, text=pred.text
    )
    t, c = time.perf_counter(), time.process_time()
    out = build_combined_results(
        [seg, detect, classify, report],
        volume,
        sources,
        job_id="bench-combined",
        rule="bench",
        content_datetime=dt.datetime(2026, 1, 1),
    )
    built = time.perf_counter() - t
    data = [encode(ds) for ds in out]
    check_results(out, sources, encoded=data)
    total, cpu = time.perf_counter() - t, time.process_time() - c
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(
        f"combined (4 models -> {', '.join(str(d.Modality) for d in out)}): build {built:5.2f} s,"
        f" build+encode+gate {total:5.2f} s [{cpu:5.2f} CPU]  (target <= 3 s); "
        f"peak RSS {rss:6.0f} MB (target <= 1536 MB); "
        f"{sum(len(d) for d in data) / 1e6:6.2f} MB written"
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--slices", type=int, default=300)
    parser.add_argument("--findings", type=int, default=10)
    parser.add_argument("--combined", action="store_true", help="four models, one result set")
    args = parser.parse_args()
    sources, volume = _sources(args.slices, 512, 512)
    if args.combined:
        _combined(sources, volume, _prediction(volume, args.findings))
        return
    pred = _prediction(volume, args.findings)
    ctx = ResultContext.from_prediction(
        pred, job_id="bench", content_datetime=dt.datetime(2026, 1, 1)
    )
    # warm-up on a tiny volume so highdicom's import/first-use cost is excluded
    s2, v2 = _sources(4, 64, 64)
    p2 = _prediction(v2, 1)
    build_seg(
        p2,
        v2,
        s2,
        ResultContext.from_prediction(p2, job_id="w", content_datetime=dt.datetime(2026, 1, 1)),
        index=0,
    )

    t, c = time.perf_counter(), time.process_time()
    seg = build_seg(pred, volume, sources, ctx, index=0)
    seg_s, seg_c = time.perf_counter() - t, time.process_time() - c
    seg_w, seg_b = _write(seg)
    assert pred.label_map is not None
    t = time.perf_counter()
    floor = 0
    for k in range(pred.label_map.shape[0]):
        for label in (1, 2, 3):
            mask = pred.label_map[k] == label
            if mask.any():
                floor += len(np.packbits(mask, bitorder="little"))
    ref_s = time.perf_counter() - t

    t, c = time.perf_counter(), time.process_time()
    sr = build_sr(pred, volume, sources, ctx, index=1, seg=seg, seg_numbers=segment_numbers(pred))
    sr_s, sr_c = time.perf_counter() - t, time.process_time() - c
    sr_w, sr_b = _write(sr)

    t = time.perf_counter()
    sc = build_heatmap_sc(pred.heatmaps[0], volume, sources, ctx, index=2)
    sc_s = time.perf_counter() - t
    sc_w, sc_b = _write(sc)

    print(f"volume {args.slices}x512x512, 3 segments, {seg.NumberOfFrames} non-empty frames")
    print("wall-clock seconds; [CPU seconds of this process] (the machine may be shared)")
    print(
        f"SEG build {seg_s:6.2f} s [{seg_c:5.2f}]  write {seg_w:5.2f} s  "
        f"size {seg_b / 1e6:7.2f} MB  (target <= 3 s build)"
    )
    print(
        f"    reference: numpy bit-packing floor {ref_s:5.2f} s  -> SEG/floor = "
        f"{seg_s / max(ref_s, 1e-9):5.1f}x"
    )
    print(
        f"SR  build {sr_s:6.2f} s [{sr_c:5.2f}]  write {sr_w:5.2f} s  size {sr_b / 1e3:7.1f} kB  "
        f"({args.findings} findings, target <= 1 s)"
    )
    print(f"SC  build {sc_s:6.2f} s  write {sc_w:5.2f} s  size {sc_b / 1e3:7.1f} kB")


if __name__ == "__main__":
    main()
