"""TEST-ONLY: what the IHE AI Results (AIR) profile asks of an Evidence Creator, read back from
written objects (used by the results, e2e and demo tests).

Checked per object: Contributing Equipment item with Purpose of Reference (Newcode1, 99IHE,
"Processing Algorithm"), Manufacturer, Manufacturer's Model Name, Software Versions and Device
UID. SR: TID 1004 Device Observer UID = that Device UID, TID 4019 Algorithm Name and Version in
every Measurement Group, Procedure Reported an imaging procedure. SEG: Segment Algorithm Type and
Algorithm Identification with a family code from CID 7162.
"""

from __future__ import annotations

from collections.abc import Iterator

from pydicom.dataset import Dataset
from pydicom.sr.codedict import codes
from pydicom.valuerep import validate_value

_PROCESSING_ALGORITHM = ("Newcode1", "99IHE", "Processing Algorithm")
_CID7162 = {
    (c.value, c.scheme_designator) for c in (getattr(codes.cid7162, k) for k in codes.cid7162.dir())
}
#: Imaging procedures (CID 100 and its generic fallback); never an algorithm.
IMAGING_PROCEDURES = {
    (getattr(codes.cid100, k).value, getattr(codes.cid100, k).scheme_designator)
    for k in codes.cid100.dir()
}


def _concept(item: Dataset) -> tuple[str, str]:
    code = item.ConceptNameCodeSequence[0]
    return str(code.CodeValue), str(code.CodingSchemeDesignator)


def _walk(items: list[Dataset]) -> Iterator[Dataset]:
    for item in items:
        yield item
        yield from _walk(list(item.get("ContentSequence", [])))


def algorithm_device_uids(ds: Dataset) -> list[str]:
    """Device UIDs of the object's Processing Algorithm equipment items (AssertionError if none;
    combined results have one per contributing model)."""
    items = [
        i
        for i in ds.get("ContributingEquipmentSequence", [])
        if tuple(
            str(i.PurposeOfReferenceCodeSequence[0].get(k, ""))
            for k in ("CodeValue", "CodingSchemeDesignator", "CodeMeaning")
        )
        == _PROCESSING_ALGORITHM
    ]
    assert len(items) >= 1, f"{ds.Modality}: no Processing Algorithm contributing equipment"
    for item in items:
        for keyword in ("Manufacturer", "ManufacturerModelName", "SoftwareVersions", "DeviceUID"):
            assert item.get(keyword), f"{ds.Modality}: equipment item lacks {keyword}"
        validate_value("UI", str(item.DeviceUID), 2)  # RAISE
    return [str(item.DeviceUID) for item in items]


def algorithm_device_uid(ds: Dataset) -> str:
    """Device UID of the object's (first) Processing Algorithm equipment item."""
    return algorithm_device_uids(ds)[0]


def assert_air(ds: Dataset, *, source_procedure: tuple[str, str] | None = None) -> str:
    """Assert every AIR point for ``ds``; return its algorithm Device UID."""
    device_uids = algorithm_device_uids(ds)
    device_uid = device_uids[0]
    if ds.Modality == "SR":
        content = list(ds.ContentSequence)
        observer = [i for i in content if _concept(i) == ("121012", "DCM")]
        assert observer and str(observer[0].UID) in device_uids, "TID 1004 Device Observer UID"
        types = [i for i in content if _concept(i) == ("121005", "DCM")]
        assert types and types[0].ConceptCodeSequence[0].CodeValue == "121007", "observer type"
        procedure = [i for i in content if _concept(i) == ("121058", "DCM")]
        assert procedure, "Procedure Reported missing"
        code = procedure[0].ConceptCodeSequence[0]
        reported = (str(code.CodeValue), str(code.CodingSchemeDesignator))
        assert reported in IMAGING_PROCEDURES or reported == source_procedure, reported
        groups = [i for i in _walk(content) if _concept(i) == ("125007", "DCM")]
        assert groups, "no Measurement Group"
        for group in groups:
            names = {_concept(i): i for i in group.ContentSequence}
            assert ("111001", "DCM") in names, "TID 4019 Algorithm Name missing in a group"
            assert ("111003", "DCM") in names, "TID 4019 Algorithm Version missing in a group"
    if ds.Modality == "SEG":
        for segment in ds.SegmentSequence:
            assert segment.SegmentAlgorithmType in ("AUTOMATIC", "SEMIAUTOMATIC")
            assert segment.get("SegmentAlgorithmName")
            (alg,) = segment.SegmentationAlgorithmIdentificationSequence
            family = alg.AlgorithmFamilyCodeSequence[0]
            assert (str(family.CodeValue), str(family.CodingSchemeDesignator)) in _CID7162
            assert alg.AlgorithmName and alg.AlgorithmVersion
    return device_uid
