"""Nodule tracking (node.models.tracking) on synthetic follow-up pairs with the TRUE transform.

The known answers come from the generator (``node.samples.followup``): which nodule grew (and its
prior and current radius), which is new, the prior -> current matrix.  Volumes are those of the
generator's nodules (sphere of the nominal radius), so every change and doubling time has an
exact expected value.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from node.models.tracking import (
    GROWTH_THRESHOLD_PERCENT,
    NoduleTracks,
    interval_days,
    map_points,
    match_nodules,
    track_nodules,
    volume_doubling_days,
)
from node.samples.followup import FollowupPair, make_followup_pair, voxel_to_patient
from node.samples.phantoms import NoduleSpec
from node.types import Code, Finding, NoduleChange, PriorFinding

SEEDS = [7_210_001, 7_210_002, 7_210_003]
NODULE = Code("27925004", "SCT", "Nodule")
PRIOR_DATE, CURRENT_DATE = "20250301", "20260115"
DAYS = 320  # 2025-03-01 .. 2026-01-15


@pytest.fixture(scope="module", params=SEEDS)
def pair(request: pytest.FixtureRequest) -> FollowupPair:
    return make_followup_pair(request.param)


def _sphere_mm3(radius_mm: float) -> float:
    return 4.0 / 3.0 * math.pi * radius_mm**3


def _centre(nodule: NoduleSpec, pair: FollowupPair) -> np.ndarray:
    """Patient (x, y, z) of a nodule of the current anatomy."""
    index = np.asarray(nodule.center_mm) / np.asarray(pair.current.spacing)
    return voxel_to_patient(index, pair.current.spacing)


def _prior_findings(pair: FollowupPair) -> list[PriorFinding]:
    """The prior's nodules where the prior image has them (inverse of the true map)."""
    to_prior = np.linalg.inv(pair.prior_to_current)
    out = []
    for i, nodule in enumerate(pair.prior.nodules):
        xyz = map_points(to_prior, _centre(nodule, pair))[0]
        out.append(
            PriorFinding(
                tracking_id=f"prior-{i + 1}",
                center_xyz=(float(xyz[0]), float(xyz[1]), float(xyz[2])),
                diameter_mm=2 * nodule.radius_mm,
                volume_mm3=_sphere_mm3(nodule.radius_mm),
                tracking_uid=f"2.25.{1000 + i}",
            )
        )
    return out


def _current_findings(pair: FollowupPair) -> list[Finding]:
    out = []
    for i, nodule in enumerate(pair.current.nodules):
        xyz = _centre(nodule, pair)
        out.append(
            Finding(
                tracking_id=f"nodule-{i + 1}",
                finding_type=NODULE,
                center_xyz=(float(xyz[0]), float(xyz[1]), float(xyz[2])),
                center_voxel=(0, 0, 0),
                score=0.9,
                diameter_mm=2 * nodule.radius_mm,
                volume_mm3=_sphere_mm3(nodule.radius_mm),
            )
        )
    return out


def _track(
    pair: FollowupPair,
    prior: list[PriorFinding],
    current: list[Finding],
    matrix: np.ndarray | None = None,
) -> NoduleTracks:
    return track_nodules(
        prior,
        current,
        prior_to_current=pair.prior_to_current if matrix is None else matrix,
        prior_study_uid="2.25.77",
        prior_study_date=PRIOR_DATE,
        current_study_date=CURRENT_DATE,
    )


def test_true_matrix_maps_prior_landmarks_onto_current(pair: FollowupPair) -> None:
    mapped = map_points(pair.prior_to_current, pair.landmarks_prior)
    np.testing.assert_allclose(mapped, pair.landmarks_current, atol=1e-6)


def test_grown_new_and_stable_nodules_with_exact_changes(pair: FollowupPair) -> None:
    prior, current = _prior_findings(pair), _current_findings(pair)
    tracks = _track(pair, prior, current)
    assert tracks.resolved == ()
    prior_index = 0
    for finding, change, nodule in zip(
        tracks.current, pair.nodule_changes, pair.current.nodules, strict=True
    ):
        t = finding.tracking
        assert t is not None and t.interval_days == DAYS and t.prior_study_uid == "2.25.77"
        if change == "new":
            assert t.status is NoduleChange.NEW
            assert finding.tracking_uid is None and t.volume_doubling_days is None
            continue
        expected_prior = pair.prior.nodules[prior_index]
        assert finding.tracking_uid == prior[prior_index].tracking_uid  # carried forward
        assert t.prior_tracking_id == prior[prior_index].tracking_id
        ratio = (nodule.radius_mm / expected_prior.radius_mm) ** 3
        assert t.volume_change_percent == pytest.approx(100 * (ratio - 1), rel=1e-9)
        assert t.diameter_change_percent == pytest.approx(
            100 * (nodule.radius_mm / expected_prior.radius_mm - 1), rel=1e-9
        )
        if change == "grown":
            assert t.status is NoduleChange.GROWING
            assert t.volume_doubling_days == pytest.approx(DAYS * math.log(2) / math.log(ratio))
            assert t.doubling_note is None
        else:
            assert change == "stable" and t.status is NoduleChange.STABLE
            assert t.volume_change_percent == pytest.approx(0.0, abs=1e-9)
            assert t.volume_doubling_days is None and "unchanged" in (t.doubling_note or "")
        prior_index += 1
    assert prior_index == len(prior)


def test_a_nodule_gone_from_the_current_study_is_resolved(pair: FollowupPair) -> None:
    prior, current = _prior_findings(pair), _current_findings(pair)
    grown = pair.nodule_changes.index("grown")
    tracks = _track(pair, prior, [f for i, f in enumerate(current) if i != grown])
    assert [p.tracking_id for p, _ in tracks.resolved] == [prior[0].tracking_id]
    _, t = tracks.resolved[0]
    assert t.status is NoduleChange.RESOLVED and t.volume_change_percent == -100.0
    # its centre is placed in the current study where the grown nodule is
    assert t.prior_center_xyz == pytest.approx(current[grown].center_xyz, abs=1e-6)


def test_without_the_registration_far_moved_nodules_are_lost(pair: FollowupPair) -> None:
    """The prior lies 60 mm along x from where the true map puts it: with the (shifted) true
    matrix every prior nodule is matched; with the identity none is (all new and resolved)."""
    shift = np.eye(4)
    shift[0, 3] = 60.0
    prior = [
        PriorFinding(
            tracking_id=p.tracking_id,
            center_xyz=tuple(map_points(shift, [p.center_xyz])[0]),  # type: ignore[arg-type]
            diameter_mm=p.diameter_mm,
            volume_mm3=p.volume_mm3,
            tracking_uid=p.tracking_uid,
        )
        for p in _prior_findings(pair)
    ]
    current = _current_findings(pair)
    with_true = _track(pair, prior, current, matrix=pair.prior_to_current @ np.linalg.inv(shift))
    assert sum(f.tracking_uid is not None for f in with_true.current) == len(prior)
    assert with_true.resolved == ()
    identity = _track(pair, prior, current, matrix=np.eye(4))
    assert all(f.tracking_uid is None for f in identity.current)
    assert len(identity.resolved) == len(prior)


def test_assignment_is_global_not_greedy() -> None:
    # greedy nearest-first would pair prior 0 with current 0 (4 mm) and leave prior 1 unmatched
    prior = np.array([[0.0, 0.0, 0.0], [8.0, 0.0, 0.0]])
    current = np.array([[4.0, 0.0, 0.0], [-5.0, 0.0, 0.0]])
    pairs = match_nodules(
        prior, [4.0, 4.0], current, [4.0, 4.0], min_gate_mm=9.0, gate_per_diameter=0
    )
    assert pairs == [(0, 1), (1, 0)]


def test_gate_scales_with_nodule_size() -> None:
    prior, current = np.array([[0.0, 0.0, 0.0]]), np.array([[25.0, 0.0, 0.0]])
    assert match_nodules(prior, [5.0], current, [5.0]) == []  # gate 10 + 5 mm
    assert match_nodules(prior, [5.0], current, [20.0]) == [(0, 0)]  # gate 10 + 20 mm


def test_volume_doubling_time_and_its_undefined_cases() -> None:
    vdt, why = volume_doubling_days(100.0, 200.0, 90)
    assert vdt == pytest.approx(90.0) and why is None
    assert volume_doubling_days(100.0, 800.0, 90)[0] == pytest.approx(30.0)
    assert volume_doubling_days(200.0, 100.0, 90) == (None, "volume decreased: no doubling time")
    assert volume_doubling_days(100.0, 100.0, 90)[0] is None
    assert volume_doubling_days(100.0, 200.0, 0)[0] is None
    assert "interval unknown" in (volume_doubling_days(100.0, 200.0, None)[1] or "")
    assert volume_doubling_days(None, 200.0, 90)[0] is None
    assert interval_days("20250301", "20260115") == DAYS
    assert interval_days(None, "20260115") is None and interval_days("2025", "20260115") is None


def test_growth_threshold_decides_status() -> None:
    prior = [PriorFinding("p", (0.0, 0.0, 0.0), diameter_mm=10.0, volume_mm3=1000.0)]
    just_below = 1000.0 * (1 + (GROWTH_THRESHOLD_PERCENT - 0.1) / 100)
    statuses = []
    for volume in (just_below, 1000.0 * (1 + GROWTH_THRESHOLD_PERCENT / 100), 700.0):
        current = [Finding("n", NODULE, (1.0, 0.0, 0.0), (0, 0, 0), 0.9, 10.0, volume)]
        tracks = track_nodules(
            prior,
            current,
            prior_to_current=np.eye(4),
            prior_study_uid="2.25.1",
            prior_study_date=None,
            current_study_date=None,
        )
        t = tracks.current[0].tracking
        assert t is not None and t.interval_days is None
        assert t.volume_doubling_days is None  # no Study Dates: no interval
        statuses.append(t.status)
    assert statuses == [NoduleChange.STABLE, NoduleChange.GROWING, NoduleChange.SHRINKING]


def test_a_matrix_that_is_not_affine_is_refused() -> None:
    with pytest.raises(ValueError, match="4 x 4 affine"):
        map_points(np.ones((4, 4)), [[0.0, 0.0, 0.0]])


def test_no_doubling_time_below_the_growth_threshold() -> None:
    prior = [PriorFinding("p", (0.0, 0.0, 0.0), diameter_mm=10.0, volume_mm3=1000.0)]
    results = {}
    for volume in (1100.0, 2000.0):
        current = [Finding("n", NODULE, (1.0, 0.0, 0.0), (0, 0, 0), 0.9, 10.0, volume)]
        tracks = track_nodules(
            prior,
            current,
            prior_to_current=np.eye(4),
            prior_study_uid="2.25.1",
            prior_study_date=PRIOR_DATE,
            current_study_date=CURRENT_DATE,
        )
        t = tracks.current[0].tracking
        assert t is not None
        results[volume] = t
    stable, grown = results[1100.0], results[2000.0]
    assert stable.status is NoduleChange.STABLE and stable.volume_doubling_days is None
    assert "below the 25 % growth threshold" in (stable.doubling_note or "")
    assert grown.status is NoduleChange.GROWING
    assert grown.volume_doubling_days == pytest.approx(DAYS)  # doubled in DAYS days
