"""Re-routing a study (issue 18 §4): which earlier jobs go stale, which finished jobs run again
(new model version, combined set switched), on a real SQLite job store."""

from __future__ import annotations

from pathlib import Path

from node.jobs.store import COMBINE_MODEL, RETIRED_PREFIX, JobStore, rerun_reason
from node.routing.plan import no_longer_routed, with_model_versions
from node.types import Job, JobState

STUDY = "1.2.3"


def _job(job_id: str, *, rule: str = "r", model: str = "m", **parameters: object) -> Job:
    return Job(
        job_id=job_id,
        study_uid=STUDY,
        series_uids=("1.2.3.4",),
        model=model,
        rule=rule,
        parameters={"_created_at": 1, **parameters},
        destinations=("pacs",),
    )


def _finish(store: JobStore, job_id: str) -> None:
    claimed = store.claim("w")
    assert claimed is not None and claimed.job_id == job_id
    assert store.finish(job_id, ok=True, outputs={"objects": []}) is JobState.SUCCEEDED


def test_rerun_reason_counts_version_role_and_rule_parameters() -> None:
    assert rerun_reason({"_model_version": "1", "_created_at": 1}, {"_model_version": "1"}) is None
    assert rerun_reason({"_model_version": "1"}, {"_model_version": "2"}) == (
        "model version 1 -> 2"
    )
    # a job stored before versions were recorded, or a model the router could not describe
    assert rerun_reason({}, {"_model_version": "2"}) is None
    assert rerun_reason({"_model_version": "1"}, {}) is None
    assert rerun_reason({"_combined_by": "j-c"}, {}) == "combined result set changed"
    assert rerun_reason({}, {"_combined_by": "j-c"}) == "combined result set changed"
    assert rerun_reason({"threshold": 1}, {"threshold": 2}) == "rule parameters changed"
    assert rerun_reason({"_series_number_base": 9000}, {"_series_number_base": 10000}) is None


def test_model_versions_are_recorded_in_model_and_combine_jobs() -> None:
    a, b = _job("j-a", model="a"), _job("j-b", model="b")
    combine = _job("j-c", model=COMBINE_MODEL, _combine_of=["j-a", "j-b"])
    out = with_model_versions([a, b, combine, _job("j-x", model="unknown")], {"a": "1", "b": "2"})
    assert [j.model_version for j in out] == ["1", "2", None, None]
    assert out[2].parameters["_model_versions"] == {"a": "1", "b": "2"}
    assert "_model_versions" not in out[3].parameters


def test_stale_jobs_of_renamed_rules_removed_models_and_combine_switches(
    tmp_path: Path,
) -> None:
    store = JobStore(tmp_path / "index.sqlite")
    old_combine = _job("j-c", model=COMBINE_MODEL, _combine_of=["j-a", "j-b"])
    a = _job("j-a", model="a", _combined_by="j-c")
    b = _job("j-b", model="b", _combined_by="j-c")
    other = _job("j-o", rule="other", model="o")
    store.submit([a, b, old_combine, other])
    stored = store.list_jobs(study_uid=STUDY)

    # the same routing again: nothing retired; the combined jobs deliver no results of their
    # own now, so whatever they delivered before (nothing here) is to be rejected
    same = no_longer_routed(stored, [a, b, old_combine, other])
    assert same.reject == ("j-a", "j-b") and same.retire == ()
    # combine switched off: the combined set goes, the model jobs deliver their own
    off = no_longer_routed(stored, [_job("j-a", model="a"), _job("j-b", model="b"), other])
    assert off.reject == ("j-c",) and off.retire == ("j-c",)
    # model b taken out of the rule: its job and the set combining it go, a keeps running
    removed = no_longer_routed(stored, [_job("j-a", model="a"), other])
    assert removed.reject == ("j-b", "j-c") and removed.retire == ("j-b", "j-c")
    # rule 'other' renamed: its job is stale (the renamed rule's job is another one)
    renamed = no_longer_routed(stored, [a, b, old_combine, _job("j-n", rule="new", model="o")])
    assert renamed.reject == ("j-a", "j-b", "j-o") and renamed.retire == ("j-o",)


def test_combine_switched_on_rejects_per_model_results_but_keeps_the_jobs(
    tmp_path: Path,
) -> None:
    store = JobStore(tmp_path / "index.sqlite")
    store.submit([_job("j-a", model="a"), _job("j-b", model="b")])
    stored = store.list_jobs(study_uid=STUDY)
    on = [
        _job("j-a", model="a", _combined_by="j-c"),
        _job("j-b", model="b", _combined_by="j-c"),
        _job("j-c", model=COMBINE_MODEL, _combine_of=["j-a", "j-b"]),
    ]
    stale = no_longer_routed(stored, on)
    assert stale.reject == ("j-a", "j-b") and stale.retire == ()


def test_late_instance_successors_are_left_to_the_supersede_path(tmp_path: Path) -> None:
    store = JobStore(tmp_path / "index.sqlite")
    store.submit([_job("j-1")])
    store.submit([_job("j-2")])  # same study, rule, model and series: supersedes j-1
    assert store.get("j-1").superseded_by == "j-2"
    stale = no_longer_routed(store.list_jobs(study_uid=STUDY), [_job("j-2")])
    assert stale.reject == ()


def test_finished_job_runs_again_under_a_new_model_version_only(tmp_path: Path) -> None:
    store = JobStore(tmp_path / "index.sqlite")
    assert store.submit([_job("j-a", _model_version="1.2")]) == ["j-a"]
    _finish(store, "j-a")
    # re-routed, same version: nothing to do
    assert store.submit([_job("j-a", _model_version="1.2", _created_at=2)]) == []
    assert store.get("j-a").state is JobState.SUCCEEDED
    # re-routed after the model was re-registered as 1.3: the job runs again with it
    assert store.submit([_job("j-a", _model_version="1.3")]) == ["j-a"]
    record = store.get("j-a")
    assert record.state is JobState.QUEUED and record.attempts == 0
    assert record.job.model_version == "1.3"
    assert store.events("j-a")[-1]["reason"] == "re-routed: model version 1.2 -> 1.3"
    # a queued or running job is not queued twice
    assert store.submit([_job("j-a", _model_version="1.4")]) == []


def test_retired_jobs_do_not_run_or_deliver(tmp_path: Path) -> None:
    store = JobStore(tmp_path / "index.sqlite")
    store.submit([_job("j-q"), _job("j-r", rule="r2")])
    running = store.claim("w")
    assert running is not None
    assert sorted(store.retire(["j-q", "j-r"], by="rerouted:abc")) == ["j-q", "j-r"]
    assert store.retire(["j-q"], by="rerouted:def") == []  # once
    states = {j.job.job_id: (j.state, j.superseded_by) for j in store.list_jobs()}
    queued = "j-r" if running.job_id == "j-q" else "j-q"
    assert states[queued] == (JobState.CANCELLED, "rerouted:abc")
    assert states[running.job_id] == (JobState.RUNNING, "rerouted:abc")


def test_retired_job_routed_again_runs_as_a_new_revision(tmp_path: Path) -> None:
    store = JobStore(tmp_path / "index.sqlite")
    store.submit([_job("j-a", _model_version="1")])
    _finish(store, "j-a")
    assert store.retire(["j-a"], by=f"{RETIRED_PREFIX}abc") == ["j-a"]
    # the rule comes back unchanged: the job runs again, as revision 1 (new result UIDs)
    assert store.submit([_job("j-a", _model_version="1")]) == ["j-a"]
    record = store.get("j-a")
    assert record.state is JobState.QUEUED and record.superseded_by is None
    assert record.job.parameters["_revision"] == 1
    assert store.events("j-a")[-1]["reason"] == "re-routed: routed again after it was retired"
    _finish(store, "j-a")
    # a later re-run for a new version keeps the revision (never back to revision 0's UIDs)
    assert store.submit([_job("j-a", _model_version="2")]) == ["j-a"]
    assert store.get("j-a").job.parameters["_revision"] == 1
    # superseded by a newer job of the same work (late instance): not a retired job
    store.submit([_job("j-b", _model_version="2")])
    assert store.get("j-a").superseded_by == "j-b"
    assert store.submit([_job("j-a", _model_version="2")]) == []
