"""Which prior series are chosen from the source's answers (``choose_priors``, no I/O): newest
study first, ``max`` studies, the ``within_days`` window before the current study, never the
current study nor a later one, and per study the qualifying series with the most instances."""

from __future__ import annotations

from datetime import date
from typing import Any

from node.ingest.priors import PriorRequest, choose_priors, dicom_date, study_filters


def _study(uid: str, day: str | None) -> dict[str, Any]:
    out: dict[str, Any] = {"0020000D": {"vr": "UI", "Value": [uid]}}
    if day is not None:
        out["00080020"] = {"vr": "DA", "Value": [day]}
    return out


def _series(uid: str, body_part: str, count: int | None) -> dict[str, Any]:
    out: dict[str, Any] = {
        "0020000E": {"vr": "UI", "Value": [uid]},
        "00180015": {"vr": "CS", "Value": [body_part]},
    }
    if count is not None:
        out["00201209"] = {"vr": "IS", "Value": [count]}
    return out


def _request(max_studies: int, within_days: int | None = 365) -> PriorRequest:
    def is_match(h: dict[str, Any]) -> tuple[bool, str, str | None]:
        part = h["00180015"]["Value"][0]
        return part == "CHEST", f"body part {part}", part

    return PriorRequest(
        study_uid="cur",
        rule="r",
        source="pacs",
        patient_id="P",
        issuer="HOSP",
        study_date=date(2026, 1, 10),
        max_studies=max_studies,
        within_days=within_days,
        deadline=0.0,
        is_match=is_match,
    )


SERIES = {
    "a": [_series("a.1", "CHEST", 10), _series("a.2", "CHEST", 300), _series("a.3", "HEAD", 900)],
    "b": [_series("b.1", "ABDOMEN", 50)],
    "c": [_series("c.1", "CHEST", None)],
    "d": [_series("d.1", "CHEST", 5)],
}
STUDIES = [
    _study("cur", "20260110"),  # the current study itself
    _study("later", "20260301"),  # after the current study
    _study("a", "20251201"),
    _study("b", "20251215"),  # newest, but no chest series
    _study("c", "20250601"),
    _study("d", "20240101"),  # outside 365 days
]


def test_newest_studies_first_best_series_each_max_and_window() -> None:
    asked: list[str] = []

    def series_of(uid: str) -> list[dict[str, Any]]:
        asked.append(uid)
        return SERIES[uid]

    chosen, passed = choose_priors(_request(2), STUDIES, series_of)
    assert [(p.study_uid, p.series_uid, n) for p, n in chosen] == [
        ("a", "a.2", 300),
        ("c", "c.1", 0),
    ]
    assert chosen[0][0].study_date == "20251201" and chosen[0][0].body_part == "CHEST"
    assert asked == ["b", "a", "c"]  # stops at max; never asks the current, later or old study
    assert "series b.1: body part ABDOMEN" in passed
    one, _ = choose_priors(_request(1), STUDIES, lambda uid: SERIES[uid])
    assert [p.series_uid for p, _ in one] == ["a.2"]
    wide, _ = choose_priors(_request(5, within_days=None), STUDIES, lambda uid: SERIES[uid])
    assert [p.study_uid for p, _ in wide] == ["a", "c", "d"]


def test_another_issuers_patient_is_never_a_prior() -> None:
    other = _study("a", "20251201")
    other["00100021"] = {"vr": "LO", "Value": ["ELSEWHERE"]}
    same = _study("c", "20250601")
    same["00100021"] = {"vr": "LO", "Value": ["HOSP"]}
    chosen, _ = choose_priors(_request(2), [other, same], lambda uid: SERIES[uid])
    assert [p.study_uid for p, _ in chosen] == ["c"]


def test_query_keys_and_dates() -> None:
    assert study_filters(_request(1, within_days=10)) == {
        "PatientID": "P",
        "IssuerOfPatientID": "HOSP",
        "StudyDate": "20251231-20260110",
    }
    assert study_filters(_request(1, within_days=None))["StudyDate"] == "-20260110"
    assert dicom_date("20240229") == date(2024, 2, 29)
    assert dicom_date("20230229") is None and dicom_date("") is None and dicom_date(None) is None
