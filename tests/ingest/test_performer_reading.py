"""Reading workitems as servers return them (issue 23 section 1, ``node.ingest.ups_datasets``)."""

from __future__ import annotations

from typing import Any

from node.ingest.ups_datasets import input_studies, output_information


def _ui(value: str) -> dict[str, Any]:
    return {"vr": "UI", "Value": [value]}


def _sq(*items: dict[str, Any]) -> dict[str, Any]:
    return {"vr": "SQ", "Value": list(items)}


def test_input_studies_with_and_without_a_retrieve_url() -> None:
    wado = _sq({"00081190": {"vr": "UR", "Value": ["http://m/dicom-web/studies/1.1"]}})
    ds = {
        "00404021": _sq(
            {"0020000D": _ui("1.1"), "0020000E": _ui("1.1.1")},
            {"0020000D": _ui("1.1"), "0020000E": _ui("1.1.2"), "0040E025": wado},
            {"0020000D": _ui("1.2")},
            {"0020000E": _ui("9.9")},  # no study: nothing to fetch
        )
    }
    assert input_studies(ds) == [("1.1", "http://m/dicom-web/studies/1.1"), ("1.2", None)]
    assert input_studies({}) == []
    assert input_studies({"00404021": {"vr": "SQ"}}) == []


def test_output_information_nested_or_at_the_top_level() -> None:
    a = {"0020000E": _ui("2.1")}
    b = {"0020000E": _ui("2.2")}
    standard = {"00741216": _sq({"00404033": _sq(a)})}
    flat = {"00404033": _sq(b), "00741216": _sq({"00404050": {"vr": "DT"}})}
    assert output_information(standard) == [a]
    assert output_information(flat) == [b]
    assert output_information({**flat, **standard}) == [b, a]
    assert output_information({}) == []
