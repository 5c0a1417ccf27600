"""Locust load test: WebSocket users that stream speech like desktop clients.

Each user opens a session, streams a WAV fixture (speech with pauses) in real time in 20 ms
frames, ends the session and starts over. Every segment result is reported to Locust as a
request: type ``WS``, name ``segment``, response time = the result's ``latency_ms`` (from the end
of the segment's audio to the result). Error events and protocol failures are failures.

    locust -f loadtest/locustfile.py --headless --host ws://localhost:8000 -u 2 -r 2 -t 60s --sla-p95-ms 3000

The documented 2-core CPU machine holds four users within the 3 s SLA, near its edge
(docs/PERFORMANCE.md), so the example runs two; eight break it there, and the run exits 1 on
purpose. Sessions still open when the run ends are counted as ``cut_at_stop`` (not failures).

A headless run exits non-zero when segment p95 exceeds ``--sla-p95-ms``, when no segment result
arrived, or when anything failed.
"""

from __future__ import annotations

import json
import logging
import random
import time
import wave
from functools import lru_cache
from pathlib import Path

import gevent
import websocket
from gevent import GreenletExit
from locust import User, constant, events, task

logger = logging.getLogger(__name__)

FRAME_MS = 20
"""Frame length of a desktop capture loop."""
DEFAULT_WAV = Path(__file__).parent / "audio" / "dialogue_en.wav"
"""Three English sentences with 1 s pauses (espeak-ng), 16 kHz mono 16-bit."""
RESULT_WAIT_S = 120
"""How long a user waits for the summary after ending its session."""
RECEIVER_STOP_S = 5
"""How long a stopped user waits for its receiving greenlet to stop."""


@events.init_command_line_parser.add_listener
def _add_arguments(parser) -> None:
    parser.add_argument("--sla-p95-ms", type=float, default=3000, help="fail the run when segment p95 exceeds this")
    parser.add_argument("--stream-wav", default=str(DEFAULT_WAV), help="16 kHz mono 16-bit WAV each user streams")
    parser.add_argument("--stream-language", default="en", help="Whisper language code sent in the config frame")


@lru_cache(maxsize=4)
def load_frames(path: str) -> tuple[bytes, ...]:
    with wave.open(path) as w:
        if (w.getframerate(), w.getnchannels(), w.getsampwidth()) != (16000, 1, 2):
            raise ValueError(f"{path}: the load test streams 16 kHz mono 16-bit WAVs")
        data = w.readframes(w.getnframes())
    step = 16000 * FRAME_MS // 1000 * 2
    return tuple(data[i:i + step] for i in range(0, len(data), step))


def ws_url(host: str) -> str:
    host = host.rstrip("/")
    return host if host.endswith("/ws/audio") else host + "/ws/audio"


class DesktopStreamUser(User):
    wait_time = constant(0)

    def report(self, name: str, response_time: float, length: int, exception: Exception | None = None) -> None:
        self.environment.events.request.fire(request_type="WS", name=name, response_time=response_time,
                                             response_length=length, exception=exception, context={})

    @task
    def stream_session(self) -> None:
        options = self.environment.parsed_options
        started = time.perf_counter()
        try:
            ws = websocket.create_connection(ws_url(self.host), timeout=RESULT_WAIT_S)
        except Exception as exc:  # noqa: BLE001 - every connection failure is a Locust failure
            self.report("connect", (time.perf_counter() - started) * 1000, 0, exc)
            return
        receiver: list[gevent.Greenlet] = []
        try:
            self._run_session(ws, options, receiver)
        except GreenletExit:
            # Locust stops the user mid-session (the run's end): counted, not a failure, and the
            # receiving greenlet is stopped first so that closing the socket raises nothing in it.
            self.report("cut_at_stop", (time.perf_counter() - started) * 1000, 0)
            raise
        except Exception as exc:  # noqa: BLE001
            self.report("session", (time.perf_counter() - started) * 1000, 0, exc)
        finally:
            for greenlet in receiver:
                greenlet.kill(block=True, timeout=RECEIVER_STOP_S)
            ws.close()

    def _run_session(self, ws, options, receiver: list) -> None:
        ready = json.loads(ws.recv())
        if ready.get("type") != "ready":
            raise RuntimeError(f"expected a ready event, got {ready}")
        ws.send(json.dumps({"type": "config", "language": options.stream_language}))
        receiver.append(gevent.spawn(self._receive, ws))
        receiver = receiver[0]
        frames = load_frames(options.stream_wav)
        # Each session starts at a random point of the recording, so concurrent users do not
        # speak in lockstep (real streams are not synchronised).
        phase = random.randrange(len(frames))
        start = time.perf_counter()
        for i, frame in enumerate(frames[phase:] + frames[:phase]):
            gevent.sleep(max(0.0, start + i * FRAME_MS / 1000 - time.perf_counter()))  # real-time pacing
            ws.send_binary(frame)
        ws.send(json.dumps({"type": "end"}))
        if not receiver.join(timeout=RESULT_WAIT_S) and not receiver.ready():
            receiver.kill()
            raise TimeoutError(f"no summary within {RESULT_WAIT_S} s of ending the session")
        if receiver.value is not None:
            raise receiver.value

    def _receive(self, ws) -> Exception | None:
        """Reports results until the summary; returns what went wrong instead of raising it (gevent
        prints a traceback for every greenlet that dies of an exception)."""
        try:
            self._receive_until_summary(ws)
        except Exception as exc:  # noqa: BLE001 - handed to the session, which reports it
            return exc
        return None

    def _receive_until_summary(self, ws) -> None:
        while True:
            message = ws.recv()
            if not message:
                raise ConnectionError("server closed the session before its summary")
            event = json.loads(message)
            kind = event.get("type")
            if kind == "segment":
                self.report("segment", event["latency_ms"], len(message))
            elif kind == "error":
                self.report("segment" if "seq" in event else "protocol", event.get("latency_ms", 0), len(message),
                            RuntimeError(f"{event.get('code')}: {event.get('message')}"))
            elif kind == "summary":
                return


@events.quitting.add_listener
def _check_sla(environment, **_kwargs) -> None:
    stats = environment.stats.get("segment", "WS")
    sla = environment.parsed_options.sla_p95_ms
    if stats.num_requests == 0:
        logger.error("no segment results were recorded")
        environment.process_exit_code = 1
        return
    p50, p95 = stats.get_response_time_percentile(0.5), stats.get_response_time_percentile(0.95)
    print(f"segment latency: n={stats.num_requests} failures={stats.num_failures} "
          f"p50={p50:.0f} ms p95={p95:.0f} ms (SLA p95 <= {sla:.0f} ms)", flush=True)
    if p95 > sla:
        logger.error("SLA broken: segment p95 %.0f ms > %.0f ms", p95, sla)
        environment.process_exit_code = 1
