"""Schema of the index (component ``index``): append new steps, never edit released ones."""

from __future__ import annotations

__all__ = ["STEPS"]

STEPS: tuple[str, ...] = (
    """
    CREATE TABLE studies (
        study_uid TEXT PRIMARY KEY,
        state TEXT NOT NULL DEFAULT 'open',
        generation INTEGER NOT NULL DEFAULT 0,
        first_received REAL NOT NULL,
        last_received REAL NOT NULL,
        completed_at REAL
    );
    CREATE INDEX studies_state ON studies(state);
    CREATE TABLE series (
        series_uid TEXT PRIMARY KEY,
        study_uid TEXT NOT NULL,
        modality TEXT,
        body_part TEXT,
        series_description TEXT,
        header_json TEXT NOT NULL DEFAULT '{}',
        first_received REAL NOT NULL
    );
    CREATE INDEX series_study ON series(study_uid);
    CREATE TABLE instances (
        sop_uid TEXT PRIMARY KEY,
        series_uid TEXT NOT NULL,
        study_uid TEXT NOT NULL,
        sop_class_uid TEXT NOT NULL,
        transfer_syntax_uid TEXT NOT NULL,
        path TEXT NOT NULL,
        size_bytes INTEGER NOT NULL,
        sha256 TEXT NOT NULL,
        dataset_sha256 TEXT NOT NULL,
        modality TEXT,
        body_part TEXT,
        calling_aet TEXT,
        source TEXT NOT NULL,
        received_at REAL NOT NULL
    );
    CREATE INDEX instances_series ON instances(series_uid);
    CREATE INDEX instances_study ON instances(study_uid);
    CREATE TABLE events (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        ts REAL NOT NULL,
        kind TEXT NOT NULL,
        study_uid TEXT,
        series_uid TEXT,
        sop_uid TEXT,
        detail TEXT NOT NULL DEFAULT '{}'
    );
    CREATE INDEX events_study ON events(study_uid, id)
    """,
    # 2: the study columns people search by (issue 22), backfilled from the stored series
    # headers (DICOM JSON); kept up to date by ``Index.commit``.
    """
    ALTER TABLE studies ADD COLUMN patient_id TEXT;
    ALTER TABLE studies ADD COLUMN patient_name TEXT;
    ALTER TABLE studies ADD COLUMN accession TEXT;
    ALTER TABLE studies ADD COLUMN study_date TEXT;
    ALTER TABLE studies ADD COLUMN study_time TEXT;
    ALTER TABLE studies ADD COLUMN study_description TEXT;
    ALTER TABLE studies ADD COLUMN modalities TEXT;
    UPDATE studies SET
        patient_id = (SELECT json_extract(r.header_json, '$."00100020".Value[0]') FROM series r
            WHERE r.study_uid = studies.study_uid AND r.header_json != '{}'
            ORDER BY r.first_received LIMIT 1),
        patient_name = (SELECT json_extract(r.header_json, '$."00100010".Value[0].Alphabetic')
            FROM series r WHERE r.study_uid = studies.study_uid AND r.header_json != '{}'
            ORDER BY r.first_received LIMIT 1),
        accession = (SELECT json_extract(r.header_json, '$."00080050".Value[0]') FROM series r
            WHERE r.study_uid = studies.study_uid AND r.header_json != '{}'
            ORDER BY r.first_received LIMIT 1),
        study_date = (SELECT json_extract(r.header_json, '$."00080020".Value[0]') FROM series r
            WHERE r.study_uid = studies.study_uid AND r.header_json != '{}'
            ORDER BY r.first_received LIMIT 1),
        study_time = (SELECT json_extract(r.header_json, '$."00080030".Value[0]') FROM series r
            WHERE r.study_uid = studies.study_uid AND r.header_json != '{}'
            ORDER BY r.first_received LIMIT 1),
        study_description = (SELECT json_extract(r.header_json, '$."00081030".Value[0]')
            FROM series r WHERE r.study_uid = studies.study_uid AND r.header_json != '{}'
            ORDER BY r.first_received LIMIT 1),
        modalities = (SELECT group_concat(m, '\\') FROM (SELECT DISTINCT r.modality AS m
            FROM series r WHERE r.study_uid = studies.study_uid AND r.modality IS NOT NULL
            ORDER BY r.modality));
    CREATE INDEX studies_received ON studies(last_received, study_uid);
    CREATE INDEX studies_patient_id ON studies(patient_id);
    CREATE INDEX studies_accession ON studies(accession);
    CREATE INDEX studies_date ON studies(study_date, study_time);
    CREATE INDEX series_modality ON series(modality, study_uid)
    """,
    # 3: studies retrieved as the prior of another study (a rule's ``priors``, issue 21): stored
    # like any study, never routed as a new one
    """
    CREATE TABLE prior_studies (
        study_uid TEXT PRIMARY KEY,
        for_study_uid TEXT NOT NULL,
        source TEXT NOT NULL,
        marked_at REAL NOT NULL
    )
    """,
)
