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
)
