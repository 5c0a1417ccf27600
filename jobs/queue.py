"""The job queue as both sides see it: its name, the task's name and the Celery app.

The edge (``jobs/service.py``) sends tasks through it; the worker process (``jobs/worker.py``)
consumes them. It holds nothing else, so the API process loads neither the job runner nor the
decoder.
"""

from __future__ import annotations

from celery import Celery

from jobs.settings import JobSettings

QUEUE = "moderation-jobs"
"""The Celery queue of moderation jobs."""
TASK = "jobs.process"
"""The task a job is queued as: its one argument is the job's id."""


def celery_app(settings: JobSettings) -> Celery:
    """The Celery app on ``settings.redis_url`` (broker only: job state and events have their own keys)."""
    app = Celery("jobs", broker=settings.redis_url)
    app.conf.update(
        task_acks_late=True,
        # Job errors never raise (the job fails with an event); Redis failures are retried by the
        # task itself (jobs/worker.py).
        task_acks_on_failure_or_timeout=False,
        task_ignore_result=True,
        task_default_queue=QUEUE,
        worker_prefetch_multiplier=1,
        broker_connection_retry_on_startup=True,
        broker_transport_options={"visibility_timeout": settings.visibility_timeout_s},
        worker_hijack_root_logger=False,
    )
    return app
