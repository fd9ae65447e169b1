"""The audit trail: who did what to which study, as append-only JSON lines plus a table."""

from node.audit.follow import JobEventFollower, SupersededAuditor
from node.audit.log import AuditLog, AuditRecord

__all__ = ["AuditLog", "AuditRecord", "JobEventFollower", "SupersededAuditor"]
