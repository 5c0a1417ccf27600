"""Prometheus scrape endpoint."""

from __future__ import annotations

from fastapi import APIRouter, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from edge.dependencies import MetricsDep

router = APIRouter()


@router.get("/metrics")
async def metrics(edge_metrics: MetricsDep) -> Response:
    return Response(generate_latest(edge_metrics.registry), media_type=CONTENT_TYPE_LATEST)
