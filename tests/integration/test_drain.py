"""SIGTERM on the real edge (``python -m edge``) with real Triton: it drains, then exits with 0;
a session still open when the grace period ends gets its in-flight results, its summary,
``server_shutdown`` and 1012, and the reference client goes on with a new edge on the same port."""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys
import threading
import time

import numpy as np
import pytest
import websockets

from edge.client import FRAME_MS
from scripts.service.launch import EDGE_START_TIMEOUT_S, edge_process, free_port, http_get
from scripts.speech import DIALOGUE_WAV, SAMPLE_RATE, pcm16, read_wav, speech_times

DRAIN_GRACE_S = 1.0
"""Short, so that the session below is still streaming when it ends."""
FRAME_BYTES = SAMPLE_RATE * FRAME_MS // 1000 * 2
DIALOGUE_S = len(read_wav(DIALOGUE_WAV)) / SAMPLE_RATE
NOT_READY_WITHIN_S = 2.0
"""/readyz must say 503 at once; this only bounds the polling."""
RESULT_WAIT_S = 120
"""Failure detection only: a generous bound for Whisper on a busy 2-core CPU."""
EXIT_WAIT_S = 60
"""Grace period, the Triton calls in flight and the closing handshakes, with room to spare."""
SENTENCE_EDGE_S = 0.25
"""Of each sentence's synthesised speech, the quiet onset and tail the VAD may leave out of its segment."""


def poll(condition, timeout_s: float, what: str):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if value := condition():
            return value
        time.sleep(0.02)  # polling a condition with a deadline
    pytest.fail(f"not within {timeout_s:g} s: {what}")


def covered(spans: list[tuple[float, float]], start: float, end: float, step_s: float = 0.01) -> bool:
    """Every point of [start, end] lies in one of ``spans``."""
    return all(any(s <= t <= e for s, e in spans) for t in np.arange(start, end, step_s))


async def stream_realtime(ws, speech: bytes) -> None:
    start = time.perf_counter()
    for i, offset in enumerate(range(0, len(speech), FRAME_BYTES)):
        await asyncio.sleep(max(0.0, start + i * FRAME_MS / 1000 - time.perf_counter()))
        await ws.send(speech[offset:offset + FRAME_BYTES])
    await ws.send(json.dumps({"type": "end"}))


async def events_until_close(ws, events: list[dict]) -> int | None:
    try:
        async for message in ws:
            events.append(json.loads(message))
    except websockets.ConnectionClosedError:
        pass
    return ws.close_code


def draining_checks(address: str) -> tuple[tuple[int, dict], list[dict], int | None, str]:
    """While the edge drains: /readyz (polled until 503), a new session's events and close code, /metrics."""
    status = poll(lambda: (reply := http_get(f"http://{address}/readyz"))[0] == 503 and reply,
                  NOT_READY_WITHIN_S, "/readyz 503")

    async def new_session():
        async with websockets.connect(f"ws://{address}/ws/audio") as ws:
            events: list[dict] = []
            return events, await events_until_close(ws, events)

    refusal, code = asyncio.run(new_session())
    return (status[0], json.loads(status[1])), refusal, code, http_get(f"http://{address}/metrics")[1]


def test_sigterm_delivers_the_open_sessions_results_then_server_shutdown_1012_and_exits_0(triton, tmp_path):
    port = free_port()
    address = f"127.0.0.1:{port}"
    with open(tmp_path / "edge.log", "wb") as log:
        edge, health = edge_process(port, triton, log, drain_grace_s=DRAIN_GRACE_S, triton_timeout_s=60)
        edge.start(health, EDGE_START_TIMEOUT_S)
        try:
            events, code, checks, results_after_sigterm = asyncio.run(stream_and_terminate(address, edge.process))
            exit_code = edge.process.wait(EXIT_WAIT_S)
        finally:
            edge.stop()
    (ready_status, ready_body), refusal, refusal_code, metrics = checks
    assert ready_status == 503 and ready_body["status"] == "draining" and ready_body["open_sessions"] == 1
    assert [(e["type"], e["code"]) for e in refusal] == [("error", "server_draining")] and refusal_code == 1013
    assert "edge_draining 1.0" in metrics
    assert [e["type"] for e in events[-2:]] == ["summary", "error"] and code == 1012, (events[-3:], code)
    assert events[-1]["code"] == "server_shutdown"
    results, summary = [e for e in events if "seq" in e], events[-2]
    assert [r["type"] for r in results] == ["segment"] * len(results) and results_after_sigterm >= 1
    assert [r["seq"] for r in results] == list(range(len(results))) == list(range(summary["segments"]))
    assert DRAIN_GRACE_S < summary["audio_seconds"] < DIALOGUE_S  # stopped mid-stream
    spans = [(r["start_s"], r["end_s"]) for r in results]
    for start, end in speech_times(DIALOGUE_WAV):  # all speech the session read has its result
        if start + SENTENCE_EDGE_S < summary["audio_seconds"]:
            stop = min(end - SENTENCE_EDGE_S, summary["audio_seconds"])
            assert covered(spans, start + SENTENCE_EDGE_S, stop), (start, end, spans)
    assert exit_code == 0


async def stream_and_terminate(address: str, process: subprocess.Popen):
    """Stream the dialogue in real time; SIGTERM the edge once the first result is in; the
    session's events, its close code, what the draining edge answered, and how many results
    came after SIGTERM."""
    speech, events = pcm16(read_wav(DIALOGUE_WAV)), []
    async with websockets.connect(f"ws://{address}/ws/audio", max_size=None) as ws:
        await ws.send(json.dumps({"type": "config", "language": "en"}))
        sender = asyncio.create_task(stream_realtime(ws, speech))
        while not any(e["type"] == "segment" for e in events):
            events.append(json.loads(await asyncio.wait_for(ws.recv(), RESULT_WAIT_S)))
        process.send_signal(signal.SIGTERM)
        before = len(events)
        checks = await asyncio.to_thread(draining_checks, address)
        code = await asyncio.wait_for(events_until_close(ws, events), RESULT_WAIT_S)
        sender.cancel()
    return events, code, checks, sum(e["type"] == "segment" for e in events[before:])


def client_sessions(stdout: list[str]) -> list[tuple[float, list[dict]]]:
    """The reference client's printed events split into sessions (a ready event, or a refusal,
    opens one), each with the stream second it began at: the audio_seconds of those before it."""
    sessions: list[tuple[float, list[dict]]] = []
    offset = 0.0
    for line in stdout:
        event = json.loads(line)
        if event["type"] == "ready" or not sessions or sessions[-1][1][-1].get("code") in (
                "server_draining", "server_busy", "server_shutdown"):
            sessions.append((offset, []))
        sessions[-1][1].append(event)
        if event["type"] == "summary":
            offset += event["audio_seconds"]
    return sessions


def test_the_reference_client_goes_on_with_a_new_edge_on_the_same_port(triton, tmp_path):
    port = free_port()
    url = f"ws://127.0.0.1:{port}/ws/audio"
    with open(tmp_path / "first.log", "wb") as first_log, open(tmp_path / "second.log", "wb") as second_log:
        first, health = edge_process(port, triton, first_log, drain_grace_s=DRAIN_GRACE_S, triton_timeout_s=60)
        second, _ = edge_process(port, triton, second_log, triton_timeout_s=60)
        first.start(health, EDGE_START_TIMEOUT_S)
        client = subprocess.Popen([sys.executable, "-m", "edge.client", str(DIALOGUE_WAV), "--url", url,
                                   "--realtime", "--language", "en"], stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, text=True)
        try:
            stdout = ClientOutput(client)
            stdout.wait_for('"type": "segment"', RESULT_WAIT_S)
            first.process.send_signal(signal.SIGTERM)
            first_exit = first.process.wait(EXIT_WAIT_S)
            second.start(health, EDGE_START_TIMEOUT_S)  # the client is backing off meanwhile
            client_exit = client.wait(RESULT_WAIT_S)
            lines, stderr = stdout.finish()
        finally:
            client.kill()
            first.stop()
            second.stop()
    assert first_exit == 0 and client_exit == 0, stderr
    sessions = client_sessions(lines)
    stopped, resumed = sessions[0], sessions[-1]
    assert [e["type"] for e in stopped[1][-2:]] == ["summary", "error"] and stopped[1][-1]["code"] == "server_shutdown"
    assert resumed[1][-1]["type"] == "summary" and "reconnecting" in stderr
    summaries = [e for _, events in sessions for e in events if e["type"] == "summary"]
    assert sum(s["audio_seconds"] for s in summaries) == pytest.approx(DIALOGUE_S, abs=2e-3)  # nothing twice
    spans = [(offset + e["start_s"], offset + e["end_s"]) for offset, events in sessions
             for e in events if e["type"] == "segment"]
    assert not [e for _, events in sessions for e in events if e["type"] == "error" and "seq" in e]
    for start, end in speech_times(DIALOGUE_WAV):  # every second of speech has its result
        assert covered(spans, start + SENTENCE_EDGE_S, end - SENTENCE_EDGE_S), (start, end, spans)


class ClientOutput:
    """The client's stdout lines, read by a thread so that the test can wait for one with a deadline."""

    def __init__(self, process: subprocess.Popen):
        self.process, self.lines = process, []
        self._changed = threading.Condition()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        for line in self.process.stdout:
            with self._changed:
                self.lines.append(line.strip())
                self._changed.notify_all()

    def wait_for(self, fragment: str, timeout_s: float) -> None:
        with self._changed:
            if not self._changed.wait_for(lambda: any(fragment in line for line in self.lines), timeout_s):
                pytest.fail(f"the client printed no {fragment} within {timeout_s:g} s")

    def finish(self) -> tuple[list[str], str]:
        """Every line (the client has exited), and its stderr."""
        self._reader.join(EXIT_WAIT_S)
        return [line for line in self.lines if line], self.process.stderr.read()
