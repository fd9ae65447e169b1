"""The Celery application shared by the node (publisher) and ``ainode worker`` (consumer).

One queue per model (``ainode.model.<name>``) plus a STAT lane (``ainode.stat``).  A worker lists
the STAT lane first and kombu's Redis transport reads queues in that order
(``queue_order_strategy="priority"``), so STAT work is always drained first; inside a queue,
Redis message priority 0 is the most urgent (the reverse of RabbitMQ).

Delivery is at least once: ``acks_late`` + ``reject_on_worker_lost`` keep a message in Redis
until the worker finished the job, a visibility timeout longer than the job time limit returns
the message of a worker that died (``kill -9``, machine loss), and a short
``unacked_restore_interval`` makes that happen promptly.  A message carries the job's
identifiers and parameters only — never pixel data: the worker fetches the series from the
node over WADO-RS.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from node.types import Job, PriorOutcome

if TYPE_CHECKING:  # celery is imported by make_celery only: the embedded engine never needs it
    from celery import Celery

__all__ = [
    "STAT_QUEUE",
    "TASK_NAME",
    "job_from_message",
    "job_message",
    "make_celery",
    "model_queue",
    "redis_priority",
]

#: The task every job runs as (``node.jobs.remote`` registers it in workers).
TASK_NAME = "ainode.run_job"
#: The lane for jobs at or above ``celery.stat_priority``; workers drain it first.
STAT_QUEUE = "ainode.stat"
_QUEUE_SAFE = re.compile(r"[^A-Za-z0-9_.-]")


def model_queue(model: str) -> str:
    """The queue of jobs for ``model``."""
    return "ainode.model." + _QUEUE_SAFE.sub("_", model)


def redis_priority(job_priority: int, *, stat_priority: int) -> int:
    """Redis message priority (0 = most urgent .. 9) for a job's routing priority (higher first)."""
    if job_priority >= stat_priority:
        return 0
    if job_priority > 0:
        return 3
    if job_priority == 0:
        return 5
    return 8


def job_message(job: Job) -> dict[str, Any]:
    """The JSON body of a task: identifiers and parameters, no pixel data.

    The job's ``created_at``, ``series_number_base`` and ``model_version`` travel in
    ``parameters`` (``Job.stored_parameters``), the shape workers of earlier versions read.
    """
    return {
        "job_id": job.job_id,
        "study_uid": job.study_uid,
        "series_uids": list(job.series_uids),
        "model": job.model,
        "rule": job.rule,
        "parameters": job.stored_parameters(),
        "destinations": list(job.destinations),
        "priority": job.priority,
        "prior": job.prior.to_json() if job.prior is not None else None,
    }


def job_from_message(body: Mapping[str, Any]) -> Job:
    """Inverse of ``job_message``."""
    return Job(
        job_id=str(body["job_id"]),
        study_uid=str(body["study_uid"]),
        series_uids=tuple(body["series_uids"]),
        model=str(body["model"]),
        rule=str(body["rule"]),
        destinations=tuple(body.get("destinations") or ()),
        priority=int(body.get("priority", 0)),
        prior=PriorOutcome.from_json(body["prior"]) if body.get("prior") else None,
        **Job.fields_of(body.get("parameters") or {}),
    )


def make_celery(
    broker_url: str,
    *,
    visibility_timeout_seconds: float,
    unacked_restore_interval_seconds: float = 5.0,
    connect_timeout_seconds: float = 3.0,
) -> Celery:
    """The Celery app for ``broker_url`` (``redis://HOST:PORT/DB``), configured for durability.

    Parameters
    ----------
    broker_url:
        The Redis broker.
    visibility_timeout_seconds:
        A message not acknowledged this long after delivery goes back to its queue; must be
        longer than the longest job (``inference.job_timeout_seconds``).
    unacked_restore_interval_seconds:
        How often consumers look for such messages.
    connect_timeout_seconds:
        Socket connect timeout towards Redis (a down broker fails publication fast).
    """
    from celery import Celery

    app = Celery("ainode", broker=broker_url, set_as_current=False)
    app.conf.update(
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        task_acks_on_failure_or_timeout=True,
        worker_prefetch_multiplier=1,
        worker_concurrency=1,
        worker_hijack_root_logger=False,
        worker_send_task_events=True,
        task_send_sent_event=True,
        task_ignore_result=True,
        task_serializer="json",
        accept_content=["json"],
        task_default_queue=STAT_QUEUE,
        task_create_missing_queues=True,
        broker_connection_retry_on_startup=True,
        broker_connection_max_retries=None,
        broker_transport_options={
            "visibility_timeout": visibility_timeout_seconds,
            "unacked_restore_interval": unacked_restore_interval_seconds,
            "queue_order_strategy": "priority",
            "priority_steps": list(range(10)),
            "unacked_restore_throttle": 1,
            "socket_connect_timeout": connect_timeout_seconds,
            "socket_timeout": 30.0,
            "socket_keepalive": True,
            "health_check_interval": 10,
        },
    )
    return app
