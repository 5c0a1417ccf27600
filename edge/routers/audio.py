"""WebSocket endpoint ``/ws/audio`` (protocol in docs/PROTOCOL.md)."""

from __future__ import annotations

import logging

from fastapi import APIRouter, WebSocket

from edge.protocol import ErrorCode, error_event
from edge.session import Session

logger = logging.getLogger(__name__)

router = APIRouter()


@router.websocket("/ws/audio")
async def audio_socket(websocket: WebSocket) -> None:
    state = websocket.app.state
    await websocket.accept()
    if state.open_sessions >= state.settings.max_sessions:
        await websocket.send_json(error_event(ErrorCode.SERVER_BUSY, "too many sessions on this edge, retry later"))
        await websocket.close(1013)
        return
    session = Session(websocket, state.settings, state.pool, state.metrics)
    state.open_sessions += 1
    state.metrics.active_sessions.inc()
    logger.info("session %s opened", session.id)
    try:
        await session.run()
    finally:
        state.open_sessions -= 1
        state.metrics.active_sessions.dec()
        logger.info("session %s closed", session.id)
