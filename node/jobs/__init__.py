"""Jobs: the durable queue (``JobStore``) and the embedded engine of worker processes."""

from node.jobs.engine import EmbeddedEngine, JobEngine, Runner
from node.jobs.store import JobRecord, JobStore, job_id_for

__all__ = ["EmbeddedEngine", "JobEngine", "JobRecord", "JobStore", "Runner", "job_id_for"]
