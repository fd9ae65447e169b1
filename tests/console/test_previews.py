"""Result previews (SEG overlay, heat-map SC), the dashboard and the deliveries page.

The result objects are built by the real builders (``node.results.build_results``) from a
hand-made prediction over the CT study stored in the node, and recorded through the job store
as a worker does; the console renders them from disk.
"""

from __future__ import annotations

import io
import re
from collections.abc import Iterator
from typing import Any

import numpy as np
import pydicom
import pytest
from PIL import Image

from tests.api.opsnode import OpsNode, start_ops_node
from tests.console.results import add_preview_results


@pytest.fixture(scope="module")
def ops(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OpsNode]:
    yield from start_ops_node(tmp_path_factory.mktemp("previews"))  # open node


@pytest.fixture(scope="module")
def results(ops: OpsNode) -> dict[str, Any]:
    return add_preview_results(ops)


def _png(ops: OpsNode, url: str) -> np.ndarray:
    r = ops.http.get(url)
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == "image/png"
    return np.asarray(Image.open(io.BytesIO(r.content)).convert("RGB")).astype(int)


def test_study_page_shows_seg_and_heatmap_previews(ops: OpsNode, results: dict[str, Any]) -> None:
    html = ops.http.get(f"/console/studies/{ops.ct_study}").text
    urls = re.findall(r'src="(/console/jobs/[^"]+/preview\.png)"', html)
    modalities = [o["modality"] for o in results["objects"]]
    assert "SEG" in modalities and "SR" in modalities
    # one preview per SEG and SC, none for the SR
    expected = [
        f"/console/jobs/{results['job_id']}/objects/{k}/preview.png"
        for k, o in enumerate(results["objects"])
        if o["modality"] != "SR"
    ]
    assert urls == expected


def test_seg_overlay_tints_the_slice_with_the_most_mask(
    ops: OpsNode, results: dict[str, Any]
) -> None:
    k = next(i for i, o in enumerate(results["objects"]) if o["modality"] == "SEG")
    rgb = _png(ops, f"/console/jobs/{results['job_id']}/objects/{k}/preview.png")
    assert rgb.shape == (32, 32, 3)
    tinted = (rgb[..., 0] != rgb[..., 1]) | (rgb[..., 1] != rgb[..., 2])
    assert tinted.sum() == results["mask_area"]  # the radius-9 disk of slice 1
    assert (rgb[tinted][:, 0] > rgb[tinted][:, 1] + 40).all()  # red segment colour
    assert (rgb[~tinted][:, 0] == rgb[~tinted][:, 1]).all()  # the rest stays grey


def test_heatmap_preview_is_the_secondary_capture(ops: OpsNode, results: dict[str, Any]) -> None:
    k, obj = next(
        (i, o)
        for i, o in enumerate(results["objects"])
        if o["sop_class_uid"].startswith("1.2.840.10008.5.1.4.1.1.7")
    )
    sc = pydicom.dcmread(ops.data_dir / obj["path"])
    rgb = _png(ops, f"/console/jobs/{results['job_id']}/objects/{k}/preview.png")
    assert max(rgb.shape[:2]) <= 384
    assert rgb.shape[0] * sc.Columns == pytest.approx(rgb.shape[1] * sc.Rows, rel=0.02)
    colourful = np.abs(rgb[..., 0] - rgb[..., 2]) > 60
    assert colourful.sum() > 20  # the burned-in heat-map


def test_previews_refuse_what_they_cannot_show(ops: OpsNode, results: dict[str, Any]) -> None:
    sr = next(i for i, o in enumerate(results["objects"]) if o["modality"] == "SR")
    job = results["job_id"]
    for url in (
        f"/console/jobs/{job}/objects/{sr}/preview.png",
        f"/console/jobs/{job}/objects/99/preview.png",
        "/console/jobs/no-such-job/objects/0/preview.png",
    ):
        r = ops.http.get(url)
        assert r.status_code == 404, url
        assert r.headers["content-type"] == "application/problem+json"


def test_dashboard_counts_per_hour(ops: OpsNode, results: dict[str, Any]) -> None:
    html = ops.http.get("/console/dashboard").text
    totals = dict(re.findall(r'id="chart-(\w+)" data-total="(\d+)"', html))
    assert totals["studies_received"] == "2"
    assert totals["studies_completed"] == "2"
    assert int(totals["jobs_succeeded"]) >= 1  # the preview job
    assert totals["deliveries_delivered"] == "3"  # CT slices to the archive folder
    assert html.count("<svg") == 5
    bars = [int(n) for n in re.findall(r'data-count="(\d+)"', html)]
    assert len(bars) == 5 * 24
    assert 'id="dead-deliveries"' in html
    assert re.search(r"Dead deliveries to <b>silent</b>.*?<td>1</td>", html, re.S)


def test_deliveries_page_filters_and_offers_retry(ops: OpsNode) -> None:
    html = ops.http.get("/console/deliveries", params={"state": "dead"}).text
    rows = re.findall(r'<tr class="delivery" data-id="(\d+)">', html)
    dead = [d.id for d in ops.node.outbox.list(state="dead")]
    assert sorted(int(r) for r in rows) == sorted(dead) and dead
    assert html.count('class="retry"') == len(dead)
    everything = ops.http.get("/console/deliveries").text
    assert len(re.findall(r'<tr class="delivery"', everything)) == len(ops.node.outbox.list())
    assert ops.http.get("/console/deliveries", params={"state": "bogus"}).status_code == 422
