"""report-text: structured findings -> deterministic plain-language impression."""

from __future__ import annotations

import itertools

from node.models.builtin.lung_nodule_detect import LEFT_LUNG, RIGHT_LUNG
from node.models.builtin.lung_nodule_seg import NODULE
from node.models.builtin.report_text import DEMO_DISCLAIMER, render_impression
from node.types import Finding


def _finding(tid: str, diameter: float, prob: float | None, left: bool) -> Finding:
    return Finding(
        tracking_id=tid,
        finding_type=NODULE,
        center_xyz=(10.0, 20.0, 30.0),
        center_voxel=(1, 2, 3),
        score=0.9,
        diameter_mm=diameter,
        volume_mm3=100.0,
        malignancy_probability=prob,
        finding_site=LEFT_LUNG if left else RIGHT_LUNG,
    )


FINDINGS = [
    _finding("nodule-1", 6.2, 0.08, left=False),
    _finding("nodule-2", 18.6, 0.93, left=True),
    _finding("nodule-3", 9.4, 0.5, left=False),
]


def test_report_text_for_a_given_finding_set() -> None:
    assert render_impression(FINDINGS) == (
        "IMPRESSION: 3 lung nodules detected.\n"
        "1. 19 mm nodule in the left lung with suspicious features "
        "(estimated malignancy probability 93%).\n"
        "2. 9 mm nodule in the right lung with indeterminate features "
        "(estimated malignancy probability 50%).\n"
        "3. 6 mm nodule in the right lung with features favouring a benign nodule "
        "(estimated malignancy probability 8%).\n"
        "Suspicious nodule present: clinical correlation and follow-up advised.\n"
        f"{DEMO_DISCLAIMER}"
    )


def test_report_text_is_independent_of_finding_order() -> None:
    texts = {render_impression(list(p)) for p in itertools.permutations(FINDINGS)}
    assert len(texts) == 1


def test_report_text_without_findings_and_without_probabilities() -> None:
    assert render_impression([]) == f"IMPRESSION: No lung nodule detected.\n{DEMO_DISCLAIMER}"
    text = render_impression([_finding("nodule-1", 7.0, None, left=True)])
    assert "1 lung nodule detected." in text
    assert "not characterised" in text
    assert "Suspicious" not in text
    assert text.endswith(DEMO_DISCLAIMER) and "synthetic" in text


def test_report_text_limits_the_list() -> None:
    many = [_finding(f"nodule-{i}", 5.0 + i, 0.1, left=i % 2 == 0) for i in range(8)]
    text = render_impression(many, max_listed=5)
    assert "IMPRESSION: 8 lung nodules detected." in text
    assert "3 further nodules not listed." in text
    assert text.count(" mm nodule in the ") == 5
