"""Ops endpoints, and the edge's behaviour when Triton is down."""

from __future__ import annotations

import asyncio
import json

import pytest

from edge.client import stream
from moderation.protocol import ErrorEvent, SegmentEvent, SummaryEvent
from scripts.service.launch import free_port, http_get, running_edge
from scripts.speech import DIALOGUE


@pytest.fixture(scope="module")
def orphan_edge(tmp_path_factory):
    """An edge whose Triton address has nothing listening (Triton stopped)."""
    dead = f"127.0.0.1:{free_port()}"
    log_path = tmp_path_factory.mktemp("orphan") / "edge.log"
    with open(log_path, "wb") as log, \
            running_edge(free_port(), dead, log, triton_timeout_s=5, triton_health_interval_s=0.5) as edge:
        yield edge.address


def test_healthz_and_readyz_with_triton_up(edge):
    assert http_get(f"http://{edge}/healthz")[0] == 200
    status, body = http_get(f"http://{edge}/readyz")
    assert status == 200 and json.loads(body)["ready_servers"]


def test_metrics_expose_sessions_segments_latency_and_errors(edge, dialogue_wav):
    asyncio.run(stream(dialogue_wav, f"ws://{edge}/ws/audio", language="en"))
    status, body = http_get(f"http://{edge}/metrics")
    assert status == 200
    for name in ("edge_active_sessions", "edge_segments_total", "edge_segment_latency_seconds_bucket",
                 "edge_triton_errors_total", "edge_client_errors_total"):
        assert name in body, name
    assert 'edge_segments_total{outcome="normal"}' in body or 'edge_segments_total{outcome="harmful"}' in body


def test_readyz_is_503_when_triton_is_down(orphan_edge):
    assert http_get(f"http://{orphan_edge}/healthz")[0] == 200
    status, body = http_get(f"http://{orphan_edge}/readyz")
    assert status == 503 and json.loads(body)["status"] == "unavailable"


def test_segments_get_error_events_when_triton_is_down(orphan_edge, dialogue_wav):
    result = asyncio.run(asyncio.wait_for(stream(dialogue_wav, f"ws://{orphan_edge}/ws/audio", language="en"), 120))
    errors = result.of_type(ErrorEvent)
    assert [e.seq for e in errors] == list(range(len(DIALOGUE)))
    assert all(e.code == "triton_unavailable" for e in errors), errors
    assert isinstance(result.events[-1], SummaryEvent) and result.events[-1].failed_segments == len(DIALOGUE)
    _, body = http_get(f"http://{orphan_edge}/metrics")
    assert 'edge_triton_errors_total{reason="unavailable"}' in body


def test_edge_spreads_over_servers_and_skips_a_dead_one(triton, tmp_path, dialogue_wav):
    urls = f"127.0.0.1:{free_port()},{triton}"  # first server dead, second alive
    with open(tmp_path / "edge.log", "wb") as log, \
            running_edge(free_port(), urls, log, triton_health_interval_s=0.5) as edge:
        status, body = http_get(f"http://{edge.address}/readyz")
        assert status == 200 and json.loads(body)["ready_servers"] == [triton]
        result = asyncio.run(stream(dialogue_wav, f"ws://{edge.address}/ws/audio", language="en"))
    assert not result.of_type(ErrorEvent)
    assert len(result.of_type(SegmentEvent)) == len(DIALOGUE)


def test_sessions_over_the_limit_are_refused_with_1013(triton, tmp_path):
    import websockets

    async def scenario(edge):
        async with websockets.connect(f"ws://{edge}/ws/audio") as first:
            assert json.loads(await first.recv())["type"] == "ready"
            async with websockets.connect(f"ws://{edge}/ws/audio") as second:
                refusal = json.loads(await second.recv())
                await second.wait_closed()
                code = second.close_code
            await first.send(json.dumps({"type": "end"}))  # the first session is unaffected
            tail = [json.loads(m) async for m in first]
        return refusal, code, tail

    with open(tmp_path / "edge.log", "wb") as log, running_edge(free_port(), triton, log, max_sessions=1) as edge:
        refusal, code, tail = asyncio.run(scenario(edge.address))
    assert refusal["code"] == "server_busy" and code == 1013
    assert tail[-1]["type"] == "summary"
