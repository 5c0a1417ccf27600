"""``python -m jobs.worker``: a worker process of batch jobs, on the Celery app of jobs/queue.py.

    python -m jobs.worker                 # one worker, JOBS_WORKER_CONCURRENCY jobs at once
    REDIS_URL=redis://queue:6379/0 python -m jobs.worker   # any number, on any machine

Messages are acknowledged late (after the job) with a visibility timeout, so a job whose worker
died goes to another; a worker that starts also takes over running jobs whose lease expired,
and resumes them from their last finished segment.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import sys
import threading
import uuid

import redis
from celery import signals

from jobs import files
from jobs.handler import JobHandler
from jobs.metrics import JobMetrics
from jobs.models import JobState
from jobs.queue import QUEUE, TASK, celery_app
from jobs.settings import JobSettings
from jobs.store import WORKER_READY_KEY, JobStore
from moderation.triton import triton_pool

logger = logging.getLogger(__name__)

REDIS_RETRY_S = 10.0
"""A job whose run failed on Redis (or the data volume) goes back to the queue, due this much later."""
READY_KEY_TTL_S = 7 * 24 * 3600
"""The ready marker of a worker that died without removing it goes away after this long."""


SETTINGS = JobSettings()
app = celery_app(SETTINGS)
METRICS = JobMetrics()
STOPPING = threading.Event()
"""Set when this worker shuts down (SIGTERM): its jobs stop after the segments in flight and go
back to the queue, resumed by the next worker; nothing is cancelled mid-call (tritonserver 2.51
can crash on a cancelled gRPC call)."""


async def _handle(job_id: str) -> float | None:
    """One job with its own event loop's Redis and Triton clients (a task runs in asyncio.run)."""
    store = JobStore.from_url(SETTINGS.redis_url, SETTINGS.retention_s)
    pool = triton_pool(SETTINGS)
    await pool.start()
    worker_id = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
    try:
        retry_in_s = await JobHandler(worker_id, SETTINGS, store, pool, STOPPING, METRICS).handle(job_id)
        await _sweep(store)
        return retry_in_s
    finally:
        await pool.close()
        await store.close()


async def _sweep(store: JobStore) -> None:
    """Removes the files of jobs that expired meanwhile; best effort: it never costs a job."""
    try:
        files.sweep(SETTINGS.data_dir, set(await store.live_ids()))
    except (redis.RedisError, OSError) as exc:
        logger.warning("sweeping expired jobs' files failed: %s", exc)


@app.task(name=TASK, bind=True, max_retries=None)
def process(self, job_id: str) -> None:
    try:
        retry_in_s = asyncio.run(_handle(job_id))
    except (redis.RedisError, OSError) as exc:  # Redis or the data volume failed: the job stays due
        logger.warning("job %s: %s; trying again in %.0f s", job_id, exc, REDIS_RETRY_S)
        raise self.retry(countdown=REDIS_RETRY_S) from exc
    if retry_in_s is not None:
        logger.info("job %s: back to the queue, due in %.1f s", job_id, retry_in_s)
        raise self.retry(countdown=retry_in_s)


async def _recover() -> tuple[list[tuple[str, float]], list[str]]:
    """Jobs to take over (running, lease expired or expiring) and the ids Redis still holds."""
    store = JobStore.from_url(SETTINGS.redis_url, SETTINGS.retention_s)
    try:
        ids = await store.live_ids()
        takeover = []
        for job_id in ids:
            info = await store.get(job_id)
            if info is not None and info.state is JobState.RUNNING:
                holder, ttl_s = await store.lease_holder(job_id)
                takeover.append((job_id, ttl_s + 1.0 if holder else 0.0))
        return takeover, ids
    finally:
        await store.close()


@signals.worker_ready.connect
def on_worker_ready(sender=None, **_kwargs) -> None:
    """Takes over running jobs whose worker is gone, and removes the files of expired jobs."""
    METRICS.serve(SETTINGS.metrics_port)
    takeover, ids = asyncio.run(_recover())
    for job_id, countdown in takeover:
        logger.info("taking over job %s in %.1f s (its worker is gone or going)", job_id, countdown)
        process.apply_async((job_id,), countdown=countdown)
    files.sweep(SETTINGS.data_dir, set(ids))
    with redis.Redis.from_url(SETTINGS.redis_url) as client:
        client.set(WORKER_READY_KEY.format(pid=os.getpid()), socket.gethostname(), ex=READY_KEY_TTL_S)


@signals.worker_shutting_down.connect
def on_worker_shutting_down(**_kwargs) -> None:
    STOPPING.set()


@signals.worker_shutdown.connect
def on_worker_shutdown(sender=None, **_kwargs) -> None:
    try:
        with redis.Redis.from_url(SETTINGS.redis_url, socket_timeout=2) as client:
            client.delete(WORKER_READY_KEY.format(pid=os.getpid()))
    except redis.RedisError:
        pass  # Redis is gone; the key expires by itself


def main(argv: list[str] | None = None) -> None:
    # Threads: a job's work is Triton's; its thread waits on gRPC, and a SIGTERM reaches every job.
    app.worker_main(["worker", "--loglevel=INFO", "--pool=threads", f"--concurrency={SETTINGS.worker_concurrency}",
                     f"--queues={QUEUE}",
                     "--without-gossip", "--without-mingle", *(argv or [])])


if __name__ == "__main__":
    main(sys.argv[1:])
