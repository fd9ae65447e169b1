"""lung-nodule-detect with a prior study: tracking over three follow-ups, on real DICOM series.

A synthetic follow-up pair (``node.samples.followup``: the first nodule grew, the second is new,
a known prior -> current transform) is written as CT series of one patient in several studies
(``write_ct_series``) and read back with ``node.imaging.load_volume``:

* T0: the prior anatomy (2025-03-01), detected without a prior ("no prior available");
* T1: the current anatomy (2026-01-15), against T0 and ainode's SR of T0;
* T2: the current anatomy again (2026-07-15), against T1 and ainode's SR of T1;
* T3: the prior anatomy again (2026-09-01), against T1: the grown nodule shrinks, the new one
  resolves.

The registration is the generator's TRUE transform (the demo registration's own accuracy is
tested in ``test_demo_register.py``), passed through the detector's ``register`` argument.
Known answers come from the generator: which nodule grew and by how much, which is new.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import highdicom as hd
import numpy as np
import pydicom
import pytest

from node.errors import ModelError
from node.imaging.prior_findings import read_prior_findings
from node.imaging.volume import load_volume
from node.models.builtin.lung_nodule_classify import LungNoduleClassifier
from node.models.builtin.lung_nodule_detect import LungNoduleDetection, PriorRegistration
from node.models.builtin.report_text import ReportText, render_impression
from node.models.summary import prediction_summary
from node.models.tracking import map_points
from node.results import build_results
from node.samples.followup import FollowupPair, make_followup_pair, voxel_to_patient
from node.samples.writers import write_ct_series
from node.types import (
    NO_PRIOR,
    Finding,
    NoduleChange,
    Prediction,
    PriorInput,
    PriorSeries,
    Volume,
)
from tests.results.conftest import run_tool

SEED = 7_210_537
WHEN = dt.datetime(2026, 12, 7, 21, 0, 0)
DATES = {"t0": "20250301", "t1": "20260115", "t2": "20260715", "t3": "20260901"}
#: the detector's volumes of one nodule on two renderings of different size agree to this share
#: (voxelisation at 2-2.5 mm of a 5-26 mm nodule); checked against the generator's truth
VOLUME_RATIO_TOLERANCE = 0.25


@dataclasses.dataclass
class Study:
    key: str
    files: list[Path]
    volume: Volume
    prediction: Prediction | None = None
    results: list[Path] = dataclasses.field(default_factory=list)

    def sr(self) -> Path:
        return next(p for p in self.results if p.name.endswith("-SR.dcm"))


def _write(pair_hu: np.ndarray, spacing: tuple[float, float, float], out: Path, n: int) -> Path:
    slices = pair_hu.shape[0]
    # the writer's slice 0 is the most cranial; the phantom's slice k lies at z = k * spacing
    write_ct_series(
        pair_hu[::-1],
        spacing=spacing,
        out_dir=out,
        origin=(-170.0, -170.0, (slices - 1) * spacing[0]),
        study_uid=f"2.25.{SEED}{n}1",
        series_uid=f"2.25.{SEED}{n}2",
        frame_of_reference_uid=f"2.25.{SEED}{n}3",
        study_date=DATES[out.name],
    )
    return out


@pytest.fixture(scope="module")
def pair() -> FollowupPair:
    return make_followup_pair(SEED)


@pytest.fixture(scope="module")
def studies(pair: FollowupPair, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Study]:
    base = tmp_path_factory.mktemp("followup")
    out = {}
    for n, (key, phantom) in enumerate(
        (("t0", pair.prior), ("t1", pair.current), ("t2", pair.current), ("t3", pair.prior)),
        start=1,
    ):
        folder = _write(phantom.hu, phantom.spacing, base / key, n)
        files = sorted(folder.glob("*.dcm"))
        out[key] = Study(key, files, load_volume(files))
    return out


def _true_register(pair: FollowupPair) -> PriorRegistration:
    """(prior, current) -> the generator's matrix between the two anatomies."""
    anatomy = {
        f"2.25.{SEED}12": "prior",
        f"2.25.{SEED}22": "current",
        f"2.25.{SEED}32": "current",
        f"2.25.{SEED}42": "prior",
    }
    to_current = pair.prior_to_current

    def register(prior: Volume, current: Volume) -> tuple[np.ndarray, str]:
        kinds = (anatomy[prior.series_uid], anatomy[current.series_uid])
        matrix = {
            ("prior", "current"): to_current,
            ("current", "prior"): np.linalg.inv(to_current),
        }.get(kinds, np.eye(4))
        return matrix, "the generator's true transform"

    return register


@pytest.fixture(scope="module")
def detector(pair: FollowupPair) -> LungNoduleDetection:
    return LungNoduleDetection(register=_true_register(pair))


def _prior_input(prior: Study, *, with_results: bool = True) -> PriorInput:
    return PriorInput(
        series=PriorSeries(
            study_uid=prior.volume.study_uid,
            series_uid=prior.volume.series_uid,
            study_date=DATES[prior.key],
            body_part="CHEST",
        ),
        volume=prior.volume,
        result_files=tuple(prior.results) if with_results else (),
    )


def _run(
    detector: LungNoduleDetection,
    study: Study,
    prior: Study | None,
    out: Path,
) -> Study:
    pred = detector.predict_with_prior(
        study.volume, _prior_input(prior) if prior else None, None if prior else NO_PRIOR
    )
    datasets = build_results(
        pred, study.volume, study.files, job_id=f"job-{study.key}", content_datetime=WHEN
    )
    folder = out / study.key
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, ds in enumerate(datasets):
        path = folder / f"{study.key}-{i:02d}-{ds.Modality}.dcm"
        ds.save_as(path, enforce_file_format=True)
        paths.append(path)
    study.prediction, study.results = pred, paths
    return study


@pytest.fixture(scope="module")
def followups(
    studies: dict[str, Study],
    detector: LungNoduleDetection,
    tmp_path_factory: pytest.TempPathFactory,
) -> dict[str, Study]:
    out = tmp_path_factory.mktemp("results")
    _run(detector, studies["t0"], None, out)
    _run(detector, studies["t1"], studies["t0"], out)
    _run(detector, studies["t2"], studies["t1"], out)
    _run(detector, studies["t3"], studies["t1"], out)
    return studies


def _nearest(findings: tuple[Finding, ...], xyz: np.ndarray) -> Finding:
    return min(findings, key=lambda f: float(np.linalg.norm(np.asarray(f.center_xyz) - xyz)))


def _current_centre(pair: FollowupPair, index: int) -> np.ndarray:
    nodule = pair.current.nodules[index]
    return voxel_to_patient(
        np.asarray(nodule.center_mm) / pair.current.spacing, pair.current.spacing
    )


def _sr_uids(path: Path) -> dict[str, str]:
    """Tracking UID -> Tracking Identifier of every measurement group of an SR file."""
    content = hd.sr.srread(path).content
    groups = list(content.get_planar_roi_measurement_groups()) + list(
        content.get_volumetric_roi_measurement_groups()
    )
    return {g.tracking_uid: g.tracking_identifier for g in groups}


def test_without_prior_the_result_says_so_and_nothing_is_tracked(
    followups: dict[str, Study],
) -> None:
    pred = followups["t0"].prediction
    assert pred is not None and pred.prior_note == NO_PRIOR
    assert all(f.tracking is None and f.tracking_uid is None for f in pred.findings)
    sr = pydicom.dcmread(followups["t0"].sr())
    texts = [i.TextValue for i in _walk(sr.ContentSequence) if i.ValueType == "TEXT"]
    assert NO_PRIOR in texts
    assert prediction_summary(pred, followups["t0"].volume.spacing)["prior"] == NO_PRIOR


def test_grown_nodule_grows_by_the_generators_change_and_new_one_is_new(
    followups: dict[str, Study], pair: FollowupPair
) -> None:
    pred = followups["t1"].prediction
    assert pred is not None
    grown = _nearest(pred.findings, _current_centre(pair, 0))
    new = _nearest(pred.findings, _current_centre(pair, 1))
    assert grown.tracking is not None and new.tracking is not None
    assert grown.tracking.status is NoduleChange.GROWING
    assert new.tracking.status is NoduleChange.NEW and new.tracking_uid is None
    # the generator's change: radius ratio cubed, and the prior image holds the prior anatomy
    # scaled by the placement (det of its linear part)
    prior_radius = pair.prior.nodules[0].radius_mm
    expected_ratio = (pair.current.nodules[0].radius_mm / prior_radius) ** 3 * float(
        np.linalg.det(pair.prior_to_current[:3, :3])
    )
    t = grown.tracking
    assert t.prior_volume_mm3 and grown.volume_mm3
    measured_ratio = grown.volume_mm3 / t.prior_volume_mm3
    assert measured_ratio == pytest.approx(expected_ratio, rel=VOLUME_RATIO_TOLERANCE)
    assert t.volume_change_percent == pytest.approx(100 * (measured_ratio - 1))
    days = (dt.date(2026, 1, 15) - dt.date(2025, 3, 1)).days
    assert t.interval_days == days
    assert t.volume_doubling_days == pytest.approx(days * math.log(2) / math.log(measured_ratio))
    generator_vdt = days * math.log(2) / math.log(expected_ratio)
    assert t.volume_doubling_days == pytest.approx(generator_vdt, rel=0.35)


def test_tracking_uid_is_kept_over_two_follow_ups(
    followups: dict[str, Study], pair: FollowupPair
) -> None:
    t0, t1, t2 = followups["t0"], followups["t1"], followups["t2"]
    assert t0.prediction and t1.prediction and t2.prediction
    uids0, uids1, uids2 = _sr_uids(t0.sr()), _sr_uids(t1.sr()), _sr_uids(t2.sr())
    to_t0 = np.linalg.inv(pair.prior_to_current)
    grown_at_t0 = map_points(to_t0, [_current_centre(pair, 0)])[0]
    uid = next(
        u
        for u, tid in uids0.items()
        if tid == _nearest(t0.prediction.findings, grown_at_t0).tracking_id
    )
    grown1 = _nearest(t1.prediction.findings, _current_centre(pair, 0))
    grown2 = _nearest(t2.prediction.findings, _current_centre(pair, 0))
    assert grown1.tracking_uid == uid == grown2.tracking_uid
    assert uid in uids1 and uid in uids2
    # the new nodule of T1 got its UID in T1's SR; T2 carries that one forward
    new1 = _nearest(t1.prediction.findings, _current_centre(pair, 1))
    new2 = _nearest(t2.prediction.findings, _current_centre(pair, 1))
    assert new1.tracking_uid is None
    assert new2.tracking_uid is not None and uids1[new2.tracking_uid] == new1.tracking_id
    assert new2.tracking_uid not in uids0
    # T2 is T1's anatomy again: every nodule matched, none changed, no doubling time
    for f in t2.prediction.findings:
        assert f.tracking is not None and f.tracking.status is NoduleChange.STABLE
        assert f.tracking_uid in uids1
        assert f.tracking.volume_change_percent == pytest.approx(0.0, abs=1e-6)
        assert f.tracking.volume_doubling_days is None
    assert t2.prediction.resolved == ()
    # the SEG segment of a carried nodule has the same UID as its SR groups
    seg = pydicom.dcmread(next(p for p in t2.results if p.name.endswith("-SEG.dcm")))
    assert {str(s.TrackingUID) for s in seg.SegmentSequence} == {
        f.tracking_uid for f in t2.prediction.findings
    }


def test_reverse_change_shrinks_and_resolves(
    followups: dict[str, Study], pair: FollowupPair
) -> None:
    pred = followups["t3"].prediction
    assert pred is not None
    at_t3 = map_points(np.linalg.inv(pair.prior_to_current), [_current_centre(pair, 0)])[0]
    shrunk = _nearest(pred.findings, at_t3)
    assert shrunk.tracking is not None
    assert shrunk.tracking.status is NoduleChange.SHRINKING
    assert shrunk.tracking.volume_doubling_days is None
    assert shrunk.tracking.doubling_note == "volume decreased: no doubling time"
    assert len(pred.resolved) == 1
    gone = pred.resolved[0]
    assert gone.tracking is not None and gone.tracking.status is NoduleChange.RESOLVED
    t1 = followups["t1"].prediction
    assert t1 is not None
    new1 = _nearest(t1.findings, _current_centre(pair, 1))
    assert gone.tracking.prior_tracking_id == new1.tracking_id
    assert gone.tracking_uid in _sr_uids(followups["t1"].sr())
    assert "1 resolved" in (pred.prior_note or "")


def test_prior_without_ainode_sr_is_detected_again(
    followups: dict[str, Study], detector: LungNoduleDetection, pair: FollowupPair
) -> None:
    t1 = followups["t1"]
    pred = detector.predict_with_prior(
        t1.volume, _prior_input(followups["t0"], with_results=False), None
    )
    assert "run on the prior series" in (pred.prior_note or "")
    with_sr = t1.prediction
    assert with_sr is not None
    for a, b in zip(pred.findings, with_sr.findings, strict=True):
        assert a.tracking is not None and b.tracking is not None
        assert a.tracking.status is b.tracking.status
        assert a.tracking_uid is None  # nothing to carry forward
        # the SR stores the detector's own measurements of the prior
        assert a.tracking.prior_volume_mm3 == b.tracking.prior_volume_mm3
        assert a.tracking.prior_diameter_mm == b.tracking.prior_diameter_mm


def _walk(items: Any) -> Iterator[Any]:
    for item in items:
        yield item
        yield from _walk(item.get("ContentSequence", []))


def test_sr_content_carries_change_doubling_time_and_status(
    followups: dict[str, Study], pair: FollowupPair
) -> None:
    t1 = followups["t1"]
    assert t1.prediction is not None
    grown = _nearest(t1.prediction.findings, _current_centre(pair, 0))
    assert grown.tracking is not None
    content = hd.sr.srread(t1.sr()).content
    groups = [
        g
        for g in content.get_volumetric_roi_measurement_groups()
        if g.tracking_identifier == grown.tracking_id
    ]
    assert len(groups) == 2  # current measurements, prior measurements (Time Point context)
    current, prior = groups
    nums = {(m.name.value, m.unit.value): m.value for m in current.get_measurements()}
    assert nums[("442714003", "%")] == pytest.approx(grown.tracking.volume_change_percent, abs=0.05)
    assert nums[("VDT", "d")] == pytest.approx(grown.tracking.volume_doubling_days, abs=0.05)
    assert [e.value.value for e in current.get_qualitative_evaluations()] == ["15454001"]
    prior_nums = {m.name.value: m.value for m in prior.get_measurements()}
    assert prior_nums["118565006"] == pytest.approx(grown.tracking.prior_volume_mm3, abs=0.01)
    assert prior_nums["103339001"] == pytest.approx(grown.tracking.prior_diameter_mm, abs=0.01)
    texts = [
        i.TextValue
        for i in _walk(pydicom.dcmread(t1.sr()).ContentSequence)
        if i.ValueType == "TEXT"
    ]
    assert any(t.startswith("Compared with the prior study of 2025-03-01") for t in texts)


@pytest.mark.slow
def test_follow_up_srs_pass_the_checkers(
    followups: dict[str, Study], checker_tools: Path, tmp_path: Path
) -> None:
    srs = [followups[k].sr() for k in ("t1", "t3")]  # grown + new; shrunk + resolved
    out = run_tool(checker_tools, "check-sr", "--quiet", *srs, timeout=500)
    assert "0 error(s)" in out.splitlines()[-1], out
    everything = [p for k in ("t1", "t3") for p in followups[k].results]
    out = run_tool(checker_tools, "check-dicom", *everything)
    assert "0 error(s)" in out.splitlines()[-1], out
    for key in ("t1", "t3"):
        source = followups[key].files[0].parent
        run_tool(checker_tools, "check-dcmjs", "--strict", "--sources", source, followups[key].sr())
        run_tool(checker_tools, "check-refs", "--sources", source, *followups[key].results)


def test_report_text_names_new_growing_and_resolved_nodules(
    followups: dict[str, Study], detector: LungNoduleDetection
) -> None:
    report = ReportText(classifier=LungNoduleClassifier(detection=detector))
    pred = report.predict_with_prior(followups["t1"].volume, _prior_input(followups["t0"]), None)
    text = pred.text or ""
    assert "COMPARISON with the prior study of 2025-03-01:" in text
    assert "New " in text and "Growing " in text and "volume doubling time" in text
    back = report.predict_with_prior(followups["t3"].volume, _prior_input(followups["t1"]), None)
    assert "has resolved." in (back.text or "")
    reason = "prior could not be retrieved: source down"
    text = render_impression(back.findings[:0], prior_note=reason)
    assert f"COMPARISON: {reason}." in text
    assert render_impression(()) == render_impression((), prior_note=None)  # no prior asked


def test_an_sr_of_another_series_is_not_read_as_the_priors(followups: dict[str, Study]) -> None:
    t0, t1 = followups["t0"], followups["t1"]
    # T0's SR draws on T0's images: none of its nodules can be placed in T1's series
    assert read_prior_findings(t0.results, t1.volume, model_name="lung-nodule-detect") is None
    assert read_prior_findings([], t0.volume) is None
    seg_only = [p for p in t0.results if p.name.endswith("-SEG.dcm")]
    assert read_prior_findings(seg_only, t0.volume) is None
    placed = read_prior_findings(t0.results, t0.volume, model_name="lung-nodule-detect")
    assert placed is not None and t0.prediction is not None
    assert [p.tracking_id for p in placed] == [f.tracking_id for f in t0.prediction.findings]
    for p, f in zip(placed, t0.prediction.findings, strict=True):
        # the SR's outline is drawn round the centre voxel: within half a voxel of the centre
        assert np.linalg.norm(np.subtract(p.center_xyz, f.center_xyz)) < 2.5
        assert (p.diameter_mm, p.volume_mm3) == (f.diameter_mm, f.volume_mm3)


def test_a_registration_that_refuses_leaves_the_findings_uncompared(
    followups: dict[str, Study],
) -> None:
    def refuse(prior: Volume, current: Volume) -> tuple[np.ndarray, str]:
        raise ModelError("chest-ct-register: the prior series is MR, not CT")

    t1 = followups["t1"]
    assert t1.prediction is not None
    untracked = tuple(dataclasses.replace(f, tracking=None) for f in t1.prediction.findings)
    findings, resolved, note = LungNoduleDetection(register=refuse).compare(
        t1.volume, untracked, _prior_input(followups["t0"]), None
    )
    assert findings == untracked and resolved == ()
    assert note == "prior not compared: chest-ct-register: the prior series is MR, not CT"
