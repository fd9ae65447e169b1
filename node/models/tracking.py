"""Longitudinal nodule tracking: prior nodules matched to current ones through a registration.

Issue 21 §3 (docs/followup.md, "Tracking").  Pure numpy/scipy, no DICOM:

1. the prior nodule centres (prior patient mm) are mapped into the current study's patient
   coordinates by the registration's ``moving_to_fixed`` matrix (``map_points``);
2. prior and current nodules are paired by the Hungarian assignment (scipy
   ``linear_sum_assignment``) on the distances between centres; a pair farther apart than the
   gate (``min_gate_mm`` plus ``gate_per_diameter`` times the larger diameter of the two) is no
   pair (``match_nodules``);
3. each pair gets its diameter and volume change in per cent, a status, and for a growing
   nodule the volume doubling time ``VDT = interval * ln 2 / ln(V_current / V_prior)`` (days,
   from the two Study Dates); a current nodule without a pair is ``new``, a prior one
   ``resolved``.

The growth threshold is a volume change of 25 %: the change below which volumetry of one nodule
on two scans cannot tell growth from measurement variation (British Thoracic Society pulmonary
nodule guideline, 2015, and the NELSON trial's volumetric growth criterion).
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np
import numpy.typing as npt
from scipy.optimize import linear_sum_assignment

from node.types import Finding, NoduleChange, NoduleTracking, PriorFinding

__all__ = [
    "GROWTH_THRESHOLD_PERCENT",
    "NoduleTracks",
    "change_status",
    "interval_days",
    "map_points",
    "match_nodules",
    "percent_change",
    "track_nodules",
    "volume_doubling_days",
]

#: A volume change of at least this (per cent, up or down) is growth or shrinkage.
GROWTH_THRESHOLD_PERCENT = 25.0
#: Pairing gate: this distance (mm) ...
MIN_GATE_MM = 10.0
#: ... plus this many times the larger diameter of the two nodules.
GATE_PER_DIAMETER = 1.0
_FAR = 1e9


def map_points(matrix: npt.ArrayLike, points_xyz: npt.ArrayLike) -> npt.NDArray[np.float64]:
    """Apply a 4 x 4 homogeneous affine to ``(n, 3)`` points (patient mm).

    Raises
    ------
    ValueError
        ``matrix`` is not a finite 4 x 4 affine (last row 0 0 0 1).
    """
    m = np.asarray(matrix, dtype=np.float64)
    if m.shape != (4, 4) or not np.all(np.isfinite(m)) or not np.allclose(m[3], [0, 0, 0, 1]):
        raise ValueError("the registration matrix is not a finite 4 x 4 affine")
    p = np.asarray(points_xyz, dtype=np.float64).reshape(-1, 3)
    return np.asarray(p @ m[:3, :3].T + m[:3, 3], dtype=np.float64)


def match_nodules(
    prior_xyz: npt.ArrayLike,
    prior_diameters_mm: Sequence[float | None],
    current_xyz: npt.ArrayLike,
    current_diameters_mm: Sequence[float | None],
    *,
    min_gate_mm: float = MIN_GATE_MM,
    gate_per_diameter: float = GATE_PER_DIAMETER,
) -> list[tuple[int, int]]:
    """Pairs (prior index, current index) of one-to-one matched nodules.

    Parameters
    ----------
    prior_xyz
        ``(n, 3)`` prior centres, already mapped into the current patient coordinates.
    prior_diameters_mm, current_diameters_mm
        Diameters (None: unknown, counted as 0) for the size-scaled gate.
    current_xyz
        ``(m, 3)`` current centres.
    min_gate_mm, gate_per_diameter
        A pair is allowed when its distance is at most
        ``min_gate_mm + gate_per_diameter * max(prior diameter, current diameter)``.

    Returns
    -------
    list[tuple[int, int]]
        The assignment of least total distance among allowed pairs, sorted by prior index.
    """
    a = np.asarray(prior_xyz, dtype=np.float64).reshape(-1, 3)
    b = np.asarray(current_xyz, dtype=np.float64).reshape(-1, 3)
    if len(a) == 0 or len(b) == 0:
        return []
    da = np.array([d or 0.0 for d in prior_diameters_mm], dtype=np.float64)
    db = np.array([d or 0.0 for d in current_diameters_mm], dtype=np.float64)
    dist = np.linalg.norm(a[:, None, :] - b[None, :, :], axis=-1)
    gate = min_gate_mm + gate_per_diameter * np.maximum(da[:, None], db[None, :])
    allowed = dist <= gate
    cost = np.where(allowed, dist, _FAR)
    rows, cols = linear_sum_assignment(cost)
    return sorted((int(i), int(j)) for i, j in zip(rows, cols, strict=True) if allowed[i, j])


def interval_days(prior_date: str | None, current_date: str | None) -> int | None:
    """Days from the prior Study Date to the current one (DA, YYYYMMDD); None when unknown."""
    try:
        if not prior_date or not current_date:
            return None
        a = dt.datetime.strptime(prior_date.strip()[:8], "%Y%m%d").date()
        b = dt.datetime.strptime(current_date.strip()[:8], "%Y%m%d").date()
    except ValueError:
        return None
    return (b - a).days


def percent_change(prior: float | None, current: float | None) -> float | None:
    """``100 * (current - prior) / prior``; None when either is unknown or prior is not > 0."""
    if prior is None or current is None or prior <= 0:
        return None
    return 100.0 * (current - prior) / prior


def volume_doubling_days(
    prior_mm3: float | None, current_mm3: float | None, days: int | None
) -> tuple[float | None, str | None]:
    """Volume doubling time in days, or None and why it is not defined.

    ``VDT = days * ln 2 / ln(V_current / V_prior)``.  It is defined only for a volume that grew
    (a shrinking nodule would give a negative "doubling" time, an unchanged one an infinite one)
    over a positive interval between the two studies.
    """
    if prior_mm3 is None or current_mm3 is None or prior_mm3 <= 0 or current_mm3 <= 0:
        return None, "volume not measured in both studies"
    if days is None:
        return None, "interval unknown (a Study Date is missing)"
    if days <= 0:
        return None, f"interval of {days} days between the studies; needs a positive one"
    if current_mm3 < prior_mm3:
        return None, "volume decreased: no doubling time"
    if current_mm3 == prior_mm3:
        return None, "volume unchanged: no doubling time"
    return days * math.log(2.0) / math.log(current_mm3 / prior_mm3), None


def change_status(volume_change: float | None, diameter_change: float | None) -> NoduleChange:
    """GROWING / SHRINKING / STABLE from the volume change (or, without volumes, the volume
    change a sphere of those diameters would show) against ``GROWTH_THRESHOLD_PERCENT``."""
    change = volume_change
    if change is None and diameter_change is not None:
        change = 100.0 * ((1.0 + diameter_change / 100.0) ** 3 - 1.0)
    if change is None:
        return NoduleChange.STABLE
    if change >= GROWTH_THRESHOLD_PERCENT:
        return NoduleChange.GROWING
    if change <= -GROWTH_THRESHOLD_PERCENT:
        return NoduleChange.SHRINKING
    return NoduleChange.STABLE


@dataclass(frozen=True, slots=True)
class NoduleTracks:
    """The outcome of ``track_nodules``.

    ``current``: the current findings in their order, each with ``tracking`` (and the prior's
    Tracking UID when its prior nodule had one); ``resolved``: each prior nodule no current one
    matches, with its tracking (status RESOLVED, centre mapped into the current study).
    """

    current: tuple[Finding, ...]
    resolved: tuple[tuple[PriorFinding, NoduleTracking], ...]


def _pair_tracking(
    prior: PriorFinding, mapped: tuple[float, float, float], current: Finding, base: NoduleTracking
) -> NoduleTracking:
    d_change = percent_change(prior.diameter_mm, current.diameter_mm)
    v_change = percent_change(prior.volume_mm3, current.volume_mm3)
    status = change_status(v_change, d_change)
    vdt, why = volume_doubling_days(prior.volume_mm3, current.volume_mm3, base.interval_days)
    if vdt is not None and status is not NoduleChange.GROWING:
        # a change within measurement variation gives a huge, meaningless doubling time
        vdt, why = (
            None,
            (
                f"volume change below the {GROWTH_THRESHOLD_PERCENT:g} % growth threshold: "
                "no doubling time"
            ),
        )
    return replace(
        base,
        status=status,
        prior_tracking_id=prior.tracking_id,
        prior_center_xyz=mapped,
        prior_diameter_mm=prior.diameter_mm,
        prior_volume_mm3=prior.volume_mm3,
        diameter_change_percent=d_change,
        volume_change_percent=v_change,
        volume_doubling_days=vdt,
        doubling_note=why,
    )


def track_nodules(
    prior: Sequence[PriorFinding],
    current: Sequence[Finding],
    *,
    prior_to_current: npt.ArrayLike,
    prior_study_uid: str,
    prior_study_date: str | None,
    current_study_date: str | None,
) -> NoduleTracks:
    """Match the prior nodules to the current ones and describe each change.

    Parameters
    ----------
    prior
        Nodules of the prior study (prior patient mm).
    current
        Findings of the current study (current patient mm).
    prior_to_current
        4 x 4 affine, prior patient mm -> current patient mm (``Registration.moving_to_fixed``).
    prior_study_uid, prior_study_date, current_study_date
        The prior study, and both Study Dates (YYYYMMDD) for the interval.

    Returns
    -------
    NoduleTracks
        Current findings with their tracking, and the resolved prior nodules.
    """
    days = interval_days(prior_study_date, current_study_date)
    base = NoduleTracking(
        status=NoduleChange.NEW,
        prior_study_uid=prior_study_uid,
        prior_study_date=prior_study_date,
        interval_days=days,
    )
    mapped = map_points(prior_to_current, [p.center_xyz for p in prior]) if prior else None
    pairs = match_nodules(
        mapped if mapped is not None else np.zeros((0, 3)),
        [p.diameter_mm for p in prior],
        [f.center_xyz for f in current],
        [f.diameter_mm for f in current],
    )
    by_current = {j: i for i, j in pairs}
    out: list[Finding] = []
    for j, finding in enumerate(current):
        i = by_current.get(j)
        if i is None or mapped is None:
            out.append(replace(finding, tracking=base))
            continue
        centre = (float(mapped[i][0]), float(mapped[i][1]), float(mapped[i][2]))
        tracking = _pair_tracking(prior[i], centre, finding, base)
        out.append(
            replace(
                finding,
                tracking=tracking,
                tracking_uid=prior[i].tracking_uid or finding.tracking_uid,
            )
        )
    matched = {i for i, _ in pairs}
    resolved = []
    for i, p in enumerate(prior):
        if i in matched or mapped is None:
            continue
        centre = (float(mapped[i][0]), float(mapped[i][1]), float(mapped[i][2]))
        resolved.append(
            (
                p,
                replace(
                    base,
                    status=NoduleChange.RESOLVED,
                    prior_tracking_id=p.tracking_id,
                    prior_center_xyz=centre,
                    prior_diameter_mm=p.diameter_mm,
                    prior_volume_mm3=p.volume_mm3,
                    diameter_change_percent=-100.0 if p.diameter_mm else None,
                    volume_change_percent=-100.0 if p.volume_mm3 else None,
                    doubling_note="nodule resolved: no doubling time",
                ),
            )
        )
    return NoduleTracks(current=tuple(out), resolved=tuple(resolved))
