"""Benchmark: the studies list and its searches on an index of 100,000 studies (issue 22 §1).

A real SQLite index (``node.store.index.Index``, WAL, every migration) and a real jobs table
(``node.jobs.store.JobStore`` on the same file) are filled through ``Index.commit`` -- the
ingest path, so the search columns are written the way the node writes them -- with ``--studies``
studies of one series and one instance each (a synthetic DICOM JSON header: patient, accession,
study date over ten years, description, one of five modalities); every third study gets a job in
a rotating state.  Then each query below runs ``--repeat`` times and the median and worst wall
times are printed, with the machine's load average before and after.

Queries: the first page (100, newest first), a deep page (offset 50,000), a page sorted by study
date, by patient name, exact Patient ID, exact accession, a patient-name substring, a date range
of one month, a modality, an AI status, and modality + date range combined.

Run: ``PYTHONPATH=. .venv/bin/python bench/studies.py [--studies 100000] [--repeat 5]``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import statistics
import tempfile
import time
from pathlib import Path

from node.jobs.store import JobStore
from node.store.index import Index, IngestRecord, StudyQuery
from node.types import Instance

MODALITIES = ("CT", "MR", "CR", "DX", "US")
STATES = ("queued", "running", "succeeded", "failed", "dead")
NAMES = ("DOE^JANE", "ROE^RICHARD", "MUSTERMANN^ERIKA", "DUPONT^JEAN", "ROSSI^MARIO")


def _header(i: int) -> dict[str, object]:
    day = dt.date(2016, 1, 1) + dt.timedelta(days=i % 3650)
    return {
        "00100020": {"vr": "LO", "Value": [f"PID{i:07d}"]},
        "00100010": {"vr": "PN", "Value": [{"Alphabetic": f"{NAMES[i % 5]}{i}"}]},
        "00080050": {"vr": "SH", "Value": [f"ACC{i:08d}"]},
        "00080020": {"vr": "DA", "Value": [day.strftime("%Y%m%d")]},
        "00080030": {"vr": "TM", "Value": [f"{i % 24:02d}0000"]},
        "00081030": {"vr": "LO", "Value": [f"{MODALITIES[i % 5]} study {i % 97}"]},
    }


def fill(index: Index, jobs_db: Path, n: int) -> float:
    """Insert ``n`` studies (and jobs for every third) and return the seconds it took."""
    t0 = time.perf_counter()
    base = time.time() - n
    batch: list[IngestRecord] = []
    for i in range(n):
        study = f"1.2.826.0.1.3680043.10.1.{i}"
        inst = Instance(
            study_uid=study,
            series_uid=f"{study}.1",
            sop_uid=f"{study}.1.1",
            sop_class_uid="1.2.840.10008.5.1.4.1.1.2",
            transfer_syntax_uid="1.2.840.10008.1.2.1",
            path=Path(f"studies/{i}.dcm"),
            size_bytes=1000,
            sha256="0" * 64,
            modality=MODALITIES[i % 5],
        )
        batch.append(
            IngestRecord(
                instance=inst,
                status="stored",
                dataset_sha256="0" * 64,
                source="bench",
                received_at=base + i,
                series_header=_header(i),
            )
        )
        if len(batch) == 2000:
            index.commit(batch)
            batch = []
    index.commit(batch)
    # jobs: written straight into the jobs table (the JobStore's schema), for speed
    import sqlite3

    conn = sqlite3.connect(jobs_db)
    with conn:
        conn.executemany(
            "INSERT INTO jobs(job_id, study_uid, rule, model, series_uids, parameters,"
            " destinations, state, created_at, updated_at) VALUES (?,?,?,?,?,?,?,?,?,?)",
            [
                (
                    f"job-{i}",
                    f"1.2.826.0.1.3680043.10.1.{i}",
                    "r",
                    "m",
                    "[]",
                    "{}",
                    "[]",
                    STATES[(i // 3) % 5],
                    base + i,
                    base + i,
                )
                for i in range(0, n, 3)
            ],
        )
    conn.close()
    return time.perf_counter() - t0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--studies", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    n = args.studies
    with tempfile.TemporaryDirectory() as tmp:
        db = Path(tmp) / "index.sqlite"
        index = Index(db)
        JobStore(db)
        print(f"load average before: {os.getloadavg()}  cores: {os.cpu_count()}")
        print(f"filling {n} studies ... {fill(index, db, n):.1f} s")
        mid = dt.date(2016, 1, 1) + dt.timedelta(days=(n // 2) % 3650)
        queries: list[tuple[str, StudyQuery, int]] = [
            ("first page, newest first", StudyQuery(), 0),
            ("page at offset 50,000", StudyQuery(), min(50_000, n // 2)),
            ("sorted by study date", StudyQuery(sort="study_date"), 0),
            ("sorted by patient name", StudyQuery(sort="patient_name", descending=False), 0),
            ("patient_id exact", StudyQuery(patient_id=f"PID{n // 2:07d}"), 0),
            ("accession exact", StudyQuery(accession=f"ACC{n // 3:08d}"), 0),
            ("patient name substring", StudyQuery(patient_name="rossi^mario12"), 0),
            (
                "study date: one month",
                StudyQuery(date_from=mid, date_to=mid + dt.timedelta(days=30)),
                0,
            ),
            ("modality CT", StudyQuery(modality="CT"), 0),
            ("AI status failed", StudyQuery(status="failed"), 0),
            (
                "modality MR + one month",
                StudyQuery(modality="MR", date_from=mid, date_to=mid + dt.timedelta(days=30)),
                0,
            ),
        ]
        head = "query (page of 100 + total count)"
        print(f"{head:36} {'matches':>8} {'median ms':>10} {'max ms':>8}")
        for name, query, offset in queries:
            times = []
            total = 0
            for _ in range(args.repeat):
                t0 = time.perf_counter()
                rows, total = index.search_studies(query, limit=100, offset=offset)
                times.append((time.perf_counter() - t0) * 1000)
            print(f"{name:36} {total:>8} {statistics.median(times):>10.1f} {max(times):>8.1f}")
        index.close()
        print(f"load average after: {os.getloadavg()}")


if __name__ == "__main__":
    main()
