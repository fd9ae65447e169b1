"""TEST-ONLY: real result objects (SEG, SR, heat-map SC) for the ops node's CT study.

Built by ``node.results.build_results`` from a hand-made prediction and recorded through the
job store as a worker does, so the console has previews to show.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from node.imaging import load_volume
from node.results import build_results
from node.types import Code, HeatMap, Job, Prediction, SegmentDescription
from tests.api.opsnode import OpsNode
from tests.util import wait_until

NODULE = SegmentDescription(
    label=1,
    name="Nodule",
    category=Code("49755003", "SCT", "Morphologically Abnormal Structure"),
    property_type=Code("27925004", "SCT", "Nodule"),
    color_rgb=(255, 0, 0),
)


def _record_job(ops: OpsNode, job_id: str, objects: list[dict[str, str]]) -> None:
    """Submit, claim and finish a job as a worker does (the engine may claim it first: its
    run fails, the job is queued again, and we take it)."""
    store = ops.node.jobs
    series = ops.node.index.get_study(ops.ct_study)
    assert series is not None
    job = Job(
        job_id=job_id,
        study_uid=ops.ct_study,
        series_uids=(series.series[0].series_uid,),
        model="preview-demo",
        rule="manual",
    )
    store.submit([job], max_attempts=20)

    def grab() -> bool:
        claimed = store.claim("test")
        if claimed is None or claimed.job_id == job_id:
            return claimed is not None
        store.finish(claimed.job_id, ok=False, reason="not this test's job")
        return False

    wait_until(grab, timeout=60, what="test job claimed")
    store.finish(job_id, ok=True, outputs={"objects": objects})


def add_preview_results(ops: OpsNode) -> dict[str, Any]:
    """Build SEG, SR and heat-map SC for the CT study and record them as job ``j-preview``."""
    study = ops.node.index.get_study(ops.ct_study)
    assert study is not None
    paths = [i.path for i in ops.node.index.series_instances(study.series[0].series_uid)]
    volume = load_volume(paths)
    n, rows, cols = volume.voxels.shape
    yy, xx = np.mgrid[:rows, :cols]
    label_map = np.zeros((n, rows, cols), dtype=np.uint8)
    radii = [2, 9, 5][:n]  # slice 1 has the most segmented pixels
    for k, r in enumerate(radii):
        label_map[k] = ((yy - rows // 2) ** 2 + (xx - cols // 2) ** 2 <= r * r).astype(np.uint8)
    heat = np.zeros((rows, cols), dtype=np.float32)
    heat[4:14, 6:20] = 1.0
    prediction = Prediction(
        model_name="preview-demo",
        model_version="1.0",
        task="segmentation",
        is_demo=True,
        label_map=label_map,
        segments=(NODULE,),
        heatmaps=(HeatMap(values=heat, label="attention", slice_index=1),),
        text="synthetic finding for the preview test",
    )
    job_id = "j-preview"
    datasets = build_results(prediction, volume, paths, job_id=job_id)
    out_dir = ops.data_dir / "results" / job_id
    out_dir.mkdir(parents=True)
    objects = []
    for k, ds in enumerate(datasets):
        path = out_dir / f"{k:03d}.dcm"
        ds.save_as(path, enforce_file_format=True)
        objects.append(
            {
                "path": str(path.relative_to(ops.data_dir)),
                "sop_uid": str(ds.SOPInstanceUID),
                "sop_class_uid": str(ds.SOPClassUID),
                "series_uid": str(ds.SeriesInstanceUID),
                "modality": str(ds.Modality),
            }
        )
    _record_job(ops, job_id, objects)
    return {"job_id": job_id, "objects": objects, "mask_area": int(label_map[1].sum())}
