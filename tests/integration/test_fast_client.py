"""A client far faster than real time, on the real uvicorn edge and Triton: held back, never cut off.

The probe's defect: backpressure stopped reading the socket, so the client's pong waited behind
megabytes of buffered audio, uvicorn's keepalive closed the session with 1011 after 20 s, no
summary came, and the session leaked. Keepalive pings no longer time out a session (the edge's
idle timeout and a failed send end dead ones), and a session whose results cannot be sent ends.
"""

from __future__ import annotations

import asyncio
import json

import numpy as np
import websockets

from loadtest.flood import FAIRNESS_OFF
from scripts.service.launch import free_port, running_edge
from scripts.speech import DIALOGUE, pcm16, read_wav
from tests.integration.test_edge_bad_input import wait_for_metric

DIALOGUES = 8
"""About 95 s of speech, 24 segments: far more audio than Triton moderates in uvicorn's old 20 s
ping timeout on two CPU cores, all of it buffered ahead of the client's pong."""
FRAME_BYTES = 640
RESULT_WAIT_S = 300


async def upload_fast(address: str, speech: bytes) -> tuple[list[dict], int | None]:
    """Every frame as fast as the socket takes it, then end; the events up to the close."""
    events = []
    try:
        async with websockets.connect(f"ws://{address}/ws/audio", max_size=None) as ws:
            await ws.send(json.dumps({"type": "config", "language": "en"}))
            for offset in range(0, len(speech), FRAME_BYTES):
                await ws.send(speech[offset:offset + FRAME_BYTES])
            await ws.send(json.dumps({"type": "end"}))
            events += [json.loads(m) async for m in ws]
    except websockets.ConnectionClosed as closed:
        return events, closed.rcvd.code if closed.rcvd else None
    return events, ws.close_code


def test_a_fast_client_gets_every_result_and_its_summary(triton, dialogue_wav, tmp_path):
    speech = pcm16(np.tile(read_wav(dialogue_wav), DIALOGUES))
    # Pings every second, so many fall into the time the edge holds the client back.
    with open(tmp_path / "edge.log", "wb") as log, \
            running_edge(free_port(), triton, log, triton_timeout_s=120, ws_ping_interval_s=1) as edge:
        events, code = asyncio.run(asyncio.wait_for(upload_fast(edge.address, speech), RESULT_WAIT_S))
        wait_for_metric(edge.address, "edge_active_sessions", "", lambda value: value == 0)
    results = [e for e in events if e["type"] in ("segment", "error") and "seq" in e]
    assert [r["seq"] for r in results] == list(range(len(results))) and len(results) >= DIALOGUES * len(DIALOGUE)
    assert events[-1]["type"] == "summary" and code == 1000, (events[-3:], code)


def test_a_session_cut_off_mid_backpressure_is_released(triton, dialogue_wav, tmp_path):
    # The old behaviour on purpose (a 5 s ping timeout, shorter than the time the client is held
    # back): the connection is lost while results are pending, and the session must still end.
    # Fairness off (FAIRNESS_OFF): all 16 pending segments go to Triton at once and come back
    # together after a long batch, so the client is held back well past the ping timeout; a bulk
    # session's results come one by one, which lets the pong through in time.
    speech = pcm16(np.tile(read_wav(dialogue_wav), DIALOGUES))
    with open(tmp_path / "edge.log", "wb") as log, running_edge(
            free_port(), triton, log, triton_timeout_s=120, ws_ping_interval_s=1, ws_ping_timeout_s=5,
            **FAIRNESS_OFF) as edge:
        _, code = asyncio.run(asyncio.wait_for(upload_fast(edge.address, speech), RESULT_WAIT_S))
        wait_for_metric(edge.address, "edge_active_sessions", "", lambda value: value == 0)
    assert code == 1011  # the keepalive timeout the defaults no longer have
