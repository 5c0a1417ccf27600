"""FastAPI application factory."""

from __future__ import annotations

import logging
from contextlib import asynccontextmanager

from fastapi import FastAPI

from edge.metrics import EdgeMetrics
from edge.routers import audio, health, metrics
from edge.settings import EdgeSettings
from edge.triton import TritonPool

logger = logging.getLogger(__name__)


def create_app(settings: EdgeSettings | None = None) -> FastAPI:
    settings = settings or EdgeSettings()

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        pool = TritonPool(settings.triton_urls(), settings.triton_model, settings.triton_timeout_s,
                          settings.triton_health_interval_s)
        await pool.start()
        app.state.pool = pool
        logger.info("edge up; Triton %s, ready: %s", settings.triton_urls(), sorted(pool.ready) or "none yet")
        try:
            yield
        finally:
            await pool.close()

    app = FastAPI(title="Speech moderation edge", lifespan=lifespan)
    app.state.settings = settings
    app.state.metrics = EdgeMetrics()
    app.state.open_sessions = 0
    for router in (audio.router, health.router, metrics.router):
        app.include_router(router)
    return app
