"""What the edge's job API needs: the settings, the store and a way to queue a job."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from jobs.settings import JobSettings
from jobs.store import JobStore

logger = logging.getLogger(__name__)


@dataclass
class JobService:
    settings: JobSettings
    store: JobStore
    enqueue: Callable[[str], Awaitable[None]]
    """Queues a job for the workers."""

    async def close(self) -> None:
        await self.store.close()


def celery_job_service(settings: JobSettings | None = None) -> JobService:
    """The production service: jobs queued on Celery (Redis broker), state in the same Redis."""
    from jobs.queue import TASK, celery_app  # Celery only where jobs are served

    settings = settings or JobSettings()
    app = celery_app(settings)

    async def enqueue(job_id: str) -> None:
        await asyncio.to_thread(app.send_task, TASK, args=[job_id])

    return JobService(settings, JobStore.from_url(settings.redis_url, settings.retention_s), enqueue)
