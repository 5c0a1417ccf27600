"""Typed FastAPI dependencies: how routers reach the app's settings, pool, metrics and admission, and
who may use them (access control, docs/SECURITY.md)."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, HTTPException, Request, WebSocket, WebSocketException, status
from starlette.requests import HTTPConnection

from edge.admission import Admission, KeyAdmission
from edge.auth import Authenticator, AuthError, OriginPolicy, Principal, credential
from edge.drain import Drain
from edge.fairness import FairShare
from edge.interim import InterimGate
from edge.metrics import EdgeMetrics
from edge.outage import OutageWait
from edge.settings import EdgeSettings
from jobs.service import JobService
from moderation.incidents import Incidents
from moderation.triton import ModerationPool

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Access:
    """Who may connect: the authenticator, the browser origin policy and the per-key limit."""

    authenticator: Authenticator
    origins: OriginPolicy
    key_admission: KeyAdmission


@dataclass(frozen=True)
class EdgeServices:
    """Everything one app instance shares between its connections; built by ``create_app``."""

    settings: EdgeSettings
    pool: ModerationPool
    metrics: EdgeMetrics
    admission: Admission
    access: Access
    fair_share: FairShare
    drain: Drain
    outage: OutageWait
    """Segments waiting for a Triton server through an outage, edge-wide (edge/outage.py)."""
    interim_gate: InterimGate
    """Whether an interim call may start, edge-wide (edge/interim.py)."""
    jobs: JobService | None = None
    """The batch job API's store and queue; None when jobs are not served (EDGE_JOBS)."""
    incidents: Incidents | None = None
    """Where harmful segments are kept for moderators; None without DATABASE_URL."""


def get_services(connection: HTTPConnection) -> EdgeServices:
    services = getattr(connection.app.state, "services", None)
    if not isinstance(services, EdgeServices):
        raise RuntimeError("the app was not built by edge.app.create_app")
    return services


ServicesDep = Annotated[EdgeServices, Depends(get_services)]


def get_incidents(services: ServicesDep) -> Incidents:
    """The incident store, or 503 ``incidents_off`` when the edge keeps none (no DATABASE_URL)."""
    if services.incidents is None:
        raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE,
                            {"code": "incidents_off", "message": "this edge keeps no incidents: set DATABASE_URL"})
    return services.incidents


def get_optional_incidents(services: ServicesDep) -> Incidents | None:
    return services.incidents


IncidentsDep = Annotated[Incidents, Depends(get_incidents)]
OptionalIncidentsDep = Annotated[Incidents | None, Depends(get_optional_incidents)]


def get_settings(services: ServicesDep) -> EdgeSettings:
    return services.settings


def get_pool(services: ServicesDep) -> ModerationPool:
    return services.pool


def get_metrics(services: ServicesDep) -> EdgeMetrics:
    return services.metrics


def get_admission(services: ServicesDep) -> Admission:
    return services.admission


def get_fair_share(services: ServicesDep) -> FairShare:
    return services.fair_share


def get_drain(services: ServicesDep) -> Drain:
    return services.drain


def get_outage(services: ServicesDep) -> OutageWait:
    return services.outage


def get_interim_gate(services: ServicesDep) -> InterimGate:
    return services.interim_gate


SettingsDep = Annotated[EdgeSettings, Depends(get_settings)]
PoolDep = Annotated[ModerationPool, Depends(get_pool)]
MetricsDep = Annotated[EdgeMetrics, Depends(get_metrics)]
AdmissionDep = Annotated[Admission, Depends(get_admission)]
FairShareDep = Annotated[FairShare, Depends(get_fair_share)]
DrainDep = Annotated[Drain, Depends(get_drain)]
OutageDep = Annotated[OutageWait, Depends(get_outage)]
InterimGateDep = Annotated[InterimGate, Depends(get_interim_gate)]


def get_key_admission(services: ServicesDep) -> KeyAdmission:
    return services.access.key_admission


def _peer(connection: HTTPConnection) -> str:
    return connection.client.host if connection.client else "unknown"


def websocket_principal(websocket: WebSocket, services: ServicesDep) -> Principal | None:
    """The client of a WebSocket handshake, checked before it is accepted: a foreign browser
    Origin or a missing or bad credential closes it with 1008 (the client sees HTTP 403)."""
    origin = websocket.headers.get("origin")
    if not services.access.origins.allows(origin, websocket.headers.get("host")):
        logger.warning("refused a session from %s: origin %r is not allowed", _peer(websocket), origin)
        raise WebSocketException(status.WS_1008_POLICY_VIOLATION, "origin not allowed")
    try:
        return services.access.authenticator.authenticate(credential(websocket.headers, websocket.query_params))
    except AuthError as exc:
        logger.warning("refused a session from %s: %s", _peer(websocket), exc)
        raise WebSocketException(status.WS_1008_POLICY_VIOLATION, "authentication failed") from exc


def ops_access(request: Request, services: ServicesDep) -> None:
    """Guards /readyz and /metrics when ``ops_auth`` is on and authentication is on: 401 without
    a valid bearer credential."""
    if not services.settings.ops_auth:
        return
    try:
        services.access.authenticator.authenticate(credential(request.headers, request.query_params))
    except AuthError as exc:
        logger.warning("refused %s from %s: %s", request.url.path, _peer(request), exc)
        raise HTTPException(status.HTTP_401_UNAUTHORIZED, "authentication required",
                            headers={"WWW-Authenticate": "Bearer"}) from exc


def http_principal(request: Request, services: ServicesDep) -> Principal | None:
    """The client of an HTTP API call (the job API): 401 without a valid credential when
    authentication is on."""
    try:
        return services.access.authenticator.authenticate(credential(request.headers, request.query_params))
    except AuthError as exc:
        logger.warning("refused %s from %s: %s", request.url.path, _peer(request), exc)
        detail = {"code": "unauthorized", "message": "authentication required"}
        raise HTTPException(status.HTTP_401_UNAUTHORIZED, detail, headers={"WWW-Authenticate": "Bearer"}) from exc


KeyAdmissionDep = Annotated[KeyAdmission, Depends(get_key_admission)]
PrincipalDep = Annotated[Principal | None, Depends(websocket_principal)]
HttpPrincipalDep = Annotated[Principal | None, Depends(http_principal)]
OpsAccessDep = Depends(ops_access)
"""For ``dependencies=[OpsAccessDep]`` of the ops routes."""
