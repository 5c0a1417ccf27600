"""The browser console (issue 12): ``/console`` streams the microphone or a tab's audio to
``/ws/audio`` and shows the results live; ``/console/ops`` polls ``/ops/status``, the edge's live
figures as JSON; ``/console/review`` is the moderators' incident queue (docs/INCIDENTS.md).
The pages are static files of the ``console`` package (no build step)."""

from __future__ import annotations

import logging
import os
import time
from typing import Literal

from fastapi import APIRouter
from fastapi.responses import FileResponse
from pydantic import BaseModel
from starlette.responses import Response
from starlette.staticfiles import StaticFiles
from starlette.types import Scope

from console import STATIC_DIR
from edge.dependencies import DrainDep, MetricsDep, OpsAccessDep, PoolDep
from edge.metrics import EdgeMetrics, bucket_quantile, histogram_buckets, labelled_totals
from moderation.protocol import WHISPER_LANGUAGES, Signal

logger = logging.getLogger(__name__)

router = APIRouter(tags=["console"])

STATIC_PREFIX = "/console/static"
JAVASCRIPT = "text/javascript; charset=utf-8"
"""RFC 9239's type for JavaScript: browsers refuse module scripts and worklets served otherwise
(text/plain, from a host's odd mime.types), so it is set here, not guessed."""
REVALIDATE = "no-cache"
"""The files are not content-hashed (no build step): browsers revalidate them (ETag) each load."""
PAGE_HEADERS = {
    "Cache-Control": REVALIDATE,
    # Same-origin scripts, styles and fetches, WebSockets to the edge, no framing (the pages ask
    # for the microphone: a framing site must not trick a click out of a user).
    # Clips play from blob: URLs (fetched with the credential, which an <audio src> cannot send).
    "Content-Security-Policy": "default-src 'self'; connect-src 'self' ws: wss:; media-src 'self' blob:; "
                               "base-uri 'none'; frame-ancestors 'none'; form-action 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}
DELIVERED_OUTCOMES = ("normal", "harmful", "error")
"""edge_segments outcomes that sent the client an event (``cancelled`` ones did not)."""
LATENCY_QUANTILES = {"p50": 0.5, "p95": 0.95}


class ConsoleStaticFiles(StaticFiles):
    """StaticFiles with JavaScript typed as such and revalidation instead of heuristic caching."""

    def file_response(self, full_path: str | os.PathLike[str], stat_result: os.stat_result, scope: Scope,
                      status_code: int = 200) -> Response:
        response = super().file_response(full_path, stat_result, scope, status_code)
        if str(full_path).endswith((".js", ".mjs")):
            response.headers["Content-Type"] = JAVASCRIPT
        response.headers["Cache-Control"] = REVALIDATE
        response.headers["X-Content-Type-Options"] = "nosniff"
        return response


class ConsoleLanguages(BaseModel):
    """What the console's language selector offers."""

    languages: list[str]
    """Whisper's language codes, sorted (moderation.protocol.WHISPER_LANGUAGES)."""
    default: str | None
    """The model's default language, or null while no Triton server has reported it."""


class ReplicaStatus(BaseModel):
    address: str
    ready: bool
    in_flight: int
    """This edge's calls in the replica now."""
    calls: int
    """Calls this edge has sent the replica so far."""


class LatencyStatus(BaseModel):
    """Segment latency since the edge started, estimated from edge_segment_latency_seconds's
    buckets (linear within a bucket, as Prometheus's histogram_quantile)."""

    p50_ms: float | None
    p95_ms: float | None
    count: int


class OpsStatus(BaseModel):
    """The edge's live figures for the operator page, from its metrics and its pool."""

    status: Literal["ready", "unavailable", "draining"]
    """As /readyz would say, from the pool's last health probes (none is made for this)."""
    time_s: float
    """The edge's clock (Unix seconds): the page derives rates from successive answers."""
    sessions: int
    """Open WebSocket sessions (edge_active_sessions)."""
    draining: bool
    segments: dict[str, int]
    """Segments by outcome: normal, harmful, error, cancelled (edge_segments)."""
    segments_total: int
    """Segments that got a result or an error event: normal + harmful + error."""
    errors: dict[str, int]
    """Counts by kind: ``triton:<reason>`` (failed Triton calls), ``client:<code>`` (bad client
    input) and ``session:<reason>`` (sessions the edge ended: timeouts)."""
    latency: LatencyStatus
    replicas: list[ReplicaStatus]
    signals: list[Signal]


def _counts(totals: dict[str, float]) -> dict[str, int]:
    return {label: int(value) for label, value in sorted(totals.items())}


def error_counts(metrics: EdgeMetrics) -> dict[str, int]:
    """Every error counter of the edge, keyed ``source:label``."""
    sources = {"triton": metrics.triton_errors, "client": metrics.client_errors, "session": metrics.session_timeouts}
    return {f"{source}:{label}": count for source, metric in sources.items()
            for label, count in _counts(labelled_totals(metric)).items()}


def latency_status(metrics: EdgeMetrics) -> LatencyStatus:
    buckets = histogram_buckets(metrics.segment_latency)
    estimates = {name: bucket_quantile(buckets, q) for name, q in LATENCY_QUANTILES.items()}
    as_ms = {name: None if s is None else round(s * 1000, 1) for name, s in estimates.items()}
    return LatencyStatus(p50_ms=as_ms["p50"], p95_ms=as_ms["p95"], count=int(buckets[-1][1]) if buckets else 0)


def page(name: str) -> FileResponse:
    return FileResponse(STATIC_DIR / name, media_type="text/html; charset=utf-8", headers=PAGE_HEADERS)


@router.get("/console", include_in_schema=False)
async def console_page() -> FileResponse:
    """The live console: capture, stream, results, bleep."""
    return page("index.html")


@router.get("/console/ops", include_in_schema=False)
async def ops_page() -> FileResponse:
    """The operator view; its figures come from /ops/status, guarded like /metrics."""
    return page("ops.html")


@router.get("/console/review", include_in_schema=False)
async def review_page() -> FileResponse:
    """The moderators' review page; its data come from the review API, with the moderator's credential."""
    return page("review.html")


@router.get("/console/languages.json")
async def console_languages(pool: PoolDep) -> ConsoleLanguages:
    """The language codes a config frame takes: public, as docs/PROTOCOL.md is."""
    return ConsoleLanguages(languages=sorted(WHISPER_LANGUAGES), default=pool.facts.default_language)


@router.get("/ops/status", dependencies=[OpsAccessDep])
async def ops_status(metrics: MetricsDep, pool: PoolDep, drain: DrainDep) -> OpsStatus:
    """Sessions, segments, errors, latency and replicas now; with authentication and ops_auth
    on, it needs a credential, like /readyz and /metrics."""
    replicas = [ReplicaStatus(address=r.address, ready=r.ready, in_flight=r.in_flight, calls=r.calls)
                for r in pool.replicas()]
    segments = _counts(labelled_totals(metrics.segments))
    status = "draining" if drain.draining else "ready" if any(r.ready for r in replicas) else "unavailable"
    return OpsStatus(status=status, time_s=time.time(), sessions=int(labelled_totals(metrics.active_sessions)[""]),
                     draining=drain.draining, segments=segments,
                     segments_total=sum(segments.get(outcome, 0) for outcome in DELIVERED_OUTCOMES),
                     errors=error_counts(metrics), latency=latency_status(metrics), replicas=replicas,
                     signals=list(pool.facts.signals))


router.mount(STATIC_PREFIX, ConsoleStaticFiles(directory=STATIC_DIR), name="console-static")
