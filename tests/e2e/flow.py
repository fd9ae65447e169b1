"""Checks shared by the end-to-end files that run studies through a node's default models."""

from __future__ import annotations

from pathlib import Path

import pydicom

from node.jobs.store import JobStore
from node.types import JobState
from tests.results.air import assert_air

__all__ = ["assert_air_per_model", "jobs_final"]

_FINAL = (JobState.SUCCEEDED, JobState.DEAD, JobState.CANCELLED)


def jobs_final(store: JobStore, expected: int) -> bool:
    """At least ``expected`` jobs exist and every job is in a final state."""
    jobs = store.list_jobs()
    return len(jobs) >= expected and all(j.state in _FINAL for j in jobs)


def assert_air_per_model(files: list[Path]) -> None:
    """Every delivered object carries the IHE AIR points; one Device UID per model version."""
    by_model: dict[str, set[str]] = {}
    for path in files:
        ds = pydicom.dcmread(path)
        uid = assert_air(ds)
        by_model.setdefault(str(ds.ManufacturerModelName), set()).add(uid)
    assert all(len(uids) == 1 for uids in by_model.values()), by_model
    assert len({u for uids in by_model.values() for u in uids}) == len(by_model)
