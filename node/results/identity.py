"""Who made a result and when: series naming, equipment, frozen dates, deterministic UIDs.

Every result object carries the same identification (PS3.3 C.7.5.1 General Equipment):
Manufacturer ``ainode``, Manufacturer's Model Name = the model name, Software Versions = ainode and
the model version; a new series whose description names the model, its version and, for demo
models, ``DEMO``.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from pydicom.dataset import Dataset
from pydicom.sequence import Sequence as DicomSequence
from pydicom.valuerep import DA, DT, TM

from node import __version__
from node.results.uids import algorithm_device_uid, result_uid
from node.types import Code, Prediction, Volume

__all__ = [
    "DEMO_STATEMENT",
    "MANUFACTURER",
    "PROCESSING_ALGORITHM",
    "ResultContext",
    "interpolation_note",
]

MANUFACTURER = "ainode"
#: Plain-ASCII statement written into headers of demo results (burned-in banners use an em dash).
DEMO_STATEMENT = "DEMO MODEL - NOT FOR DIAGNOSIS"

#: Body Part Examined defined terms (PS3.16 Annex L) of unpaired structures: Laterality
#: (PS3.3 C.7.3.1, Type 2C) must then be absent.
_UNPAIRED = frozenset(
    {
        "ABDOMEN",
        "ABDOMENPELVIS",
        "BRAIN",
        "CHEST",
        "CHESTABDOMEN",
        "CHESTABDPELVIS",
        "COCCYX",
        "CSPINE",
        "HEAD",
        "HEADNECK",
        "HEART",
        "LSPINE",
        "NECK",
        "PELVIS",
        "SKULL",
        "SPINE",
        "SSPINE",
        "TSPINE",
        "WHOLEBODY",
        "AORTA",
        "BLADDER",
        "ESOPHAGUS",
        "LIVER",
        "PANCREAS",
        "PROSTATE",
        "SPLEEN",
        "STOMACH",
        "TRACHEA",
        "UTERUS",
    }
)

#: Purpose of Reference of the algorithm's Contributing Equipment item (IHE RAD TF Supplement
#: "AI Results (AIR)", Rev. 1.1 Trial Implementation, 6.5.3.x: Evidence Creator SOP Common
#: requirements).  The supplement still publishes the placeholder code value ``Newcode1`` in the
#: 99IHE scheme; the same triplet is what the maintained MONAI Deploy App SDK
#: (monai/deploy/operators/dicom_seg_writer_operator.py) and MONAI Label
#: (monailabel/datastore/utils/convert.py) write.  Change it here when IHE assigns the final code.
PROCESSING_ALGORITHM = Code("Newcode1", "99IHE", "Processing Algorithm")

_KIND_LABEL = {"seg": "SEG", "sr": "SR", "sc": "SC", "derived": "DERIVED", "reg": "REG"}


@dataclass(frozen=True, slots=True)
class ResultContext:
    """Identity shared by every object of one job's results."""

    job_id: str
    model_name: str
    model_version: str
    is_demo: bool
    content_datetime: dt.datetime
    series_number_base: int = 9000
    device_uid: str = ""
    #: what else the UIDs depend on: a combined set's models and their versions, so a new
    #: version of any of them gives new UIDs (empty for one model's results)
    uid_scope: str = ""

    @classmethod
    def from_prediction(
        cls,
        prediction: Prediction,
        *,
        job_id: str,
        content_datetime: dt.datetime,
        series_number_base: int = 9000,
    ) -> ResultContext:
        """Context of ``prediction`` produced by job ``job_id``."""
        return cls(
            job_id=job_id,
            model_name=prediction.model_name,
            model_version=prediction.model_version,
            is_demo=prediction.is_demo,
            content_datetime=content_datetime,
            series_number_base=series_number_base,
            device_uid=prediction.device_uid
            or algorithm_device_uid(
                model_name=prediction.model_name, model_version=prediction.model_version
            ),
        )

    def uid(self, index: int, role: str) -> str:
        """Deterministic UID of ``role`` inside result object ``index``."""
        return result_uid(
            job_id=self.job_id + self.uid_scope,
            model_version=self.model_version,
            index=index,
            role=role,
        )

    def tracking_uid(self, tracking_id: str) -> str:
        """Tracking UID of ``tracking_id``: the same in the SEG segment and the SR findings."""
        return result_uid(
            job_id=self.job_id + self.uid_scope,
            model_version=self.model_version,
            index=-1,
            role=f"tracking/{tracking_id}",
        )

    def series_number(self, index: int) -> int:
        """Series Number (PS3.3 C.7.3.1, IS) of result series ``index`` of this job.

        ``series_number_base + 1 + index``: high, to sort after the source series; the job
        dispatcher gives each job of a study its own base (``node.routing.plan``), so the
        SEG, SR and SC series of different jobs do not share a number.
        """
        return self.series_number_base + 1 + index

    def series_description(self, kind: str) -> str:
        """Series Description naming model, version, object kind and demo status (LO, ≤64)."""
        text = f"{self.model_name} {self.model_version} {_KIND_LABEL.get(kind, kind.upper())}"
        if self.is_demo:
            text += " DEMO"
        return text[:64]

    @property
    def software_versions(self) -> list[str]:
        """Software Versions: ainode and the model (PS3.3 C.7.5.1.1.3: one value per component)."""
        return [f"ainode {__version__}", f"{self.model_name} {self.model_version}"[:64]]

    @property
    def content_date(self) -> DA:
        """Frozen Content Date."""
        return DA(self.content_datetime.date())

    @property
    def content_time(self) -> TM:
        """Frozen Content Time (whole seconds, so retries are byte-identical)."""
        return TM(self.content_datetime.time().replace(microsecond=0))

    def finish(self, ds: Dataset, source: Dataset, *, kind: str, image: bool) -> None:
        """Set the attributes every result shares after highdicom (or pydicom) built ``ds``.

        Parameters
        ----------
        ds
            The result object, modified in place.
        source
            Header of the (first) source instance.
        kind
            ``"seg"``, ``"sr"``, ``"sc"`` or ``"derived"``.
        image
            True when ``ds`` has the General Image module (Image Comments allowed).
        """
        ds.SeriesDescription = self.series_description(kind)
        ds.Manufacturer = MANUFACTURER
        ds.ManufacturerModelName = self.model_name[:64]
        ds.SoftwareVersions = self.software_versions
        # Frozen dates: highdicom stamps "now"; a retried job must produce identical bytes.
        ds.InstanceCreationDate = self.content_date
        ds.InstanceCreationTime = self.content_time
        if "ContentDate" in ds or image or kind == "sr":
            ds.ContentDate = self.content_date
            ds.ContentTime = self.content_time
        if "SeriesDate" in ds:
            ds.SeriesDate = self.content_date
            ds.SeriesTime = self.content_time
        for item in ds.get("ContributingEquipmentSequence", []):
            if "ContributionDateTime" in item:  # highdicom records itself with "now"
                item.ContributionDateTime = DT(self.content_datetime.replace(microsecond=0))
        self.add_algorithm_equipment(ds)
        if "DateOfSecondaryCapture" in ds:
            ds.DateOfSecondaryCapture = self.content_date
            ds.TimeOfSecondaryCapture = self.content_time
        # highdicom does not copy Body Part Examined (PS3.3 C.7.3.1, Type 3); SR has no such
        # attribute in its IOD (dciodvfy warns).
        if source.get("BodyPartExamined") and kind != "sr":
            ds.BodyPartExamined = source.BodyPartExamined
        elif "BodyPartExamined" in ds:
            del ds.BodyPartExamined
        if kind == "seg":
            # dciodvfy evaluates the SEG's Type 2C condition without a body part: a value only.
            if source.get("Laterality"):
                ds.Laterality = source.Laterality
            elif "Laterality" in ds:
                del ds.Laterality
        elif kind != "sr":
            _set_laterality(ds, source)
        if image:
            comment = f"Produced by {self.model_name} {self.model_version} (ainode)"
            if self.is_demo:
                comment = f"{DEMO_STATEMENT}. {comment}"
            ds.ImageComments = comment

    def algorithm_equipment(self) -> Dataset:
        """Contributing Equipment item of the model (IHE AIR; PS3.3 C.12.1 Table C.12-1)."""
        code = Dataset()
        code.CodeValue = PROCESSING_ALGORITHM.value
        code.CodingSchemeDesignator = PROCESSING_ALGORITHM.scheme
        code.CodeMeaning = PROCESSING_ALGORITHM.meaning
        item = Dataset()
        item.Manufacturer = MANUFACTURER
        item.ManufacturerModelName = self.model_name[:64]
        item.SoftwareVersions = self.software_versions
        item.DeviceUID = self.device_uid
        item.ContributionDateTime = DT(self.content_datetime.replace(microsecond=0))
        item.ContributionDescription = (
            f"AI algorithm {self.model_name} {self.model_version} that produced this result"
        )[:1024]
        item.PurposeOfReferenceCodeSequence = DicomSequence([code])
        return item

    def add_algorithm_equipment(self, ds: Dataset) -> None:
        """Append the model's Contributing Equipment item to ``ds`` (once per Device UID)."""
        items = list(ds.get("ContributingEquipmentSequence", []))
        if any(str(i.get("DeviceUID", "")) == self.device_uid for i in items):
            return
        ds.ContributingEquipmentSequence = DicomSequence([*items, self.algorithm_equipment()])


def _set_laterality(ds: Dataset, source: Dataset) -> None:
    """Laterality (PS3.3 C.7.3.1, Type 2C): the source's value when it has one (even empty);
    else absent for an unpaired body part and empty ("unknown") otherwise. Never invented."""
    if "Laterality" in source:
        ds.Laterality = source.Laterality
        return
    body_part = str(source.get("BodyPartExamined") or "").upper().replace(" ", "")
    if body_part in _UNPAIRED:
        if "Laterality" in ds:
            del ds.Laterality
    else:
        ds.Laterality = ""


def interpolation_note(volume: Volume) -> str | None:
    """The sentence results carry when the model read interpolated slices, else None.

    A small gap in the source series is filled by interpolation before the model runs
    (``node.imaging.split``); the radiologist must know which slices hold no acquired image.
    SEG writes it as Derivation Description (General Reference Module, PS3.3 C.12.4), the SR as
    a Comment in its Qualitative Evaluations; job outputs list the indices.
    """
    filled = volume.filled_slices
    if not filled:
        return None
    shown = ", ".join(str(k + 1) for k in filled[:20]) + (" ..." if len(filled) > 20 else "")
    return (
        f"{len(filled)} of {len(volume.sources)} slices were interpolated by ainode to fill a "
        f"gap in the source series (slice {shown}, counted from the first slice of the volume); "
        "no image was acquired there and results on them rest on interpolated data"
    )
