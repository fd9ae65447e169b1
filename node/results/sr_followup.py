"""The follow-up content of ainode's TID 1500 SR: a finding compared with a prior study.

Docs: followup.md "Tracking", "What the results contain".  A tracked finding (``Finding.tracking``)
keeps the Tracking UID of the prior's SR (``Finding.tracking_uid``) and gains: the diameter
change beside the Long Axis and the volume change beside the Volume (SCT 442714003 "Difference in
size", %, CID 6133), the volume doubling time (NUM, days), the change as a Qualitative Difference
(DCM 111049; CID 6134/6002/3770 values), and one more volumetric group (TID 1411) with the
prior's diameter and volume under a Time Point context (TID 1502) naming the prior study.  A
resolved prior nodule (``Prediction.resolved``) has that group alone, at its registered place.
"""

from __future__ import annotations

import highdicom as hd
import numpy as np
from pydicom.sr.codedict import codes
from pydicom.sr.coding import Code as PdCode

from node.errors import ResultError
from node.results.identity import ResultContext
from node.types import Code, Finding, NoduleChange, NoduleTracking

__all__ = ["change_evaluations", "change_measurements", "prior_group", "tracking_identifier"]

#: Temporal change of a tracked finding: concept DCM 111049 "Qualitative Difference", values from
#: pydicom's CID tables: CID 6134 Chest Qualitative Temporal Difference Type (increase, decrease,
#: no significant change), CID 6002 (New finding) and CID 3770 Problem Status (Problem resolved).
_QUALITATIVE_DIFFERENCE = codes.DCM.QualitativeDifference
_CHANGE_CODES = {
    NoduleChange.NEW: codes.cid6002.NewFinding,
    NoduleChange.GROWING: codes.cid6134.IncreaseInSize,
    NoduleChange.SHRINKING: codes.cid6134.DecreaseInSize,
    NoduleChange.STABLE: codes.cid6134.NoSignificantChangesInTheFinding,
    NoduleChange.RESOLVED: codes.cid3770.ProblemResolved,
}
#: Change in per cent: SCT 442714003 "Difference in size" (CID 6133 Chest Quantitative Temporal
#: Difference Type), beside the measurement it compares (Long Axis or Volume).
_DIFFERENCE_IN_SIZE = codes.cid6133.FindingOfDifferenceInSize
#: No DICOM, SNOMED CT or LOINC concept for a volume doubling time is in pydicom's tables
#: (pydicom.sr.codedict); a private coding scheme names it (PS3.3 8.2: designators starting
#: "99" are private).
_VOLUME_DOUBLING_TIME = PdCode("VDT", "99AINODE", "Volume doubling time")


def tracking_identifier(finding: Finding, ctx: ResultContext) -> hd.sr.TrackingIdentifier:
    """The finding's Tracking Identifier and UID: the prior study's UID when it was carried
    forward, else one derived from the job (the same in the SEG segment)."""
    return hd.sr.TrackingIdentifier(
        uid=finding.tracking_uid or ctx.tracking_uid(finding.tracking_id),
        identifier=finding.tracking_id[:64],
    )


def change_measurements(
    tracking: NoduleTracking | None, what: str, algorithm: hd.sr.AlgorithmIdentification
) -> list[hd.sr.Measurement]:
    """The ``what`` ("diameter" or "volume") change since the prior in per cent, and beside the
    volume the volume doubling time when it is defined (``node.models.tracking``)."""
    if tracking is None or tracking.status in (NoduleChange.NEW, NoduleChange.RESOLVED):
        return []
    out = []
    percent = (
        tracking.diameter_change_percent if what == "diameter" else tracking.volume_change_percent
    )
    if percent is not None:
        out.append(
            hd.sr.Measurement(
                name=_DIFFERENCE_IN_SIZE,
                value=round(float(percent), 1),
                unit=codes.UCUM.Percent,
                algorithm_id=algorithm,
            )
        )
    if what == "volume" and tracking.volume_doubling_days is not None:
        out.append(
            hd.sr.Measurement(
                name=_VOLUME_DOUBLING_TIME,
                value=round(float(tracking.volume_doubling_days), 1),
                unit=codes.UCUM.Day,
                algorithm_id=algorithm,
            )
        )
    return out


def change_evaluations(tracking: NoduleTracking | None) -> list[hd.sr.QualitativeEvaluation]:
    if tracking is None:
        return []
    return [hd.sr.QualitativeEvaluation(_QUALITATIVE_DIFFERENCE, _CHANGE_CODES[tracking.status])]


def prior_group(
    finding: Finding,
    *,
    frame_uid: str,
    series_uid: str,
    ctx: ResultContext,
    algorithm: hd.sr.AlgorithmIdentification,
) -> hd.sr.VolumetricROIMeasurementsAndQualitativeEvaluations:
    """The prior study's measurements of a tracked finding (TID 1411 under a TID 1502 Time
    Point context), at the prior centre mapped into the current series (``frame_uid``,
    ``series_uid``); a resolved nodule's status.

    Raises
    ------
    ResultError
        The finding has no registered prior centre.
    """
    tracking = finding.tracking
    if tracking is None or tracking.prior_center_xyz is None:
        raise ResultError(f"finding {finding.tracking_id!r} has no registered prior centre")
    measurements = []
    if tracking.prior_diameter_mm is not None:
        measurements.append(
            hd.sr.Measurement(
                name=codes.SCT.LongAxis,
                value=round(float(tracking.prior_diameter_mm), 2),
                unit=codes.UCUM.Millimeter,
                algorithm_id=algorithm,
            )
        )
    if tracking.prior_volume_mm3 is not None:
        measurements.append(
            hd.sr.Measurement(
                name=codes.SCT.Volume,
                value=round(float(tracking.prior_volume_mm3), 2),
                unit=codes.UCUM.CubicMillimeter,
                algorithm_id=algorithm,
            )
        )
    date = tracking.prior_study_date or ""
    when = f" of {date[:4]}-{date[4:6]}-{date[6:8]}" if len(date) >= 8 else ""
    is_resolved = tracking.status is NoduleChange.RESOLVED
    return hd.sr.VolumetricROIMeasurementsAndQualitativeEvaluations(
        tracking_identifier=tracking_identifier(finding, ctx),
        referenced_volume_surface=hd.sr.VolumeSurface(
            graphic_type=hd.sr.GraphicTypeValues3D.POINT,
            graphic_data=np.array([tracking.prior_center_xyz], dtype=np.float64),
            frame_of_reference_uid=frame_uid,
            source_series=hd.sr.SourceSeriesForSegmentation(series_uid),
        ),
        time_point_context=hd.sr.TimePointContext(
            time_point=f"prior study{when}",
            subject_time_point_identifier=tracking.prior_study_uid,
        ),
        finding_type=_cc(finding.finding_type),
        algorithm_id=algorithm,
        finding_sites=[hd.sr.FindingSite(_cc(finding.finding_site))]
        if finding.finding_site
        else None,
        measurements=measurements or None,
        qualitative_evaluations=change_evaluations(tracking) if is_resolved else None,
    )


def _cc(code: Code) -> hd.sr.CodedConcept:
    return hd.sr.CodedConcept(code.value, code.scheme, code.meaning)
