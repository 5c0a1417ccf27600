"""Bad input through the real uvicorn edge and Triton: typed errors, backpressure, aborts.

The text-frame cases that need no Triton are in tests/unit/test_app.py."""

from __future__ import annotations

import asyncio
import json
import re
import time

import numpy as np
import pytest
import websockets

from scripts.service.launch import http_get
from scripts.speech import DIALOGUE, pcm16, read_wav

METRICS_WAIT_S = 30
"""How long to wait for the edge to finish tearing down an aborted session."""


async def open_session(edge):
    ws = await websockets.connect(f"ws://{edge}/ws/audio", max_size=None)
    ready = json.loads(await ws.recv())
    assert ready["type"] == "ready"
    return ws


async def next_event(ws, timeout: float = 60) -> dict:
    return json.loads(await asyncio.wait_for(ws.recv(), timeout))


async def end_and_collect(ws) -> list[dict]:
    await ws.send(json.dumps({"type": "end"}))
    events = [json.loads(m) async for m in ws]
    assert ws.close_code == 1000
    return events


def run(coro):
    return asyncio.run(coro)


def test_config_after_audio_is_rejected(edge):
    async def scenario():
        ws = await open_session(edge)
        await ws.send(pcm16(np.zeros(1600, np.float32)))
        await ws.send(json.dumps({"type": "config", "sample_rate": 8000}))
        error = await next_event(ws)
        return error, await end_and_collect(ws)

    error, tail = run(scenario())
    assert error["code"] == "config_after_audio"
    assert tail[-1]["type"] == "summary" and tail[-1]["audio_seconds"] == pytest.approx(0.1)


def test_oversized_frame_is_refused_and_the_session_goes_on(edge, dialogue_wav):
    # The test edge runs with EDGE_MAX_FRAME_BYTES=65536.
    speech = pcm16(read_wav(dialogue_wav))

    async def scenario():
        ws = await open_session(edge)
        await ws.send(b"\0" * 65538)
        error = await next_event(ws)
        for offset in range(0, len(speech), 32000):
            await ws.send(speech[offset:offset + 32000])
        return error, await end_and_collect(ws)

    error, tail = run(scenario())
    assert error["code"] == "frame_too_large" and "65538" in error["message"]
    assert len([e for e in tail if e["type"] == "segment"]) == len(DIALOGUE)


TRANSPORT_LIMIT = 2 * 65536
"""uvicorn's ws_max_size on the test edge: twice its EDGE_MAX_FRAME_BYTES (edge/__main__.py)."""


def test_frames_up_to_the_transport_limit_get_frame_too_large_and_bigger_ones_close_1009(edge):
    async def scenario():
        ws = await open_session(edge)
        await ws.send(b"\0" * TRANSPORT_LIMIT)  # over max_frame_bytes, at the transport limit
        too_large = await next_event(ws)
        await ws.send(b"\0" * 640)
        await ws.send(json.dumps({"type": "config", "sample_rate": 8000}))
        still_serving = await next_event(ws)  # the session went on: the small frame was audio
        await ws.send(b"\0" * (TRANSPORT_LIMIT + 1))
        with pytest.raises(websockets.ConnectionClosedError):
            await next_event(ws)
        return too_large, still_serving, ws.close_code

    too_large, still_serving, close_code = run(scenario())
    assert too_large["code"] == "frame_too_large" and str(TRANSPORT_LIMIT) in too_large["message"]
    assert still_serving["code"] == "config_after_audio"
    assert close_code == 1009
    wait_for_metric(edge, "edge_active_sessions", "", lambda v: v == 0)


def test_audio_faster_than_real_time_is_queued_not_dropped(edge, dialogue_wav):
    # Four dialogues back to back, sent as fast as the socket takes them: more segments than
    # the per-session in-flight limit, so the edge must push back rather than drop.
    speech = pcm16(np.tile(read_wav(dialogue_wav), 4))

    async def scenario():
        ws = await open_session(edge)
        await ws.send(json.dumps({"type": "config", "language": "en"}))
        for offset in range(0, len(speech), 640):
            await ws.send(speech[offset:offset + 640])
        return await end_and_collect(ws)

    events = run(scenario())
    segments = [e for e in events if e["type"] == "segment"]
    assert [s["seq"] for s in segments] == list(range(4 * len(DIALOGUE)))
    assert not [e for e in events if e["type"] == "error"]
    assert events[-1]["segments"] == 4 * len(DIALOGUE)


def metric(edge: str, name: str, labels: str = "") -> float:
    status, body = http_get(f"http://{edge}/metrics")
    assert status == 200
    match = re.search(rf"^{re.escape(name + labels)} (\S+)$", body, re.M)
    return float(match.group(1)) if match else 0.0


def wait_for_metric(edge: str, name: str, labels: str, predicate) -> float:
    deadline = time.monotonic() + METRICS_WAIT_S
    while time.monotonic() < deadline:
        value = metric(edge, name, labels)
        if predicate(value):
            return value
        time.sleep(0.1)  # polling the scrape endpoint until the condition holds
    raise AssertionError(f"{name}{labels} never satisfied the condition (last {value})")


def test_client_disconnecting_mid_segment_frees_its_session(edge, dialogue_wav):
    speech = pcm16(read_wav(dialogue_wav)[: 5 * 16000])  # first sentence, its pause, part of the second
    cancelled_before = metric(edge, "edge_segments_total", '{outcome="cancelled"}')

    async def scenario():
        ws = await open_session(edge)
        await ws.send(json.dumps({"type": "config", "language": "en"}))
        await next_event(ws)
        for offset in range(0, len(speech), 640):
            await ws.send(speech[offset:offset + 640])
        await ws.close()

    run(scenario())
    wait_for_metric(edge, "edge_active_sessions", "", lambda v: v == 0)
    assert metric(edge, "edge_segments_total", '{outcome="cancelled"}') >= cancelled_before + 1
    # The server is unharmed: a new session works end to end.
    async def fresh():
        ws = await open_session(edge)
        return await end_and_collect(ws)

    assert run(fresh())[-1]["type"] == "summary"
