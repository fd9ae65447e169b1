"""Durable state: the SQLite index (WAL) of studies, series, instances, events, jobs, outbox."""

from node.store.index import Index, IngestRecord, StoredRef
from node.store.migrate import migrate

__all__ = ["Index", "IngestRecord", "StoredRef", "migrate"]
