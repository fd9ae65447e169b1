"""Schema migrations for the SQLite index, per component, from day one.

Each component (``index``, ``jobs``, ``outbox``...) owns an ordered list of SQL scripts; the
applied count is kept in ``schema_version``.  Scripts are never edited once released: append.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence

__all__ = ["migrate"]


def migrate(conn: sqlite3.Connection, component: str, steps: Sequence[str]) -> int:
    """Apply the scripts of ``steps`` that ``component`` has not yet applied; return its version.

    Each script runs in its own transaction together with the version bump, so a crash between
    two steps leaves a consistent, resumable schema.
    """
    conn.execute(
        "CREATE TABLE IF NOT EXISTS schema_version ("
        " component TEXT PRIMARY KEY, version INTEGER NOT NULL)"
    )
    row = conn.execute(
        "SELECT version FROM schema_version WHERE component = ?", (component,)
    ).fetchone()
    current = int(row[0]) if row else 0
    if current > len(steps):
        raise RuntimeError(
            f"index schema of '{component}' is version {current}, newer than this ainode "
            f"knows ({len(steps)}); upgrade ainode"
        )
    for version, script in enumerate(steps[current:], start=current + 1):
        with conn:
            for statement in _statements(script):
                conn.execute(statement)
            conn.execute(
                "INSERT INTO schema_version(component, version) VALUES (?, ?) "
                "ON CONFLICT(component) DO UPDATE SET version = excluded.version",
                (component, version),
            )
    return len(steps)


def _statements(script: str) -> list[str]:
    return [s.strip() for s in script.split(";") if s.strip()]
