"""``node.jobs.priors``: what a model that reads priors gets when no prior came, and which
stored result objects of the prior study it is given (real SQLite job store, real files).

The fetched case (the prior series read from the index as a Volume) runs end to end in
``tests/pull/test_registration_job.py``.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from node.jobs.priors import NO_PRIOR_REQUESTED, load_prior, prior_result_files
from node.jobs.store import JobStore
from node.store.index import Index
from node.types import NO_PRIOR, PRIOR_FAILED, Job, PriorOutcome, PriorSeries, PriorState


def _never_read(paths: object) -> tuple[object, object]:
    raise AssertionError("no series is read when there is no prior")


@pytest.mark.parametrize(
    ("outcome", "reason"),
    [
        (None, NO_PRIOR_REQUESTED),
        (PriorOutcome(PriorState.NONE, reason=NO_PRIOR), NO_PRIOR),
        (
            PriorOutcome(PriorState.FAILED, reason=f"{PRIOR_FAILED}: source refused"),
            f"{PRIOR_FAILED}: source refused",
        ),
    ],
)
def test_no_prior_gives_the_reason(
    tmp_path: Path, outcome: PriorOutcome | None, reason: str
) -> None:
    job = Job("j1", "1.2.3", ("1.2.3.4",), "chest-ct-register", "r", prior=outcome)
    loaded = load_prior(job, data_dir=tmp_path, read=_never_read)
    assert loaded.prior is None and loaded.reason == reason
    assert loaded.to_json() == {"used": False, "reason": reason}


def test_a_fetched_prior_whose_instances_are_gone_is_named(tmp_path: Path) -> None:
    Index(tmp_path / "index.sqlite").close()  # the node's index exists, without the series
    fetched = PriorOutcome(PriorState.FETCHED, series=(PriorSeries("9.8", "9.8.7", "20240301"),))
    job = Job("j2", "1.2.3", ("1.2.3.4",), "chest-ct-register", "r", prior=fetched)
    loaded = load_prior(job, data_dir=tmp_path, read=_never_read)
    assert loaded.prior is None
    assert loaded.reason == (
        "prior could not be read: series 9.8.7 has no stored instances (removed by retention?)"
    )


def test_result_files_of_the_prior_study_are_those_still_on_disk(tmp_path: Path) -> None:
    store = JobStore(tmp_path / "index.sqlite")
    store.submit(
        [
            Job("old-seg", "9.8", ("9.8.7",), "lung-nodule-seg", "r"),
            Job("old-sr", "9.8", ("9.8.7",), "lung-nodule-detect", "r"),
            Job("failed", "9.8", ("9.8.7",), "report-text", "r"),
            Job("other-study", "5.5", ("5.5.5",), "lung-nodule-seg", "r"),
        ],
        max_attempts=1,
    )
    kept = tmp_path / "results" / "old-seg" / "000-seg.dcm"
    kept.parent.mkdir(parents=True)
    kept.write_bytes(b"seg")
    sr = tmp_path / "results" / "old-sr" / "000-sr.dcm"
    sr.parent.mkdir(parents=True)
    sr.write_bytes(b"sr")
    outputs = {
        "old-seg": [str(kept.relative_to(tmp_path))],
        "old-sr": [str(sr.relative_to(tmp_path)), "results/old-sr/001-sc.dcm"],  # 2nd removed
        "other-study": ["results/other-study/000-seg.dcm"],
    }
    for _ in range(4):
        job = store.claim("w")
        assert job is not None
        if job.job_id == "failed":
            store.finish(job.job_id, ok=False, reason="boom")
            continue
        objects = [{"path": p} for p in outputs[job.job_id]]
        store.finish(job.job_id, ok=True, outputs={"objects": objects})
    assert set(prior_result_files(store, "9.8", tmp_path)) == {kept, sr}
    assert prior_result_files(store, "7.7", tmp_path) == ()
