"""Typed FastAPI dependencies: how routers reach the app's settings, pool, metrics and admission."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends
from starlette.requests import HTTPConnection

from edge.admission import Admission
from edge.metrics import EdgeMetrics
from edge.settings import EdgeSettings
from edge.triton import ModerationPool


@dataclass(frozen=True)
class EdgeServices:
    """Everything one app instance shares between its connections; built by ``create_app``."""

    settings: EdgeSettings
    pool: ModerationPool
    metrics: EdgeMetrics
    admission: Admission


def get_services(connection: HTTPConnection) -> EdgeServices:
    services = getattr(connection.app.state, "services", None)
    if not isinstance(services, EdgeServices):
        raise RuntimeError("the app was not built by edge.app.create_app")
    return services


ServicesDep = Annotated[EdgeServices, Depends(get_services)]


def get_settings(services: ServicesDep) -> EdgeSettings:
    return services.settings


def get_pool(services: ServicesDep) -> ModerationPool:
    return services.pool


def get_metrics(services: ServicesDep) -> EdgeMetrics:
    return services.metrics


def get_admission(services: ServicesDep) -> Admission:
    return services.admission


SettingsDep = Annotated[EdgeSettings, Depends(get_settings)]
PoolDep = Annotated[ModerationPool, Depends(get_pool)]
MetricsDep = Annotated[EdgeMetrics, Depends(get_metrics)]
AdmissionDep = Annotated[Admission, Depends(get_admission)]
