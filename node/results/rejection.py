"""IOCM rejection note: a Key Object Selection that withdraws results (IHE RAD IOCM, PS3.3 A.35.4).

The document title is "Rejected for Quality Reasons" (DCM 113001, CID 7011, a member of the KOS
titles of CID 7010); it references every rejected instance, lists them as evidence, and gives the
reason as the Key Object Description. Archives that implement IOCM hide or delete the referenced
instances when they receive it.  Its UIDs derive from ``note_id`` (PS3.5 B.2), so a retried
rejection is byte-identical and delivered once.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Sequence

import highdicom as hd
from pydicom.dataset import Dataset
from pydicom.sr.codedict import codes
from pydicom.valuerep import DA, TM

from node import __version__
from node.errors import ResultError
from node.results.identity import MANUFACTURER
from node.results.modules import drop_reference_purposes
from node.results.sources import quiet_highdicom
from node.results.uids import algorithm_device_uid, result_uid
from node.types import Code

__all__ = ["REJECTED_FOR_QUALITY_REASONS", "build_rejection_note"]

log = logging.getLogger(__name__)

#: CID 7011 "Rejected for Quality Reasons" (IHE IOCM rejection note title).
REJECTED_FOR_QUALITY_REASONS = Code("113001", "DCM", "Rejected for Quality Reasons")


def build_rejection_note(
    rejected: Sequence[Dataset],
    *,
    note_id: str,
    reason: str,
    content_datetime: dt.datetime,
    series_number: int = 9999,
) -> Dataset:
    """A rejection note for ``rejected`` (result objects of one study).

    Parameters
    ----------
    rejected
        The instances to withdraw (their headers suffice; all of one study).
    note_id
        Identifier of the rejection (e.g. the audit record id); determines every UID.
    reason
        Why they are withdrawn (Key Object Description, at most 1024 characters).
    content_datetime
        Frozen content date-time of the note.
    series_number
        Series Number of the note's series.

    Raises
    ------
    ResultError
        Nothing to reject, or the instances span several studies.
    """
    if not rejected:
        raise ResultError("a rejection note needs at least one instance to reject")
    studies = {str(ds.StudyInstanceUID) for ds in rejected}
    if len(studies) != 1:
        raise ResultError(f"a rejection note covers one study, got {len(studies)}")
    title = REJECTED_FOR_QUALITY_REASONS
    observer = hd.sr.ObserverContext(
        observer_type=codes.DCM.Device,
        observer_identifying_attributes=hd.sr.DeviceObserverIdentifyingAttributes(
            uid=algorithm_device_uid(model_name=MANUFACTURER, model_version=__version__),
            name=MANUFACTURER,
            manufacturer_name=MANUFACTURER,
        ),
    )

    def uid(role: str) -> str:
        return result_uid(job_id=note_id, model_version="rejection", index=0, role=role)

    with quiet_highdicom():
        note = hd.ko.KeyObjectSelectionDocument(
            evidence=list(rejected),
            content=hd.ko.KeyObjectSelection(
                document_title=hd.sr.CodedConcept(title.value, title.scheme, title.meaning),
                referenced_objects=list(rejected),
                observer_device_context=observer,
                description=reason[:1024] or "rejected",
            ),
            series_instance_uid=uid("series"),
            series_number=series_number,
            sop_instance_uid=uid("sop"),
            instance_number=1,
            manufacturer=MANUFACTURER,
        )
    when = content_datetime.replace(microsecond=0)
    for prefix in ("Content", "Series", "InstanceCreation"):
        setattr(note, f"{prefix}Date", DA(when.date()))
        setattr(note, f"{prefix}Time", TM(when.time()))
    note.SeriesDescription = "Rejected AI results"
    drop_reference_purposes(note)
    for item in note.get("ContributingEquipmentSequence", []):
        if "ContributionDateTime" in item:
            item.ContributionDateTime = when.strftime("%Y%m%d%H%M%S")
    log.info(
        "results.rejection_built",
        extra={"sop_uid": str(note.SOPInstanceUID), "rejected": len(rejected)},
    )
    return note
