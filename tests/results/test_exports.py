"""The public surface of node.results is pinned."""

from __future__ import annotations

import node.results
from node.types import ResultKind
from tests.results.conftest import Case


def test_all_is_pinned() -> None:
    assert sorted(node.results.__all__) == [
        "ResultFile",
        "build_combined_files",
        "build_combined_results",
        "build_rejection_note",
        "build_result_files",
        "build_results",
        "check_results",
        "load_sources",
        "result_kind",
        "result_object",
        "result_uid",
    ]


def test_result_kind(chest_case: Case, derived_case: Case) -> None:
    kinds = [node.results.result_kind(d) for d in chest_case.results + derived_case.results[:1]]
    assert kinds == [ResultKind.SEG, ResultKind.SR, ResultKind.SC, ResultKind.DERIVED]
