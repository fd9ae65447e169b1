"""Benchmark: a MONAI zoo bundle on one CT series, in ainode and in ``monai.bundle run``.

Both runs are fresh processes on the same DICOM folder with the same generated weights
(tests/models/bundle_weights.py; the configs are the zoo's, tests/models/bundles):

* ainode: ``ainode predict --model <bundle> --out DIR SERIES`` with the bundle under ``models``
  (series -> Volume -> MetaTensor -> the bundle's own items -> DICOM-SEG / SR written);
* MONAI: ``python -m monai.bundle run`` with its datalist pointed at the folder and its
  ``LoadImaged`` reader set to ``PydicomReader`` (NIfTI / JSON written by its own savers).

Printed: wall seconds, peak RSS (MiB) and their ratios, and ainode's overhead: its wall time
minus the time inside the bundle's own items (``model.bundle`` of prediction.json: preprocessing,
inferer, postprocessing), as a share of MONAI's wall time (issue 16 target: <= 10 %; peak RSS
within 1.2x); and the part of it only ainode does (reading the series into a Volume and
MetaTensor, outputs to a Prediction, writing the SEG/SR), since process start and importing
torch/MONAI are paid by MONAI's run as well.  To attribute that fairly, the same run also times
a fresh ``python -c "import monai.bundle"`` (the import floor both sides pay) and reports
ainode's overhead net of it.

With ``--breakdown`` the bench then times, in this process, each step of writing the SEG for
ainode's own output (decoded back onto the source grid, same segments): reading and sanitising
the source headers, highdicom's Segmentation, encoding, the conformance gate.

With ``--node`` the same bundle also runs in a real node end to end (``python -m node serve``
with the bundle under ``models``, a rule routing CT to it, a real Orthanc as destination): the
series is sent by dcmtk ``storescu`` twice (fresh UIDs), a cold run (the worker process starts,
imports and discovers) and a warm one (what every later study pays). The node's per-study
overhead is end to end (last instance acknowledged -> last result delivered, minus the stable
window) minus the time inside the bundle's own items, as a share of MONAI's run.

The series is the sample chest phantom of node/samples as bench/e2e.py writes it (``--slices``
x ``--size`` x ``--size``, anatomy kept in mm) or ``--series FOLDER``.

Run: ``PYTHONPATH=. .venv/bin/python bench/bundles.py [--bundle spleen_ct_segmentation]
[--slices 300] [--size 512] [--node] [--breakdown] [--json]``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
from pydicom.uid import generate_uid  # noqa: E402

from node.samples.studies import CT_SPACING, sample_chest_ct  # noqa: E402
from node.samples.writers import write_ct_series  # noqa: E402
from tests.models.bundle_weights import bundle_copy  # noqa: E402
from tests.models.zoo import (  # noqa: E402
    _timed,
    run_ainode_predict,
    run_monai_bundle,
    seg_on_grid,
)


def chest_ct(out: Path, slices: int, size: int) -> None:
    """The sample chest phantom at ``slices`` x ``size`` x ``size`` (as bench/e2e.py makes it)."""
    vol = sample_chest_ct().hu
    idx = np.linspace(0, vol.shape[0] - 1, slices).round().astype(int)
    rows = np.linspace(0, vol.shape[1] - 1, size).round().astype(int)
    cols = np.linspace(0, vol.shape[2] - 1, size).round().astype(int)
    spacing = (
        CT_SPACING[0] * vol.shape[0] / slices,
        CT_SPACING[1] * vol.shape[1] / size,
        CT_SPACING[2] * vol.shape[2] / size,
    )
    voxels = vol[idx][:, rows][:, :, cols]
    write_ct_series(voxels, spacing=spacing, out_dir=out, study_uid=generate_uid())


def import_floor(cwd: Path) -> dict[str, Any]:
    """A fresh interpreter importing MONAI's bundle runner (and torch): paid by both sides."""
    run = _timed([sys.executable, "-c", "import monai.bundle"], cwd=cwd, timeout=600)
    assert run["returncode"] == 0, run["output"][-2000:]
    return run


def node_runs(bundle: Path, series: Path, work: Path) -> list[tuple[str, dict[str, float]]]:
    """The bundle in a real node, cold then warm: end to end and the time inside its items."""
    import time

    from bench.e2e import STABLE, copy_study, finished, split, study_uid
    from tests.peers.dcmtk import storescu
    from tests.peers.node import start_node
    from tests.peers.orthanc import start_orthanc
    from tests.util import wait_until

    files = sorted(p for p in series.iterdir() if p.is_file())
    work.mkdir(parents=True, exist_ok=True)
    rules = work / "rules.yaml"
    rules.write_text(
        "version: 1\nrules:\n  - name: bundle\n    when: {Modality: CT}\n"
        f"    then: {{model: {bundle.name}, deliver: [pacs]}}\n",
        encoding="utf-8",
    )
    rows = []
    with start_orthanc(work / "pacs") as pacs:
        dest = {"type": "dimse", "host": "127.0.0.1", "port": pacs.dicom_port, "ae_title": pacs.aet}
        with start_node(
            work / "node",
            study={"stable_seconds": STABLE},
            destinations={"pacs": dest},
            inference={"workers": 1, "torch_threads": 2, "device": "cpu"},
            rules=str(rules),
            models=[str(bundle)],
        ) as node:
            for label, sent_files in (("cold", files), ("warm", copy_study(files, work / "w"))):
                sent = storescu(node.dicom_port, sent_files, timeout=600)
                acked = time.time()
                assert len(sent.acknowledged) == len(sent_files), sent.output[-2000:]
                uid = study_uid(sent_files)
                wait_until(lambda: finished(node, uid), timeout=1800, what="delivered")  # noqa: B023
                row = split(node, uid, acked)
                row["bundle_items"] = _job_bundle_seconds(node, uid)
                row["node_overhead"] = row["end_to_end"] - row["bundle_items"]
                rows.append((label, row))
    return rows


def _job_bundle_seconds(node: Any, uid: str) -> float:
    """Seconds inside the bundle's own items, summed over the study's jobs (their summaries)."""
    from bench.e2e import db

    conn = db(node)
    try:
        outputs = conn.execute("SELECT outputs FROM jobs WHERE study_uid=?", (uid,)).fetchall()
    finally:
        conn.close()
    total = 0.0
    for (text,) in outputs:
        summary = json.loads(text or "{}").get("summary", {})
        total += float(summary.get("timings_seconds", {}).get("bundle", 0.0))
    return total


def write_breakdown(series: Path, seg_path: Path) -> dict[str, float]:
    """Seconds of each step of writing ``seg_path``'s SEG again from its label map.

    The label map is the SEG decoded back onto the series' grid, the segments are the SEG's own
    (label = segment number, same codes), so the object built is the one ``ainode predict``
    wrote, up to its UIDs.
    """
    import datetime as dt
    import time

    import highdicom as hd

    from node.imaging import dicom_files, load_volume
    from node.results import load_sources
    from node.results.gate import check_results, encode
    from node.results.identity import ResultContext
    from node.results.seg import build_seg
    from node.types import Code, Prediction, SegmentDescription

    files = dicom_files([series])
    volume = load_volume(files)
    seg = hd.seg.segread(seg_path)
    segments = tuple(
        SegmentDescription(
            int(item.SegmentNumber),
            str(item.SegmentLabel),
            Code(*(str(getattr(item.SegmentedPropertyCategoryCodeSequence[0], k)) for k in _CODE)),
            Code(*(str(getattr(item.SegmentedPropertyTypeCodeSequence[0], k)) for k in _CODE)),
        )
        for item in seg.SegmentSequence
    )
    prediction = Prediction(
        model_name=str(seg.ManufacturerModelName),
        model_version="bench",
        task="segmentation",
        is_demo=False,
        label_map=seg_on_grid(seg_path, volume),
        segments=segments,
    )
    ctx = ResultContext.from_prediction(
        prediction,
        job_id="bench",
        content_datetime=dt.datetime(2026, 1, 1),
        series_number_base=9000,
    )
    out: dict[str, float] = {}
    start = time.perf_counter()
    sources = load_sources(files)
    out["read_and_sanitise_sources"] = time.perf_counter() - start
    start = time.perf_counter()
    built = build_seg(prediction, volume, sources, ctx, index=0)
    out["highdicom_segmentation"] = time.perf_counter() - start
    start = time.perf_counter()
    data = encode(built)
    out["encode"] = time.perf_counter() - start
    start = time.perf_counter()
    check_results([built], sources, encoded=[data])
    out["conformance_gate"] = time.perf_counter() - start
    out["frames"] = float(built.NumberOfFrames)
    out["megabytes"] = len(data) / 1e6
    return out


_CODE = ("CodeValue", "CodingSchemeDesignator", "CodeMeaning")


def _row(name: str, run: dict[str, Any]) -> str:
    return f"{name:<28} {run['wall_seconds']:>9.1f} s {run['peak_rss_mib']:>9.0f} MiB"


def main() -> None:
    """Run both sides once and print the figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--bundle",
        default="spleen_ct_segmentation",
        choices=["spleen_ct_segmentation", "lung_nodule_ct_detection"],
    )
    parser.add_argument("--series", type=Path, help="a DICOM series folder (default: synthetic)")
    parser.add_argument("--slices", type=int, default=300)
    parser.add_argument("--size", type=int, default=512, help="rows = columns of the synthetic CT")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON too")
    parser.add_argument(
        "--breakdown", action="store_true", help="time each step of writing the SEG (in-process)"
    )
    parser.add_argument(
        "--node", action="store_true", help="also run the bundle in a real node end to end"
    )
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="ainode-bench-bundles-") as tmp:
        root = Path(tmp)
        series = args.series
        if series is None:
            series = root / "series"
            chest_ct(series, args.slices, args.size)
        files = len([p for p in series.iterdir() if p.is_file()])
        yaml = "classes: [nodule]\n" if args.bundle == "lung_nodule_ct_detection" else None
        bundle = bundle_copy(args.bundle, root / "models", ainode_yaml=yaml)
        ours = run_ainode_predict(bundle, series, root / "ainode", model=bundle.name)
        theirs = run_monai_bundle(
            bundle,
            series,
            root / "monai",
            detection=args.bundle == "lung_nodule_ct_detection",
        )
        floor = import_floor(root)
        node = node_runs(bundle, series, root / "node-run") if args.node else []
        seg_path = root / "ainode" / "000-seg.dcm"
        breakdown = (
            write_breakdown(series, seg_path) if args.breakdown and seg_path.is_file() else {}
        )
    timings = ours["prediction"]["timings_seconds"]
    inside = float(timings.get("model.bundle", 0.0))
    overhead = ours["wall_seconds"] - inside
    write = timings["total"] - timings["discover"] - timings["load_volume"] - timings["predict"]
    # what only ainode does: DICOM -> Volume -> MetaTensor, outputs -> Prediction, SEG/SR written
    own = timings["load_volume"] + timings["model.input"] + timings["model.outputs"] + write
    figures = {
        "bundle": args.bundle,
        "series_files": files,
        "threads": os.cpu_count(),
        "load_average": os.getloadavg()[0],
        "ainode_wall_seconds": round(ours["wall_seconds"], 2),
        "monai_wall_seconds": round(theirs["wall_seconds"], 2),
        "wall_ratio": round(ours["wall_seconds"] / theirs["wall_seconds"], 3),
        "ainode_bundle_items_seconds": round(inside, 2),
        "ainode_overhead_seconds": round(overhead, 2),
        "overhead_share_of_monai": round(overhead / theirs["wall_seconds"], 3),
        "ainode_own_stages_seconds": round(own, 2),
        "own_stages_share_of_monai": round(own / theirs["wall_seconds"], 3),
        "ainode_write_results_seconds": round(write, 2),
        "import_floor_seconds": round(floor["wall_seconds"], 2),
        "import_floor_peak_rss_mib": round(floor["peak_rss_mib"]),
        "ainode_overhead_net_of_import_floor_seconds": round(overhead - floor["wall_seconds"], 2),
        "net_overhead_share_of_monai": round(
            (overhead - floor["wall_seconds"]) / theirs["wall_seconds"], 3
        ),
        "ainode_peak_rss_mib": round(ours["peak_rss_mib"]),
        "monai_peak_rss_mib": round(theirs["peak_rss_mib"]),
        "rss_ratio": round(ours["peak_rss_mib"] / theirs["peak_rss_mib"], 3),
        "ainode_timings_seconds": timings,
        "seg_write_breakdown_seconds": {k: round(v, 3) for k, v in breakdown.items()},
        "node_runs": {label: {k: round(v, 2) for k, v in row.items()} for label, row in node},
    }
    print(f"{args.bundle} on {files} files (load average {figures['load_average']:.1f})")
    print(_row("ainode predict", ours))
    print(_row("python -m monai.bundle run", theirs))
    print(
        f"ratios: wall {figures['wall_ratio']:.2f}x, peak RSS {figures['rss_ratio']:.2f}x; "
        f"ainode overhead {overhead:.1f} s = {100 * figures['overhead_share_of_monai']:.1f} % "
        "of MONAI's run"
    )
    print(
        f"ainode's own stages (series -> MetaTensor, outputs -> SEG/SR written): {own:.1f} s = "
        f"{100 * figures['own_stages_share_of_monai']:.1f} % of MONAI's run; the rest of the "
        "overhead is process start and importing torch/MONAI, which MONAI's run pays too"
    )
    print(
        f"import floor (fresh python -c 'import monai.bundle'): {floor['wall_seconds']:.1f} s; "
        f"ainode overhead net of it: {overhead - floor['wall_seconds']:.1f} s = "
        f"{100 * figures['net_overhead_share_of_monai']:.1f} % of MONAI's run"
    )
    print("ainode stages: " + ", ".join(f"{k} {v:.2f}" for k, v in timings.items()))
    for label, row in node:
        print(
            f"node end to end ({label}): {row['end_to_end']:.1f} s after the last instance "
            f"(stable window excluded), bundle items {row['bundle_items']:.1f} s, node overhead "
            f"{row['node_overhead']:.1f} s = "
            f"{100 * row['node_overhead'] / theirs['wall_seconds']:.1f} % of MONAI's run "
            f"(route {row['route']:.2f}, queue {row['queue']:.2f}, load {row['load']:.2f}, "
            f"model {row['model']:.2f}, write {row['write']:.2f}, deliver {row['deliver']:.2f})"
        )
    if breakdown:
        print("SEG write steps: " + ", ".join(f"{k} {v:.2f}" for k, v in breakdown.items()))
    if args.json:
        print(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
