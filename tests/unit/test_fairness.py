"""Fairness between sessions (edge/fairness.py): who is bulk, and the shares bulk calls wait for."""

from __future__ import annotations

import asyncio

import pytest
from fastapi.testclient import TestClient
from tritonclient.utils import InferenceServerException

from edge.app import create_app
from edge.fairness import FairShare, Pace
from edge.settings import EdgeSettings
from moderation.protocol import SERVER_EVENTS, ErrorCode, SegmentEvent
from moderation.triton import Priority, _classify
from tests.unit.fakes import FakePool
from tests.unit.test_app import DIALOGUE_PCM, REALTIME_LEAD_S, end, ready, send_audio, until_close


def test_a_stream_at_real_time_stays_realtime_and_one_ahead_of_it_becomes_bulk():
    pace = Pace(bulk_lead_s=2.0)
    pace.on_audio(100.0)
    assert pace.priority(audio_s=10.0, now=109.98) is Priority.REALTIME  # 10 s sent over 10 s
    assert pace.priority(audio_s=12.0, now=110.0) is Priority.REALTIME  # a 2 s burst after a stall: at the limit
    assert pace.priority(audio_s=12.5, now=110.0) is Priority.BULK
    assert pace.lead_s(audio_s=30.0, now=110.0) == pytest.approx(20.0)


def test_a_resuming_client_may_send_its_backlog_at_once_but_an_upload_stays_bulk():
    resumed, upload = Pace(bulk_lead_s=2.0), Pace(bulk_lead_s=2.0)
    for pace in (resumed, upload):
        pace.on_audio(0.0)
    assert resumed.priority(audio_s=6.0, now=0.1) is Priority.REALTIME  # 6 s captured while reconnecting
    assert resumed.priority(audio_s=66.0, now=60.0) is Priority.REALTIME  # then real time again
    assert upload.priority(audio_s=30.0, now=1.0) is Priority.BULK  # far more than a backlog at once
    assert upload.priority(audio_s=60.0, now=3.0) is Priority.BULK


def test_a_stall_earns_no_credit_beyond_real_time():
    pace = Pace(bulk_lead_s=2.0)
    pace.on_audio(0.0)
    # 60 s of wall time with only 10 s of audio, then 40 s sent at once: still behind the clock.
    assert pace.priority(audio_s=50.0, now=60.0) is Priority.REALTIME


async def _record_calls(share: FairShare, calls: list[tuple[Priority, asyncio.Semaphore]]) -> list[int]:
    """Run the calls under ``share`` with all of them trying to start at once; the number of
    calls in progress as each one started."""
    running, seen = 0, []
    gate = asyncio.Event()

    async def call(priority: Priority, session_share: asyncio.Semaphore) -> None:
        nonlocal running
        async with share.call(priority, session_share):
            running += 1
            seen.append(running)
            await gate.wait()
            running -= 1

    tasks = [asyncio.create_task(call(p, s)) for p, s in calls]
    await asyncio.sleep(0)  # every call has tried to start
    started = list(seen)
    gate.set()
    await asyncio.gather(*tasks)
    return started


def test_one_bulk_session_has_one_call_at_a_time_and_realtime_calls_never_wait():
    async def scenario():
        share = FairShare(bulk_max_in_flight=4, bulk_session_max_in_flight=1)
        bulk, realtime = share.session_share(), share.session_share()
        calls = [(Priority.BULK, bulk)] * 3 + [(Priority.REALTIME, realtime)] * 3
        return await _record_calls(share, calls)

    assert asyncio.run(scenario()) == [1, 2, 3, 4]  # one bulk call, then all three real-time ones


def test_bulk_sessions_together_stay_within_the_edge_wide_share():
    async def scenario():
        share = FairShare(bulk_max_in_flight=2, bulk_session_max_in_flight=2)
        sessions = [share.session_share() for _ in range(3)]
        return await _record_calls(share, [(Priority.BULK, s) for s in sessions for _ in range(2)])

    assert asyncio.run(scenario()) == [1, 2]


def test_a_burst_sender_is_bulk_one_call_at_a_time_and_loses_nothing():
    pool = FakePool(latency_s=0.01)
    with TestClient(create_app(EdgeSettings(bulk_session_max_in_flight=1), pool=pool)) as app, \
            app.websocket_connect("/ws/audio") as ws:
        ready(ws)
        send_audio(ws, DIALOGUE_PCM * 3)
        events, code = end(ws)
        metrics = app.get("/metrics").text
    assert [s.seq for s in events if isinstance(s, SegmentEvent)] == list(range(9)) and code == 1000
    assert pool.peak_bulk_in_flight == 1
    # Sent in an instant: the first MAX_RESUME_BACKLOG_S (a resuming client's backlog) and
    # bulk_lead_s more are forgiven; every segment past them is bulk.
    priorities = [c.priority for c in pool.calls]
    realtime = priorities.count(Priority.REALTIME)
    assert priorities == [Priority.REALTIME] * realtime + [Priority.BULK] * (9 - realtime) and realtime <= 4
    assert 'edge_segment_priority_total{priority="bulk"}' in metrics


def test_a_request_that_expired_in_tritons_queue_is_a_timeout_not_a_lost_server():
    exc = InferenceServerException("in ensemble 'ensemble', Request timeout expired", status="StatusCode.UNAVAILABLE")
    error = _classify(exc)
    assert (error.code, error.reason) == (ErrorCode.TRITON_TIMEOUT, "expired_in_queue")
    lost = _classify(InferenceServerException("failed to connect to all addresses", status="StatusCode.UNAVAILABLE"))
    assert (lost.code, lost.reason) == (ErrorCode.TRITON_UNAVAILABLE, "unavailable")


@pytest.mark.parametrize(("pause_at", "bulk_waits"), [(1, True), (2, False), (0, False)])
def test_a_bulk_call_waits_while_realtime_sessions_are_active(pause_at, bulk_waits):
    async def scenario():
        share = FairShare(bulk_max_in_flight=2, bulk_session_max_in_flight=1, bulk_pause_realtime_sessions=pause_at)
        order = []

        async def bulk():
            async with share.call(Priority.BULK, share.session_share()):
                order.append("bulk")

        share.set_realtime_active("live", True)  # speaking, or awaiting its result
        waiting = asyncio.create_task(bulk())
        await asyncio.wait({waiting}, timeout=0.05)
        order.append("live quiet")
        share.set_realtime_active("live", False)
        await waiting
        return order

    assert asyncio.run(scenario()) == (["live quiet", "bulk"] if bulk_waits else ["bulk", "live quiet"])


def test_a_realtime_session_is_active_while_speaking_or_awaiting_a_result_and_never_after_it_ends():
    pool = FakePool(gated=True)
    with TestClient(create_app(EdgeSettings(bulk_lead_s=REALTIME_LEAD_S), pool=pool)) as app, \
            app.websocket_connect("/ws/audio") as ws:
        share = app.app.state.services.fair_share
        ready(ws)
        send_audio(ws, DIALOGUE_PCM[:len(DIALOGUE_PCM) // 6])  # into the first sentence
        ws.send_text('{"type": "config"}')  # answered (config_after_audio) once the frames before it are handled
        assert SERVER_EVENTS.validate_json(ws.receive_text()).code == ErrorCode.CONFIG_AFTER_AUDIO
        speaking = share.active_realtime_sessions
        ws.send_text('{"type": "end"}')
        app.portal.call(pool.wait_in_flight, 1)
        awaiting = share.active_realtime_sessions
        app.portal.call(pool.open_gate)
        until_close(ws)
    assert (speaking, awaiting, share.active_realtime_sessions) == (1, 1, 0)


def test_live_speech_that_never_pauses_slows_bulk_calls_but_does_not_starve_them():
    async def scenario():
        share = FairShare(bulk_max_in_flight=1, bulk_session_max_in_flight=1, bulk_max_pause_s=0.05)
        share.set_realtime_active("live", True)  # and it stays active
        loop = asyncio.get_running_loop()
        started = loop.time()
        async with share.call(Priority.BULK, share.session_share()):
            return loop.time() - started

    assert 0.05 <= asyncio.run(scenario()) < 1.0
