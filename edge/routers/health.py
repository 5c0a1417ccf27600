"""Liveness and readiness probes."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

router = APIRouter()


@router.get("/healthz")
async def healthz() -> dict:
    """The process is up and serving HTTP."""
    return {"status": "ok"}


@router.get("/readyz")
async def readyz(request: Request) -> JSONResponse:
    """Ready when at least one Triton server answers and has the ensemble ready."""
    pool = request.app.state.pool
    ready = sorted(await pool.refresh())
    body = {"status": "ready" if ready else "unavailable", "model": pool.model, "ready_servers": ready,
            "servers": list(pool.clients)}
    return JSONResponse(body, status_code=200 if ready else 503)
