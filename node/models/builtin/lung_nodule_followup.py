"""``lung-nodule-detect`` with a prior study: its findings compared with the prior's nodules.

The matching and the measures of change are ``node.models.tracking``'s; here they become the
detector's output (docs/followup.md, "Tracking"): the findings with their ``tracking``, the
resolved prior nodules as findings at their registered place in the current series, and the
sentence the result states about the comparison.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import numpy.typing as npt

from node.models.builtin.lung_nodule_seg import NODULE
from node.models.tracking import track_nodules
from node.types import (
    Code,
    Finding,
    NoduleChange,
    NoduleTracking,
    PriorFinding,
    PriorInput,
    Volume,
)

__all__ = ["compare_with_prior"]

#: The lung a patient point lies in, in a volume (the detector's finding site).
LungSide = Callable[[Volume, tuple[float, float, float]], Code]


def compare_with_prior(
    volume: Volume,
    findings: Sequence[Finding],
    prior: PriorInput,
    *,
    prior_nodules: Sequence[PriorFinding],
    prior_to_current: npt.NDArray[np.float64],
    described: str,
    lung_side: LungSide,
) -> tuple[tuple[Finding, ...], tuple[Finding, ...], str]:
    """Track ``findings`` against the prior's nodules.

    Parameters
    ----------
    volume
        The current series.
    findings
        Its nodules.
    prior
        The prior series (its study UID and date name the comparison).
    prior_nodules
        The prior's nodules in its patient coordinates.
    prior_to_current
        The registration, prior patient mm -> current patient mm.
    described
        Where the prior nodules and the registration came from, for the statement.
    lung_side
        The finding site of a resolved nodule's registered centre.

    Returns
    -------
    tuple
        The findings with ``tracking``, the resolved prior nodules inside the current volume,
        and the statement ("Compared with the prior study of ...: 1 new, ...").
    """
    tracks = track_nodules(
        prior_nodules,
        findings,
        prior_to_current=prior_to_current,
        prior_study_uid=prior.series.study_uid,
        prior_study_date=prior.series.study_date or prior.volume.study_date,
        current_study_date=volume.study_date,
    )
    resolved = [_resolved(volume, p, t, lung_side) for p, t in tracks.resolved]
    inside = tuple(f for f in resolved if f is not None)
    note = _comparison_note(
        tracks.current,
        inside,
        outside=len(resolved) - len(inside),
        prior=prior,
        described=described,
    )
    return tracks.current, inside, note


def _patient_to_voxel(volume: Volume, xyz: tuple[float, float, float]) -> npt.NDArray[np.float64]:
    """(slice, row, column) of a patient point: the inverse of ``voxel_to_patient``."""
    d = np.asarray(volume.direction, dtype=np.float64)
    axes = np.stack([d[2] * volume.spacing[0], d[1] * volume.spacing[1], d[0] * volume.spacing[2]])
    offset = np.asarray(xyz, dtype=np.float64) - np.asarray(volume.origin, dtype=np.float64)
    return np.asarray(np.linalg.solve(axes.T, offset), dtype=np.float64)


def _resolved(
    volume: Volume, prior: PriorFinding, tracking: NoduleTracking, lung_side: LungSide
) -> Finding | None:
    """A resolved prior nodule as a finding at its registered place (None: outside the volume,
    so the current study cannot say it resolved)."""
    assert tracking.prior_center_xyz is not None
    index = _patient_to_voxel(volume, tracking.prior_center_xyz)
    shape = np.asarray(volume.voxels.shape, dtype=np.float64)
    if np.any(index < -0.5) or np.any(index > shape - 0.5):
        return None
    voxel = np.clip(np.rint(index), 0, shape - 1).astype(int)
    return Finding(
        tracking_id=f"resolved-{prior.tracking_id}"[:64],
        finding_type=NODULE,
        center_xyz=tracking.prior_center_xyz,
        center_voxel=(int(voxel[0]), int(voxel[1]), int(voxel[2])),
        score=0.0,
        finding_site=lung_side(volume, tracking.prior_center_xyz),
        tracking_uid=prior.tracking_uid,
        tracking=tracking,
    )


def _comparison_note(
    current: Sequence[Finding],
    resolved: Sequence[Finding],
    *,
    outside: int,
    prior: PriorInput,
    described: str,
) -> str:
    """One sentence: which prior, how it was compared, and the counts per change."""
    counts = {c: 0 for c in NoduleChange}
    for f in (*current, *resolved):
        if f.tracking is not None:
            counts[f.tracking.status] += 1
    date = prior.series.study_date or prior.volume.study_date
    when = f"{date[:4]}-{date[4:6]}-{date[6:8]}" if date and len(date) >= 8 else "unknown date"
    parts = ", ".join(f"{counts[c]} {c.value}" for c in NoduleChange)
    text = f"Compared with the prior study of {when} ({described}): {parts}"
    if outside:
        text += f"; {outside} prior nodule(s) outside the current series, not assessed"
    return text + "."
