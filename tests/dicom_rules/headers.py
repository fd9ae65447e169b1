"""Build DICOM JSON headers (PS3.18 F.2) for tests from keyword=value pairs."""

from __future__ import annotations

from typing import Any

from pydicom.datadict import dictionary_VR, tag_for_keyword

from dicom_rules import SeriesInput


def element(keyword: str, value: Any) -> tuple[str, dict[str, Any]]:
    """One DICOM JSON element; lists are multi-valued, lists of dicts are sequences."""
    tag = tag_for_keyword(keyword)
    assert tag is not None, keyword
    vr = dictionary_VR(tag)
    if value is None:
        return f"{tag:08X}", {"vr": vr}
    values = value if isinstance(value, list) else [value]
    if vr == "SQ":
        values = [make(**item) for item in values]
    elif vr == "PN":
        values = [{"Alphabetic": v} for v in values]
    return f"{tag:08X}", {"vr": vr, "Value": values}


def make(**attrs: Any) -> dict[str, Any]:
    """A header: make(Modality="CT", ImageType=["ORIGINAL", "PRIMARY", "AXIAL"])."""
    return dict(element(k, v) for k, v in attrs.items())


def series(uid: str = "1.2.3.1", count: int = 1, **attrs: Any) -> SeriesInput:
    """One series input with a header built by ``make``."""
    return SeriesInput(series_uid=uid, header=make(**attrs), instance_count=count)
