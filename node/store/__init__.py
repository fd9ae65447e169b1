"""Durable state: the SQLite index (WAL) of studies, series, instances, events, jobs, outbox."""

from node.store.migrate import migrate

__all__ = ["migrate"]
