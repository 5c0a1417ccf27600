"""Liveness and readiness probes."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from edge.dependencies import DrainDep, OpsAccessDep, PoolDep, SettingsDep

router = APIRouter()


@router.get("/healthz")
async def healthz() -> dict:
    """The process is up and serving HTTP; always open, even with ``ops_auth``."""
    return {"status": "ok"}


@router.get("/readyz", dependencies=[OpsAccessDep])
async def readyz(pool: PoolDep, drain: DrainDep, settings: SettingsDep) -> JSONResponse:
    """Ready when at least one Triton server answers and has the model ready, and the edge is not
    draining (edge/drain.py); with authentication and ``ops_auth`` on, it needs a credential. It
    says which signals decide verdicts, and the classifier's threshold when it is one."""
    if drain.draining:  # not ready whatever Triton says: the load balancer must stop sending clients
        body = {"status": "draining", "model": pool.model, "open_sessions": drain.open_sessions}
        return JSONResponse(body, status_code=503)
    ready = sorted(await pool.refresh())
    body = {"status": "ready" if ready else "unavailable", "model": pool.model, "ready_servers": ready,
            "servers": pool.servers, "signals": list(pool.facts.signals)}
    if "classifier" in pool.facts.signals:
        body["classifier_threshold"] = pool.facts.threshold(settings.harmful_threshold)
    return JSONResponse(body, status_code=200 if ready else 503)
