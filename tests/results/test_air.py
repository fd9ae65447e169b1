"""IHE AI Results (AIR) points on every object the results fixtures build (SEG, SR, SC, derived)."""

from __future__ import annotations

import pytest

from node.results.uids import algorithm_device_uid
from tests.results.air import assert_air
from tests.results.conftest import Case

CASES = [
    "chest_case",
    "single_case",
    "detection_case",
    "enhanced_case",
    "dx_case",
    "text_case",
    "derived_case",
    "liver_case",
]


@pytest.mark.parametrize("name", CASES)
def test_every_object_carries_the_air_points(name: str, request: pytest.FixtureRequest) -> None:
    case: Case = request.getfixturevalue(name)
    uids = {assert_air(ds) for ds in case.results}
    # one model version: one Device UID, derived from name, version (and weights) when the
    # model declares none, the same in every object and in the SR's Device Observer
    assert uids == {
        algorithm_device_uid(
            model_name=case.prediction.model_name, model_version=case.prediction.model_version
        )
    }


def test_a_declared_device_uid_is_used(chest_case: Case) -> None:
    from dataclasses import replace

    from node.results import build_results
    from tests.results.conftest import WHEN

    declared = "2.25.1234567890"
    pred = replace(
        chest_case.prediction,
        device_uid=declared,
        heatmaps=(),
        label_map=None,
        segments=(),
        findings=(),
    )
    (sr,) = build_results(
        pred, chest_case.volume, chest_case.sources, job_id="declared", content_datetime=WHEN
    )
    assert assert_air(sr) == declared


def test_procedure_reported_is_the_imaging_procedure(chest_case: Case, dx_case: Case) -> None:
    for case, expected in ((chest_case, "25045-6"), (dx_case, "363679005")):
        (sr,) = case.of("SR")
        (proc,) = [
            i for i in sr.ContentSequence if i.ConceptNameCodeSequence[0].CodeValue == "121058"
        ]
        # CT unspecified body region / Imaging procedure: never the algorithm
        assert proc.ConceptCodeSequence[0].CodeValue == expected
