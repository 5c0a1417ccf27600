"""Draining on SIGTERM with a fake pool: not ready and refusing at once, sessions ended by
themselves or stopped after the grace period (results, summary, server_shutdown, 1012), the
server's signal handling, and the reference client going on in a new session after 1012."""

from __future__ import annotations

import asyncio
import signal
import threading
import time

import numpy as np
import pytest
import uvicorn
from fastapi.testclient import TestClient
from prometheus_client import CollectorRegistry

from edge.__main__ import DrainingServer
from edge.app import create_app
from edge.client import AudioFeed, Backoff, SessionPart, WavAudio, stream
from edge.drain import Drain
from edge.settings import EdgeSettings
from moderation.protocol import (
    ErrorCode,
    ErrorEvent,
    ReadyEvent,
    SegmentEvent,
    SummaryEvent,
)
from scripts.service.launch import free_port
from scripts.speech import DIALOGUE, DIALOGUE_WAV, SAMPLE_RATE, speech_times
from tests.unit.fakes import FakePool
from tests.unit.test_app import (
    DIALOGUE_PCM,
    REALTIME_LEAD_S,
    client,
    next_event,
    send_audio,
    until_close,
)

BYTES_PER_S = 2 * SAMPLE_RATE
WAIT_S = 10
"""Failure detection only: what has not happened by then never will."""
SENTENCE_EDGE_S = 0.25
"""Of each sentence's synthesised speech, the quiet onset and tail the VAD may leave out of its segment."""
FAST_BACKOFF = Backoff(initial_s=0.05, max_s=0.5, max_attempts=20)
"""Reconnection waits for the in-process edges of these tests, which come back in well under a second."""


def start_drain(app: TestClient) -> asyncio.Task:
    """``Drain.start()`` in the app's loop, as the signal handler's callback calls it; the drain's task."""
    async def start() -> asyncio.Task:  # a coroutine: the portal awaits it, not the task it returns
        return app.app.state.services.drain.start()
    return app.portal.call(start)


async def finished(task: asyncio.Task) -> None:
    await asyncio.wait_for(task, WAIT_S)


def all_read(ws) -> None:
    """Return once the session has read every frame sent so far: it answers frames in order, and
    this one with an error."""
    ws.send_text('{"type": "dance"}')
    assert next_event(ws).code == ErrorCode.UNKNOWN_MESSAGE


def test_a_draining_edge_is_not_ready_and_refuses_new_sessions_typed_with_1013():
    with client(FakePool()) as app:
        assert app.get("/readyz").status_code == 200
        task = start_drain(app)
        ready = app.get("/readyz")
        with app.websocket_connect("/ws/audio") as ws:
            refusal, code = until_close(ws)
        app.portal.call(finished, task)  # no session was open: over at once
        metrics, health = app.get("/metrics").text, app.get("/healthz")
    assert ready.status_code == 503 and ready.json()["status"] == "draining"
    assert [(e.code, e.seq) for e in refusal] == [(ErrorCode.SERVER_DRAINING, None)] and code == 1013
    assert health.status_code == 200  # alive all the same: not restarted while it drains
    assert "edge_draining 1.0" in metrics and "edge_active_sessions 0.0" in metrics


def test_a_session_still_open_after_the_grace_period_gets_its_results_summary_then_server_shutdown_and_1012():
    pool = FakePool(gated=True)
    speech = speech_times(DIALOGUE_WAV)
    cut_s = (speech[2][0] + speech[2][1]) / 2  # in the middle of the last sentence: an open segment
    with client(pool, drain_grace_s=0, bulk_lead_s=REALTIME_LEAD_S) as app:
        with app.websocket_connect("/ws/audio") as ws:
            assert isinstance(next_event(ws), ReadyEvent)
            send_audio(ws, DIALOGUE_PCM[:int(cut_s * SAMPLE_RATE) * 2])
            all_read(ws)
            app.portal.call(pool.wait_in_flight, 2)  # two closed segments in flight, held by the gate
            task = start_drain(app)
            ready = app.get("/readyz").json()
            with app.websocket_connect("/ws/audio") as refused:
                refusal, refused_code = until_close(refused)
            app.portal.call(pool.open_gate)
            events, code = until_close(ws)
        app.portal.call(finished, task)
        metrics = app.get("/metrics").text
    assert ready["status"] == "draining" and ready["open_sessions"] == 1
    assert refusal[0].code == ErrorCode.SERVER_DRAINING and refused_code == 1013
    assert [type(e) for e in events] == [SegmentEvent] * 3 + [SummaryEvent, ErrorEvent] and code == 1012
    segments, summary, shutdown = events[:3], events[3], events[4]
    assert [s.seq for s in segments] == [0, 1, 2] and segments[2].end_s == pytest.approx(cut_s, abs=0.05)
    assert (summary.segments, summary.failed_segments) == (3, 0)
    assert summary.audio_seconds == pytest.approx(cut_s, abs=1e-3)
    assert shutdown.code == ErrorCode.SERVER_SHUTDOWN and shutdown.seq is None
    assert "edge_active_sessions 0.0" in metrics and "edge_drain_stopped_sessions_total 1.0" in metrics


def test_a_session_that_ends_within_the_grace_period_ends_as_usual():
    with client(FakePool(), drain_grace_s=60) as app:
        with app.websocket_connect("/ws/audio") as ws:
            assert isinstance(next_event(ws), ReadyEvent)
            send_audio(ws, DIALOGUE_PCM)
            task = start_drain(app)
            assert app.get("/readyz").status_code == 503
            ws.send_text('{"type": "end"}')
            events, code = until_close(ws)
        app.portal.call(finished, task)  # over once the session is, long before its grace period
        metrics = app.get("/metrics").text
    assert [type(e) for e in events] == [SegmentEvent] * len(DIALOGUE) + [SummaryEvent] and code == 1000
    assert "edge_active_sessions 0.0" in metrics and "edge_drain_stopped_sessions_total 0.0" in metrics


def test_a_session_stopped_before_any_audio_ends_at_once():
    with client(FakePool(), drain_grace_s=0) as app:
        with app.websocket_connect("/ws/audio") as ws:
            assert isinstance(next_event(ws), ReadyEvent)
            task = start_drain(app)
            events, code = until_close(ws)
        app.portal.call(finished, task)
    assert [type(e) for e in events] == [SummaryEvent, ErrorEvent] and code == 1012
    assert events[0].segments == 0 and events[1].code == ErrorCode.SERVER_SHUTDOWN


def draining_server(drain: Drain) -> DrainingServer:
    server = DrainingServer(uvicorn.Config(create_app(EdgeSettings(), pool=FakePool())), drain)
    server.config.load()  # as uvicorn's serve() does first
    return server


async def drain_started(server: DrainingServer) -> asyncio.Task:
    """The drain task, once the signal's loop callback has made it (it runs on the next loop turn)."""
    while server.drain_task is None:
        await asyncio.sleep(0)
    return server.drain_task


def test_the_first_signal_drains_and_only_then_lets_uvicorn_shut_down():
    async def scenario():
        drain = Drain(grace_s=60, finish_s=1, registry=CollectorRegistry())
        server = draining_server(drain)
        server.started = True
        with drain.admit() as stop:  # one open session
            server.handle_exit(signal.SIGTERM, None)
            task = await drain_started(server)
            during = drain.draining, await server.on_tick(1)
        await asyncio.wait_for(task, WAIT_S)  # the session ended by itself within the grace period
        return during, stop.done(), await server.on_tick(2), server.force_exit

    (draining, exiting_while_draining), stopped, exiting, forced = asyncio.run(scenario())
    assert draining and not exiting_while_draining
    assert not stopped and exiting and not forced


def test_a_second_signal_shuts_down_at_once_and_one_during_startup_is_uvicorns():
    async def scenario():
        drain = Drain(grace_s=60, finish_s=1, registry=CollectorRegistry())
        early = draining_server(drain)
        early.handle_exit(signal.SIGTERM, None)  # before startup: no drain
        server = draining_server(drain)
        server.started = True
        with drain.admit():
            server.handle_exit(signal.SIGTERM, None)
            task = await drain_started(server)
            server.handle_exit(signal.SIGTERM, None)
            second = await server.on_tick(1), task.done()
        return early.should_exit, early.drain_task, second

    early_exit, early_task, (exiting, drained) = asyncio.run(scenario())
    assert early_exit and early_task is None
    assert exiting and not drained  # uvicorn's shutdown starts with the session still open


def test_a_new_session_goes_on_from_the_summarys_audio_seconds():
    audio = WavAudio(bytes(BYTES_PER_S * 10), SAMPLE_RATE, 1, "pcm_s16le")
    feed = AudioFeed(audio, realtime=False)
    feed.position, feed.sent = 32000, 6 * BYTES_PER_S  # the session began at 1 s and was sent up to 6 s
    summary = SummaryEvent(session_id="s", segments=0, harmful_segments=0, failed_segments=0, audio_seconds=3.5,
                           p50_latency_ms=None, p95_latency_ms=None)
    stopped = SessionPart(1.0, [ReadyEvent(session_id="s", sample_rate=SAMPLE_RATE, encoding="pcm_s16le", channels=1,
                                           language="ko", max_frame_bytes=1 << 20, signals=[]), summary], 1012)
    feed.go_on_after(stopped)
    assert feed.position_s == 4.5  # read up to 4.5 s: what was sent after it goes again
    feed.go_on_after(SessionPart(4.5, [ErrorEvent(code=ErrorCode.SERVER_DRAINING, message="m")], 1013))
    assert feed.position_s == 4.5  # a refused session read nothing


def test_backoff_grows_to_its_cap_with_jitter_below_each_step():
    backoff = Backoff()
    for attempt, step in [(1, 0.5), (2, 1.0), (3, 2.0), (5, 8.0), (6, 10.0), (12, 10.0)]:
        delays = [backoff.delay_s(attempt) for _ in range(50)]
        assert all(step * (1 - backoff.jitter) <= d <= step for d in delays) and len(set(delays)) > 1


class ThreadEdge:
    """The edge served by uvicorn (DrainingServer) in a thread of this process, on its own loop."""

    def __init__(self, port: int, pool: FakePool, **settings):
        app = create_app(EdgeSettings(**settings), pool=pool)
        config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning")
        self.server = DrainingServer(config, app.state.services.drain)
        self.loop: asyncio.AbstractEventLoop | None = None
        self.thread = threading.Thread(target=asyncio.run, args=(self._serve(),), daemon=True)

    async def _serve(self) -> None:
        self.loop = asyncio.get_running_loop()
        await self.server.serve()

    def start(self) -> ThreadEdge:
        self.thread.start()
        deadline = time.monotonic() + WAIT_S
        while not self.server.started:  # polling uvicorn's startup, with a deadline
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise TimeoutError("the in-process edge did not start")
            time.sleep(0.01)
        return self

    def call(self, function, *args):
        """``function(*args)`` in the edge's loop (awaited if it returns a coroutine); its result."""
        async def run():
            result = function(*args)
            return await result if asyncio.iscoroutine(result) else result
        return asyncio.run_coroutine_threadsafe(run(), self.loop).result(WAIT_S)

    def signal_and_wait(self, pool: FakePool) -> None:
        """SIGTERM's entry point (in the loop, as the signal handler's callback runs), then the
        gate opened; returns once uvicorn has shut down."""
        self.call(self.server.handle_exit, signal.SIGTERM, None)
        self.call(pool.open_gate)
        self.thread.join(WAIT_S)
        if self.thread.is_alive():
            raise TimeoutError("the drained edge did not shut down")


def covered(spans: list[tuple[float, float]], start: float, end: float, step_s: float = 0.01) -> bool:
    """Every point of [start, end] lies in one of ``spans``."""
    return all(any(s <= t <= e for s, e in spans) for t in np.arange(start, end, step_s))


def test_the_client_goes_on_in_a_new_session_after_1012_and_all_speech_is_served_once():
    port, first_pool, second_pool = free_port(), FakePool(gated=True), FakePool()
    # One segment in flight at a time: the session stops reading at the second sentence's end,
    # so the edge has not read the last sentence when it drains.
    first = ThreadEdge(port, first_pool, drain_grace_s=0, max_pending_segments=1).start()

    def restart_elsewhere():
        first.call(first_pool.wait_in_flight, 1)
        first.signal_and_wait(first_pool)
        ThreadEdge(port, second_pool).start()

    restarter = threading.Thread(target=restart_elsewhere, daemon=True)
    restarter.start()
    result = asyncio.run(asyncio.wait_for(stream(DIALOGUE_WAV, f"ws://127.0.0.1:{port}/ws/audio",
                                                 backoff=FAST_BACKOFF), WAIT_S * 3))
    restarter.join(WAIT_S)
    stopped, resumed = result.sessions[0], result.sessions[-1]
    assert stopped.close_code == 1012 and stopped.events[-1].code == ErrorCode.SERVER_SHUTDOWN
    assert result.complete and not result.failures() and resumed.close_code == 1000
    summaries = result.of_type(SummaryEvent)
    assert sum(s.audio_seconds for s in summaries) == pytest.approx(len(DIALOGUE_PCM) / BYTES_PER_S, abs=2e-3)
    assert resumed.offset_s == pytest.approx(summaries[0].audio_seconds, abs=1e-3)
    spans = [[(part.offset_s + s.start_s, part.offset_s + s.end_s) for s in part.of_type(SegmentEvent)]
             for part in result.sessions]
    assert max(e for _, e in spans[0]) <= resumed.offset_s + 1e-3  # nothing moderated twice
    every_span = [span for part in spans for span in part]
    speech = speech_times(DIALOGUE_WAV)
    assert all(covered(every_span, start + SENTENCE_EDGE_S, end - SENTENCE_EDGE_S) for start, end in speech), spans
    assert len(first_pool.calls) + len(second_pool.calls) == len(every_span)
