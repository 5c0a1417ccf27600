"""FastAPI application factory."""

from __future__ import annotations

import logging
from contextlib import asynccontextmanager

from fastapi import FastAPI

from edge.admission import Admission, KeyAdmission
from edge.auth import authenticator, origin_policy
from edge.dependencies import Access, EdgeServices, OpsAccessDep
from edge.drain import Drain
from edge.fairness import FairShare
from edge.interim import InterimGate
from edge.metrics import EdgeMetrics
from edge.outage import OutageLimits, OutageWait
from edge.routers import audio, console, health, metrics, moderations, speakers, transcriptions
from edge.routers import incidents as incident_routes
from edge.routers import jobs as job_routes
from edge.settings import EdgeSettings
from jobs.service import JobService, celery_job_service
from moderation.incidents import Incidents
from moderation.triton import ModerationPool, triton_pool

logger = logging.getLogger(__name__)


def create_app(settings: EdgeSettings | None = None, pool: ModerationPool | None = None,
               jobs: JobService | None = None, incidents: Incidents | None = None) -> FastAPI:
    """The edge app; ``pool`` defaults to a TritonPool built from ``settings``, ``jobs`` (the batch
    job API's store and queue) to one on Celery and Redis when ``settings.jobs`` is on,
    ``incidents`` to a PostgreSQL store when ``settings.database_url`` is set. The app starts and
    closes them with its own lifespan. EdgeConfigError for authentication settings that
    cannot work (docs/SECURITY.md)."""
    settings = settings or EdgeSettings()
    pool = pool if pool is not None else triton_pool(settings)
    if jobs is None and settings.jobs:
        jobs = celery_job_service()
    edge_metrics = EdgeMetrics()
    edge_metrics.watch_pool(pool)  # per-replica state and retries, read at scrape time
    admission = Admission(settings.max_sessions, edge_metrics.active_sessions)
    access = Access(authenticator(settings), origin_policy(settings), KeyAdmission(settings.max_sessions_per_key))
    fair_share = FairShare(settings.bulk_max_in_flight, settings.bulk_session_max_in_flight,
                           settings.bulk_pause_realtime_sessions, settings.bulk_max_pause_s)
    drain = Drain.from_settings(settings, edge_metrics.registry)  # started by edge/__main__.py on SIGTERM
    outage = OutageWait(OutageLimits(settings.outage_wait_s, settings.outage_max_segments))
    edge_metrics.watch_outage(outage)
    if incidents is None:
        written, webhooks = edge_metrics.incidents.labels, edge_metrics.incident_webhooks.labels
        incidents = Incidents.from_settings(settings, written("dropped").inc, written("written").inc, edge=True,
                                            on_webhook=lambda outcome: webhooks(outcome).inc())
    services = EdgeServices(settings, pool, edge_metrics, admission, access, fair_share, drain, outage,
                            InterimGate(settings.interim_max_calls), jobs, incidents)

    @asynccontextmanager
    async def lifespan(_app: FastAPI):
        await pool.start()
        if incidents is not None:
            await incidents.start()
        logger.info("edge up; Triton %s", pool.servers)
        try:
            yield
        finally:
            await pool.close()  # once the calls of sessions that ended have (the pool never cancels one)
            if incidents is not None:
                await incidents.close()  # after writing what is queued (a bounded wait)
            if jobs is not None:
                await jobs.close()

    app = FastAPI(title="Speech moderation edge", lifespan=lifespan)
    app.state.services = services
    # /ops/status is guarded in its router
    for router in (audio.router, health.router, job_routes.router, transcriptions.router, moderations.router,
                   incident_routes.router, speakers.router, console.router):
        app.include_router(router)
    app.include_router(metrics.router, dependencies=[OpsAccessDep])  # /readyz is guarded in its router
    return app
