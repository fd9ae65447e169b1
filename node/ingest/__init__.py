"""Stage 1, ingest: C-STORE SCP and spool (durable write, deduplication, quarantine)."""

from node.ingest.header import Header, is_valid_uid, parse_received
from node.ingest.spool import Spool, StoreOutcome

__all__ = ["Header", "Spool", "StoreOutcome", "is_valid_uid", "parse_received"]
