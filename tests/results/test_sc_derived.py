"""Secondary Captures (heat-maps, banner) and derived image series."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pydicom

from tests.results.conftest import CHEST, Case, run_tool


def test_heatmap_sc_has_banner_and_references_key_slice(chest_case: Case) -> None:
    (sc,) = chest_case.of("OT")
    assert sc.SOPClassUID == "1.2.840.10008.5.1.4.1.1.7"
    assert sc.BurnedInAnnotation == "YES"
    assert sc.PhotometricInterpretation == "RGB"
    assert sc.SeriesDescription == "lung-nodule-demo 0.3.1 SC DEMO"
    assert sc.BodyPartExamined == "CHEST"
    heat = chest_case.prediction.heatmaps[0].values
    key = int(np.argmax(heat.reshape(heat.shape[0], -1).max(axis=1)))
    ref = sc.SourceImageSequence[0]
    assert ref.ReferencedSOPInstanceUID == chest_case.volume.sources[key].sop_uid
    pixels = pydicom.dcmread(chest_case.files_of("OT")[0]).pixel_array
    band = pixels[:20]
    # Demo banner: red text on a black band at the top.
    red = (band[..., 0] > 200) & (band[..., 1] < 120) & (band[..., 2] < 120)
    assert red.sum() > 100
    # The heat-map is burned in: strongly coloured pixels below the banner.
    body = pixels[80:].astype(int)
    assert (np.abs(body[..., 0] - body[..., 2]) > 80).sum() > 50


def test_non_demo_model_has_no_demo_banner(single_case: Case, out_dir: Path) -> None:
    from dataclasses import replace

    from node.results import build_results
    from node.types import HeatMap
    from tests.results.conftest import WHEN

    heat = np.zeros(single_case.volume.voxels.shape, dtype=np.float32)
    heat[14, 240:260, 140:160] = 1.0
    pred = replace(
        single_case.prediction,
        label_map=None,
        segments=(),
        findings=(),
        heatmaps=(HeatMap(values=heat, label="attention"),),
    )
    (sc,) = build_results(
        pred, single_case.volume, single_case.sources, job_id="plain", content_datetime=WHEN
    )
    band = sc.pixel_array[:20]
    red = (band[..., 0] > 200) & (band[..., 1] < 120) & (band[..., 2] < 120)
    assert red.sum() == 0
    assert "DEMO" not in sc.SeriesDescription and "DEMO" not in sc.ImageComments


def test_radiograph_heatmap_sc(dx_case: Case) -> None:
    (sc,) = dx_case.of("OT")
    src = pydicom.dcmread(dx_case.sources[0], stop_before_pixels=True)
    assert sc.SourceImageSequence[0].ReferencedSOPInstanceUID == src.SOPInstanceUID
    assert sc.StudyInstanceUID == src.StudyInstanceUID and sc.PatientID == src.PatientID
    assert sc.Columns >= 512  # small images are enlarged so the banner is readable
    assert list(sc.PatientOrientation) == list(src.PatientOrientation)


def test_derived_ct_series_round_trips_hounsfield(derived_case: Case) -> None:
    cts = derived_case.of("CT")
    assert len(cts) == len(derived_case.volume.sources)
    derived = derived_case.prediction.derived_voxels
    assert derived is not None
    assert len({d.SeriesInstanceUID for d in cts}) == 1
    for k in (0, 14, 29):
        ds = pydicom.dcmread(derived_case.files_of("CT")[k])
        assert list(ds.ImageType)[:2] == ["DERIVED", "SECONDARY"]
        assert (
            ds.SourceImageSequence[0].ReferencedSOPInstanceUID
            == derived_case.volume.sources[k].sop_uid
        )
        hu = ds.pixel_array * float(ds.RescaleSlope) + float(ds.RescaleIntercept)
        np.testing.assert_allclose(hu, derived[k], atol=0.5 * float(ds.RescaleSlope) + 1e-6)
        src = pydicom.dcmread(derived_case.sources[0], stop_before_pixels=True)
        assert ds.StudyInstanceUID == src.StudyInstanceUID
        assert not any(elem.tag.is_private for elem in ds)


def test_enhanced_source_derived_voxels_become_sc(enhanced_case: Case) -> None:
    scs = [
        d
        for d in enhanced_case.of("OT")
        if d.SeriesInstanceUID != enhanced_case.of("OT")[0].SeriesInstanceUID
        or d.InstanceNumber > 1
    ]
    assert len(scs) >= len(enhanced_case.volume.sources) - 1
    frames = sorted(
        int(d.SourceImageSequence[0].ReferencedFrameNumber) for d in enhanced_case.of("OT")
    )
    assert set(range(1, 7)) <= set(frames)


def test_checkers_accept_sc_and_derived(
    checker_tools: Path,
    corpus: Path,
    chest_case: Case,
    dx_case: Case,
    enhanced_case: Case,
    derived_case: Case,
) -> None:
    files = (
        chest_case.files_of("OT")
        + derived_case.files_of("CT")
        + dx_case.files_of("OT")
        + enhanced_case.files_of("OT")
    )
    out = run_tool(checker_tools, "check-dicom", *files)
    assert "0 error(s)" in out.splitlines()[-1]
    run_tool(
        checker_tools,
        "check-refs",
        "--sources",
        corpus / CHEST,
        *chest_case.files_of("OT"),
        *derived_case.files_of("CT"),
    )
    run_tool(
        checker_tools, "check-refs", "--sources", dx_case.sources[0].parent, *dx_case.files_of("OT")
    )
