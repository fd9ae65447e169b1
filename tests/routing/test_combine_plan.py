"""Combining a rule's models (issue 18 §1): the jobs routing plans and when the queue runs them."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import dicom_rules
from node.jobs import JobStore
from node.jobs.store import COMBINE_MODEL
from node.routing.plan import plan_jobs
from node.types import Instance, JobState
from tests.dicom_rules.headers import make

RULES = """
version: 1
rules:
  - name: chest
    scope: study
    when: {Modality: CT}
    then:
      - {model: seg, deliver: [pacs]}
      - {model: detect, deliver: [viewer]}
      - {model: report}
    results: {prefer: [detect]}
  - name: xr
    when: {Modality: CR}
    then: {model: cxr}
"""


def _study() -> list[dicom_rules.SeriesInput]:
    return [
        dicom_rules.SeriesInput("1.2.3.1", make(Modality="CT", SeriesNumber=2), 60),
        dicom_rules.SeriesInput("1.2.3.2", make(Modality="CR", SeriesNumber=9001), 1),
    ]


def _instances(series_uid: str) -> list[Instance]:
    return [
        Instance("1.2.3", series_uid, f"{series_uid}.{n}", "1.2", "1.2", Path("x"), 1, f"h{n}")
        for n in range(3)
    ]


def _plan(text: str = RULES, **kwargs: object):  # type: ignore[no-untyped-def]
    rules = dicom_rules.parse(text, destinations={"pacs", "viewer"})
    decisions = dicom_rules.route(rules, _study(), destinations=["pacs", "viewer"])
    return plan_jobs("1.2.3", decisions, series_instances=_instances, now=1000.0, **kwargs)


def test_a_rule_with_several_models_gets_one_combine_job() -> None:
    plan = _plan(combine=True, taken_series_numbers=[2, 9001])
    models = [j.model for j in plan.jobs]
    assert models == ["seg", "detect", "report", "cxr", COMBINE_MODEL]
    by_model = {j.model: j for j in plan.jobs}
    combine = by_model[COMBINE_MODEL]
    chest = [by_model[m] for m in ("seg", "detect", "report")]
    assert combine.parameters["_combine_of"] == [j.job_id for j in chest]  # rule order
    assert all(j.parameters["_combined_by"] == combine.job_id for j in chest)
    assert "_combined_by" not in by_model["cxr"].parameters  # one model: its own series
    assert combine.rule == "chest" and combine.series_uids == ("1.2.3.1",)
    assert combine.parameters["_prefer"] == ["detect"]
    assert combine.parameters["_taken_series_numbers"] == [2, 9001]
    assert combine.series_number_base == chest[0].series_number_base
    # every destination any of the rule's models delivers to, in rule order
    assert combine.destinations == ("pacs", "viewer")
    # routing the same inputs again plans the same ids (nothing runs twice)
    again = _plan(combine=True, taken_series_numbers=[2, 9001])
    assert [j.job_id for j in again.jobs] == [j.job_id for j in plan.jobs]


def test_combine_off_globally_or_per_rule_keeps_per_model_jobs() -> None:
    plan = _plan(combine=False)
    assert [j.model for j in plan.jobs] == ["seg", "detect", "report", "cxr"]
    assert not any("_combined_by" in j.parameters for j in plan.jobs)
    per_rule = RULES.replace("results: {prefer: [detect]}", "results: {combine: false}")
    plan = _plan(per_rule, combine=True)
    assert COMBINE_MODEL not in [j.model for j in plan.jobs]
    on = RULES.replace("results: {prefer: [detect]}", "results: {combine: true}")
    assert COMBINE_MODEL in [j.model for j in _plan(on, combine=False).jobs]


@dataclass(frozen=True)
class _Choice:
    volume_id: str | None = None
    reason: object = None
    detail: str | None = None
    dropped: tuple[str, ...] = ()


def test_a_model_that_is_not_applicable_is_named_in_the_combine_job() -> None:
    def choose(d: object, series_uid: str) -> _Choice:
        if getattr(d, "model", None) == "detect":
            return _Choice(reason="too_few_slices", detail="60 < 80")
        return _Choice(volume_id=series_uid)

    plan = _plan(combine=True, choose=choose)
    combine = next(j for j in plan.jobs if j.model == COMBINE_MODEL)
    assert combine.parameters["_not_run"] == {"detect": "not applicable: too_few_slices (60 < 80)"}
    assert len(combine.parameters["_combine_of"]) == 2


def test_the_combine_job_waits_until_every_model_job_is_final(tmp_path: Path) -> None:
    store = JobStore(tmp_path / "index.sqlite")
    plan = _plan(combine=True)
    store.submit(plan.jobs, max_attempts=1)
    combine_id = next(j.job_id for j in plan.jobs if j.model == COMBINE_MODEL)
    claimed = []
    while (job := store.claim("w")) is not None:
        assert job.job_id != combine_id, "claimed before its model jobs ended"
        claimed.append(job.model)
    assert sorted(claimed) == ["cxr", "detect", "report", "seg"]
    store.finish(plan.jobs[0].job_id, ok=True)
    store.finish(plan.jobs[1].job_id, ok=False, reason="boom")  # 1 attempt: dead, final
    assert store.claim("w") is None  # 'report' still running
    store.finish(plan.jobs[2].job_id, ok=True)
    job = store.claim("w")
    assert job is not None and job.job_id == combine_id
    assert store.get(plan.jobs[1].job_id).state is JobState.DEAD


def test_model_inventory_does_not_count_combine_jobs(tmp_path: Path) -> None:
    store = JobStore(tmp_path / "index.sqlite")
    plan = _plan(combine=True)
    store.submit(plan.jobs)
    while (job := store.claim("w")) is not None:
        store.finish(job.job_id, ok=True)
    runs = store.model_runs(since=0)
    assert sorted(m for m, _, _ in runs) == ["cxr", "detect", "report", "seg"]


def test_a_rules_results_options_reach_its_decisions_and_explain() -> None:
    from dicom_rules.explanation import decision_json

    rules = dicom_rules.parse(RULES, destinations={"pacs", "viewer"})
    chest, *_, xr = dicom_rules.route(rules, _study(), destinations=["pacs", "viewer"])
    assert (chest.combine, chest.prefer) == (None, ("detect",))  # None: the node's default
    assert decision_json(chest)["results"] == {"combine": None, "prefer": ["detect"]}
    assert "results" not in decision_json(xr)
    assert dicom_rules.parse(dicom_rules.render(rules)) == rules


def test_models_on_different_volumes_keep_their_own_results() -> None:
    def choose(d: object, series_uid: str) -> _Choice:
        # e.g. one model refuses the series' first volume and gets the second
        second = getattr(d, "model", None) == "detect"
        return _Choice(volume_id=f"{series_uid}/echo={2 if second else 1}")

    plan = _plan(combine=True, choose=choose)
    assert COMBINE_MODEL not in [j.model for j in plan.jobs]
    assert not any("_combined_by" in j.parameters for j in plan.jobs)
