"""A job's creation time, result series base and model version are fields of ``Job``; the job
row and the remote workers' message keep them where earlier versions put them (``_created_at``,
``_series_number_base``, ``_model_version`` in ``parameters``), so old rows and workers read on."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

from node.jobs import JobStore
from node.jobs.celery_app import job_from_message, job_message
from node.types import Job


def _job(**fields: object) -> Job:
    return Job(
        job_id="j-1",
        study_uid="1.2.3",
        series_uids=("1.2.3.4",),
        model="seg",
        rule="ct",
        parameters={"threshold": 0.5, "_volume": "1.2.3.4"},
        destinations=("pacs",),
        **fields,  # type: ignore[arg-type]
    )


def test_the_job_row_keeps_the_fields_in_its_parameters(tmp_path: Path) -> None:
    db = tmp_path / "index.sqlite"
    store = JobStore(db)
    job = _job(created_at=1_765_000_000, series_number_base=10000, model_version="1.4")
    assert store.submit([job]) == ["j-1"]
    with sqlite3.connect(db) as conn:
        (raw,) = conn.execute("SELECT parameters FROM jobs WHERE job_id='j-1'").fetchone()
    assert json.loads(raw) == {
        "_created_at": 1_765_000_000,
        "_model_version": "1.4",
        "_series_number_base": 10000,
        "_volume": "1.2.3.4",
        "threshold": 0.5,
    }
    record = store.get("j-1")
    assert record.job == job
    assert record.to_json()["parameters"] == json.loads(raw)  # the API shows what it showed


def test_a_row_of_an_earlier_version_reads_into_the_fields(tmp_path: Path) -> None:
    store = JobStore(tmp_path / "index.sqlite")
    # an earlier router put them among the parameters
    old = _job()
    old = Job(
        **{
            **{f: getattr(old, f) for f in ("job_id", "study_uid", "series_uids", "model", "rule")},
            "parameters": {**old.parameters, "_created_at": 5, "_series_number_base": 9000},
        }
    )
    store.submit([old])
    job = store.get("j-1").job
    assert (job.created_at, job.series_number_base, job.model_version) == (5, 9000, None)
    assert job.parameters == {"_volume": "1.2.3.4", "threshold": 0.5}


def test_the_worker_message_has_the_earlier_shape() -> None:
    job = _job(created_at=7, series_number_base=11000, model_version="2")
    body = job_message(job)
    assert body["parameters"]["_created_at"] == 7
    assert body["parameters"]["_series_number_base"] == 11000
    assert body["parameters"]["_model_version"] == "2"
    assert "created_at" not in body
    assert job_from_message(json.loads(json.dumps(body))) == job
    # a message from a node of an earlier version
    earlier = {**body, "parameters": {"_created_at": 7, "threshold": 0.5}}
    read = job_from_message(earlier)
    assert (read.created_at, read.series_number_base, read.parameters) == (
        7,
        None,
        {"threshold": 0.5},
    )
