"""WebSocket endpoint ``/ws/audio`` (protocol in docs/PROTOCOL.md)."""

from __future__ import annotations

import logging

from fastapi import APIRouter, WebSocket, WebSocketDisconnect

from edge.admission import SessionRefused
from edge.dependencies import (
    AdmissionDep,
    DrainDep,
    FairShareDep,
    InterimGateDep,
    KeyAdmissionDep,
    MetricsDep,
    OptionalIncidentsDep,
    OutageDep,
    PoolDep,
    PrincipalDep,
    SettingsDep,
)
from edge.session import Session
from moderation.protocol import ErrorEvent

logger = logging.getLogger(__name__)

router = APIRouter()

TRY_AGAIN_LATER = 1013
"""WebSocket close code for a refused session (RFC 6455 registry: Try Again Later)."""


@router.websocket("/ws/audio")
async def audio_socket(websocket: WebSocket, settings: SettingsDep, pool: PoolDep, metrics: MetricsDep,
                       admission: AdmissionDep, key_admission: KeyAdmissionDep, principal: PrincipalDep,
                       fair_share: FairShareDep, drain: DrainDep, outage: OutageDep,
                       interim_gate: InterimGateDep, incidents: OptionalIncidentsDep) -> None:
    # ``principal`` is resolved before this runs: a refused client never gets here (1008, HTTP 403).
    await websocket.accept()
    try:
        with drain.admit() as stop, key_admission.admit(principal.key if principal else None), admission.admit():
            session = Session(websocket, settings, pool, metrics, fair_share, stop, outage, interim_gate, incidents)
            logger.info("session %s opened", session.id)
            try:
                await session.run()
            finally:
                logger.info("session %s closed", session.id)
    except SessionRefused as refusal:  # the edge is full or draining, or this client's key is at its limit
        await refuse(websocket, refusal)


async def refuse(websocket: WebSocket, refusal: SessionRefused) -> None:
    """Tell the client why, typed, and close with 1013."""
    logger.info("refused a session: %s: %s", refusal.code.value, refusal)
    try:
        await websocket.send_text(ErrorEvent(code=refusal.code, message=str(refusal)).wire())
        await websocket.close(TRY_AGAIN_LATER)
    except (WebSocketDisconnect, RuntimeError, OSError):  # the client left first
        logger.info("refused client left before its refusal was sent")
