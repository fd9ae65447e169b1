"""The job pipeline and a model that reads priors (``chest-ct-register``): what a job records
when its registration is part of a combined result set, and when no prior can be read.

The delivered case (prior fetched from a real PACS, Spatial Registration delivered) runs end to
end in ``tests/pull/test_registration_job.py``.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

import node.jobs.pipeline as pipeline
from node.imaging import dicom_files, load_volume
from node.jobs.priors import LoadedPrior
from node.types import Job, PriorInput, PriorSeries

CHEST = "ct/chest-ct-siemens-sensation10-b40f-30sl"
CONTEXT = {"model_paths": [], "device": "cpu", "torch_threads": 2}


@pytest.fixture(autouse=True)
def _builtin_registry(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(pipeline, "_REGISTRY", None)  # the built-ins, not a cached registry


def test_without_a_prior_loader_the_model_runs_without_prior_and_says_so(
    tmp_path: Path, corpus: Path
) -> None:
    job = Job("job-remote", "1.2.3", ("1.2.3.4",), "chest-ct-register", "follow-up")
    out = pipeline.run_series(
        job,
        dicom_files([corpus / CHEST]),
        context=CONTEXT,
        out_dir=tmp_path / "out",
        relative_to=tmp_path,
    )
    assert out["objects"] == []
    assert out["prior"] == {"used": False, "reason": pipeline._NO_LOADER}
    assert "registration" not in out["summary"]


@pytest.mark.slow  # one registration of a 30 x 512 x 512 CT onto itself: a few seconds
def test_a_combined_registration_is_not_written_and_the_job_says_why(
    tmp_path: Path, corpus: Path
) -> None:
    files = dicom_files([corpus / CHEST])
    current = load_volume(files)
    prior_volume = dataclasses.replace(current, frame_of_reference_uid="2.25.77", series_uid="9.9")
    prior = PriorInput(series=PriorSeries("9.8", "9.9", "20240301", "CHEST"), volume=prior_volume)
    job = Job(
        "job-combined",
        current.study_uid,
        (current.series_uid,),
        "chest-ct-register",
        "follow-up",
        parameters={"_combined_by": "job-combine"},
    )
    out = pipeline.run_series(
        job,
        files,
        context=CONTEXT,
        out_dir=tmp_path / "out",
        relative_to=tmp_path,
        prior_loader=lambda: LoadedPrior(prior, None),
    )
    assert out["objects"] == []
    assert out["registration"] == pipeline._NOT_COMBINED
    assert out["prior"] == {
        "used": True,
        "study_uid": "9.8",
        "series_uid": "9.9",
        "result_files": 0,
    }
    assert (tmp_path / "out" / pipeline.PREDICTION_FILE).is_file()
    summary = out["summary"]["registration"]
    assert summary["moving_series_uid"] == "9.9"
    assert summary["matrix_type"] in ("RIGID", "RIGID_SCALE", "AFFINE")
    # the same series onto itself: about the identity
    matrix = summary["moving_to_fixed"]
    assert all(abs(matrix[i][i] - 1.0) < 0.05 for i in range(3))
    assert all(abs(matrix[i][3]) < 5.0 for i in range(3))
