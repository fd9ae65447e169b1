"""The DICOM JSON a UPS performer reads and writes (PS3.18 F.2, PS3.4 Table CC.2.5-3).

Input Information Sequence (0040,4021) and Output Information Sequence (0040,4033) items use the
Referenced Instances and Access Macro (PS3.3 Table 10-3b): Study and Series Instance UID,
Referenced SOP Sequence, and where to retrieve them (DICOM Retrieval Sequence with a Retrieve AE
Title, WADO-RS Retrieval Sequence with a Retrieve URL).
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

__all__ = [
    "ResultRef",
    "attr",
    "code_item",
    "dicom_datetime",
    "first_value",
    "input_locations",
    "input_studies",
    "items",
    "output_information",
    "output_items",
]


@dataclass(frozen=True, slots=True)
class ResultRef:
    """One delivered object and where it can be retrieved (a DICOMweb URL or an AE title)."""

    study_uid: str
    series_uid: str
    sop_class_uid: str
    sop_uid: str
    retrieve_url: str | None = None
    retrieve_ae_title: str | None = None


def first_value(ds: Mapping[str, Any], tag: str) -> Any:
    """The first value of attribute ``tag`` (8 hex digits) of a DICOM JSON dataset, or None."""
    values = (ds.get(tag) or {}).get("Value") or []
    return values[0] if values else None


def items(ds: Mapping[str, Any], tag: str) -> list[dict[str, Any]]:
    """The items of sequence ``tag`` of a DICOM JSON dataset (none when absent or empty)."""
    return [i for i in (ds.get(tag) or {}).get("Value") or [] if isinstance(i, dict)]


def input_studies(ds: Mapping[str, Any]) -> list[tuple[str, str | None]]:
    """(Study Instance UID, Retrieve URL or None) of each input study, in order, once each.

    The Retrieve URL is read from the item's WADO-RS Retrieval Sequence (0040,E025) or the
    item itself (0008,1190) (Referenced Instances and Access Macro, PS3.3 Table 10-3b).
    """
    out: dict[str, str | None] = {}
    for item in items(ds, "00404021"):
        study = first_value(item, "0020000D")
        if not isinstance(study, str) or not study:
            continue
        url = first_value(item, "00081190")
        for wado in items(item, "0040E025"):
            url = url or first_value(wado, "00081190")
        if study not in out or out[study] is None:
            out[study] = url if isinstance(url, str) and url else None
    return list(out.items())


def input_locations(ds: Mapping[str, Any]) -> list[tuple[str, str | None, str | None]]:
    """(Study Instance UID, Retrieve URL, Retrieve AE Title) of each input study, in order,
    once each: ``input_studies`` plus the Retrieve AE Title (0008,0054) of the item's DICOM
    Retrieval Sequence (0040,E021) or of the item itself (PS3.3 Table 10-3b)."""
    aets: dict[str, str] = {}
    for item in items(ds, "00404021"):
        study = first_value(item, "0020000D")
        if not isinstance(study, str) or study in aets:
            continue
        aet = first_value(item, "00080054")
        for dicom in items(item, "0040E021"):
            aet = aet or first_value(dicom, "00080054")
        if isinstance(aet, str) and aet.strip():
            aets[study] = aet.strip()
    return [(study, url, aets.get(study)) for study, url in input_studies(ds)]


def output_information(ds: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The Output Information Sequence (0040,4033) items of a workitem as a server returns it:
    inside the Unified Procedure Step Performed Procedure Sequence (0074,1216), as PS3.4 Table
    CC.2.5-3 has it, or at the top level, where some servers put it."""
    found = items(ds, "00404033")
    for performed in items(ds, "00741216"):
        found.extend(items(performed, "00404033"))
    return found


def attr(vr: str, *values: Any) -> dict[str, Any]:
    """A DICOM JSON attribute (PS3.18 F.2.2); without values, an empty (type 2) one."""
    return {"vr": vr, "Value": list(values)} if values else {"vr": vr}


def dicom_datetime(now: float) -> str:
    """``now`` (epoch seconds) as a DT value in UTC with its offset."""
    return time.strftime("%Y%m%d%H%M%S", time.gmtime(now)) + "+0000"


def code_item(value: str, scheme: str, meaning: str) -> dict[str, Any]:
    """A Code Sequence item (PS3.3 Table 8.8-1): Code Value, Coding Scheme Designator, Meaning."""
    return {
        "00080100": attr("SH", value),
        "00080102": attr("SH", scheme),
        "00080104": attr("LO", meaning),
    }


def output_items(results: Iterable[ResultRef]) -> list[dict[str, Any]]:
    """Output Information Sequence items: one per series and retrieve location."""
    groups: dict[tuple[str, str, str | None, str | None], list[ResultRef]] = {}
    for r in results:
        key = (r.study_uid, r.series_uid, r.retrieve_url, r.retrieve_ae_title)
        groups.setdefault(key, []).append(r)
    items = []
    for (study, series, url, aet), refs in groups.items():
        item: dict[str, Any] = {
            "0040E020": attr("CS", "DICOM"),
            "0020000D": attr("UI", study),
            "0020000E": attr("UI", series),
            "00081199": attr(
                "SQ",
                *(
                    {"00081150": attr("UI", r.sop_class_uid), "00081155": attr("UI", r.sop_uid)}
                    for r in refs
                ),
            ),
        }
        if aet:
            item["0040E021"] = attr("SQ", {"00080054": attr("AE", aet)})
        if url:
            item["0040E025"] = attr("SQ", {"00081190": attr("UR", url)})
        items.append(item)
    return items
