"""The studies search of the index (issue 22 §1): columns written at ingest, a migration that
backfills them from the stored headers, filters, server-side sort and paging, and the AI status
computed from the real jobs store on the same SQLite file."""

from __future__ import annotations

import datetime as dt
import sqlite3
from pathlib import Path

import pydicom
import pytest

from node.ingest.spool import Spool
from node.jobs.queries import ai_status_sql
from node.jobs.store import JobStore
from node.store.index import STEPS, Index, StudyQuery
from node.store.migrate import migrate
from node.types import Job, JobState
from tests.ingest.synthetic import write_ct_series

PATIENTS = [  # patient id, name, accession, study date, modality, description
    ("P-1", "Doe^Jane", "ACC-1", "20240105", "CT", "CT CHEST"),
    ("P-2", "Roe^Richard", "ACC-2", "20240210", "MR", "MR HEAD"),
    ("P-1", "Doe^Jane", "ACC_3", "20240301", "CT", "CT ABDOMEN 100%"),
    ("P-3", "Smith^Ann", "ACC-4", "20231231", "CR", "CHEST PA"),
]


def _store(tmp_path: Path, index: Index) -> list[str]:
    spool = Spool(index.data_dir, index)
    uids = []
    try:
        for n, (pid, name, acc, date, modality, desc) in enumerate(PATIENTS):
            (path,) = write_ct_series(tmp_path / f"s{n}", 1, size=8, seed=n)
            ds = pydicom.dcmread(path)
            ds.PatientID, ds.PatientName, ds.AccessionNumber = pid, name, acc
            ds.StudyDate, ds.StudyTime, ds.StudyDescription = date, "101500", desc
            ds.Modality = modality
            ds.save_as(path)
            out = spool.store(path.read_bytes(), calling_aet="T", source="test")
            uids.append(out.instance.study_uid)
    finally:
        spool.stop()
    return uids


@pytest.fixture
def index(tmp_path: Path) -> Index:
    """The index as the node opens it: the job queue gives the AI status expression."""
    return Index(tmp_path / "data" / "index.sqlite", ai_status_sql=ai_status_sql())


def test_columns_written_at_ingest(tmp_path: Path, index: Index) -> None:
    uids = _store(tmp_path, index)
    row = index.study_row(uids[1])
    assert row is not None
    assert (row["patient_id"], row["patient_name"], row["accession"]) == (
        "P-2",
        "Roe^Richard",
        "ACC-2",
    )
    assert (row["study_date"], row["study_time"], row["study_description"]) == (
        "20240210",
        "101500",
        "MR HEAD",
    )
    assert row["modalities"] == ["MR"] and row["series_count"] == 1
    assert row["ai_status"] is None  # no jobs table in this file yet
    index.close()


def test_filters_sort_and_paging(tmp_path: Path, index: Index) -> None:
    uids = _store(tmp_path, index)

    def found(**kw: object) -> list[str]:
        rows, total = index.search_studies(StudyQuery(**kw))  # type: ignore[arg-type]
        assert total == len(rows)
        return [r["study_uid"] for r in rows]

    assert found() == uids[::-1]  # newest received first
    assert found(patient_id="P-1") == [uids[2], uids[0]]
    assert found(patient_id="P") == []  # exact, not a prefix
    assert found(accession="ACC_3") == [uids[2]]
    assert found(patient_name="doe") == [uids[2], uids[0]]  # substring, any case
    assert found(description="100%") == [uids[2]]  # LIKE wildcards are literal
    assert found(description="_") == []
    assert found(modality="CT") == [uids[2], uids[0]]
    assert found(date_from=dt.date(2024, 1, 1), date_to=dt.date(2024, 2, 10)) == [
        uids[1],
        uids[0],
    ]
    assert found(date_to=dt.date(2023, 12, 31)) == [uids[3]]
    assert found(status="open") == uids[::-1] and found(status="complete") == []
    assert found(sort="study_date", descending=False) == [uids[3], uids[0], uids[1], uids[2]]
    assert found(sort="patient_name", descending=False)[-1] == uids[3]
    page, total = index.search_studies(
        StudyQuery(sort="study_date", descending=False), limit=2, offset=2
    )
    assert total == 4 and [r["study_uid"] for r in page] == [uids[1], uids[2]]
    assert index.list_studies(limit=1, offset=3)[0]["study_uid"] == uids[0]
    index.close()


def test_ai_status_from_the_jobs_store(tmp_path: Path, index: Index) -> None:
    uids = _store(tmp_path, index)
    jobs = JobStore(index.db_path)

    def job(n: int, model: str) -> Job:
        return Job(
            job_id=f"j{n}-{model}", study_uid=uids[n], series_uids=("1.2",), model=model, rule="r"
        )

    jobs.submit([job(0, "a"), job(0, "b"), job(1, "a"), job(2, "a")], max_attempts=1)
    # study 0: one running, one queued -> running; study 1: failed -> failed; 2: succeeded
    claimed = {}
    while (j := jobs.claim("w")) is not None:
        claimed[j.job_id] = j
    assert set(claimed) == {"j0-a", "j0-b", "j1-a", "j2-a"}
    jobs.finish("j0-b", ok=True)
    assert jobs.finish("j1-a", ok=False, reason="model crashed") in (JobState.DEAD, JobState.FAILED)
    jobs.finish("j2-a", ok=True)
    status = {r["study_uid"]: r["ai_status"] for r in index.list_studies()}
    assert status == {uids[0]: "running", uids[1]: "failed", uids[2]: "succeeded", uids[3]: "none"}
    rows, total = index.search_studies(StudyQuery(status="failed"))
    assert total == 1 and rows[0]["study_uid"] == uids[1]
    index.close()


def test_migration_backfills_from_stored_headers(tmp_path: Path) -> None:
    """An index made by the previous schema (version 1) gains the columns, filled from the
    series headers it already holds."""
    data = tmp_path / "data"
    old = Index(data / "index.sqlite")
    uids = _store(tmp_path, old)
    old.close()
    conn = sqlite3.connect(data / "index.sqlite")
    conn.execute("UPDATE studies SET patient_id = NULL, accession = NULL, modalities = NULL")
    conn.execute(
        "UPDATE studies SET patient_name = NULL, study_date = NULL, study_time = NULL,"
        " study_description = NULL"
    )
    for index_name in ("studies_received", "studies_patient_id", "studies_accession"):
        conn.execute(f"DROP INDEX {index_name}")
    conn.execute("DROP INDEX studies_date")
    conn.execute("DROP INDEX series_modality")
    for column in ("patient_id", "patient_name", "accession", "study_date", "study_time"):
        conn.execute(f"ALTER TABLE studies DROP COLUMN {column}")
    conn.execute("ALTER TABLE studies DROP COLUMN study_description")
    conn.execute("ALTER TABLE studies DROP COLUMN modalities")
    conn.execute("DROP TABLE prior_studies")  # schema step 3 (issue 21), after version 1
    conn.execute("UPDATE schema_version SET version = 1 WHERE component = 'index'")
    conn.commit()
    assert migrate(conn, "index", STEPS) == len(STEPS)
    conn.close()
    index = Index(data / "index.sqlite")
    row = index.study_row(uids[2])
    assert row is not None
    assert (row["patient_id"], row["patient_name"], row["accession"]) == (
        "P-1",
        "Doe^Jane",
        "ACC_3",
    )
    assert (row["study_date"], row["study_description"], row["modalities"]) == (
        "20240301",
        "CT ABDOMEN 100%",
        ["CT"],
    )
    rows, _ = index.search_studies(StudyQuery(patient_id="P-1"))
    assert [r["study_uid"] for r in rows] == [uids[2], uids[0]]
    index.close()
