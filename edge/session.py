"""One WebSocket connection: its config, decoder, segmenter, in-flight segments and stats."""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from dataclasses import dataclass

import numpy as np
from pydantic import ValidationError
from starlette.websockets import WebSocket, WebSocketDisconnect

from edge.audio import PcmDecoder
from edge.fairness import FairShare, Pace
from edge.interim import InterimGate, SessionInterim
from edge.metrics import EdgeMetrics
from edge.outage import OutageLimits, OutageWait
from edge.settings import EdgeSettings
from moderation.incidents import IncidentDraft, Incidents
from moderation.protocol import (
    SAMPLE_RATE,
    BadJson,
    ClientConfig,
    ConfigEvent,
    ErrorCode,
    ErrorEvent,
    InterimEvent,
    ReadyEvent,
    SegmentEvent,
    ServerEvent,
    SummaryEvent,
    parse_text_frame,
)
from moderation.triton import ModerationPool, Priority, TritonCallError
from moderation.vad import Segment, Segmenter, SegmenterLimits
from moderation.verdict import Moderation, segment_event, wants_word_times

logger = logging.getLogger(__name__)

_END = object()
"""Queue sentinel: no more results will follow."""


class ClientGone(Exception):
    """The client closed the connection."""


class SessionTimeout(Exception):
    """The server ends the session: the client was silent too long, or the session too long."""

    def __init__(self, code: ErrorCode, message: str):
        super().__init__(message)
        self.code, self.message = code, message


class SessionStopped(Exception):
    """The edge is shutting down and stopped the session (edge/drain.py)."""


POLICY_VIOLATION = 1008
"""WebSocket close code (RFC 6455) after a first-frame or idle timeout: the client broke the
protocol's rule to keep streaming."""
NORMAL_CLOSURE = 1000
"""WebSocket close code after ``{"type": "end"}`` and after ``max_duration``."""
SERVICE_RESTART = 1012
"""WebSocket close code after ``server_shutdown``: the edge is going away, the client reconnects."""
TIMEOUT_CLOSE_CODES = {ErrorCode.FIRST_FRAME_TIMEOUT: POLICY_VIOLATION, ErrorCode.IDLE_TIMEOUT: POLICY_VIOLATION,
                       ErrorCode.MAX_DURATION: NORMAL_CLOSURE}
SHUTDOWN_MESSAGE = "this edge is shutting down: reconnect and go on streaming in a new session"
"""Message of the ``server_shutdown`` event (docs/PROTOCOL.md, Reconnecting, says how to go on)."""


@dataclass(frozen=True)
class Ending:
    """How a session ends once its results are delivered: its close code, and the event that
    follows the summary, if any (``server_shutdown``: the last frame before 1012, so a client
    that sees it knows it has every result of the session)."""

    close_code: int
    after_summary: ErrorEvent | None = None


SegmentResult = SegmentEvent | ErrorEvent
"""What a segment's moderation yields: its result, or the error that replaces it."""


class Session:
    def __init__(self, websocket: WebSocket, settings: EdgeSettings, pool: ModerationPool, metrics: EdgeMetrics,
                 fair_share: FairShare, stop: asyncio.Future | None = None, outage: OutageWait | None = None,
                 interim_gate: InterimGate | None = None, incidents: Incidents | None = None):
        self.id = uuid.uuid4().hex
        self._stop = stop if stop is not None else asyncio.get_running_loop().create_future()
        """Resolved when the edge stops the session to shut down (edge/drain.py); never by default."""
        self.ws, self.settings, self.pool, self.metrics = websocket, settings, pool, metrics
        self.fair_share, self._bulk_share = fair_share, fair_share.session_share()
        self.outage = outage or OutageWait(OutageLimits(settings.outage_wait_s, settings.outage_max_segments))
        """Where a segment waits when no Triton server is reachable (edge-wide: the app's)."""
        self.interim_gate = interim_gate or InterimGate(settings.interim_max_calls)
        """Whether an interim call may start (edge-wide: the app's; edge/interim.py)."""
        self.interim = SessionInterim(settings, self.interim_gate, pool, metrics, self._send_interim)
        self.incidents = incidents
        """Where this session's harmful segments are kept (None: not kept); never awaited."""
        self.pace = Pace(settings.bulk_lead_s)
        self._realtime_calls = 0
        """This session's real-time segments submitted and not yet answered (see _update_activity)."""
        self.ended = False
        """Set when run() returns: calls it abandoned must not mark it active again."""
        self.config = ClientConfig()
        self.decoder = PcmDecoder(self.config)
        self.segmenter = Segmenter(SegmenterLimits.from_settings(settings))
        self.audio_started = False
        self.next_seq = 0
        # A slot per segment in flight, freed when its result is sent; with none free the receive
        # loop waits, so a too-fast client is slowed, never dropped.
        self._slots = asyncio.Semaphore(settings.max_pending_segments)
        self.pending: asyncio.Queue = asyncio.Queue()
        self.in_flight: set[asyncio.Task] = set()
        self.latencies_ms: list[float] = []
        self.harmful_segments = 0
        self.failed_segments = 0
        self._send_lock = asyncio.Lock()
        self._sender: asyncio.Task | None = None
        """Delivers results in order; set while the session runs."""
        self.started_at = asyncio.get_running_loop().time()
        """Loop time of the ready event: the first-frame timeout and the maximum duration count from it."""
        self.ends_at = self.started_at + settings.max_session_s
        self.got_first_frame = False

    @property
    def language(self) -> str | None:
        """The session's language as far as the edge knows: the client's, else the model's default."""
        return self.config.language or self.pool.facts.default_language

    async def send(self, event: ServerEvent) -> None:
        """Send one event; ClientGone when the socket is closed or broken under it."""
        async with self._send_lock:
            try:
                await self.ws.send_text(event.wire())
            except (WebSocketDisconnect, RuntimeError, OSError) as exc:  # Starlette's "close message sent"
                raise ClientGone() from exc

    async def client_error(self, code: ErrorCode, message: str) -> None:
        logger.info("session %s: client error %s: %s", self.id, code.value, message)  # one line, no traceback
        self.metrics.client_errors.labels(code).inc()
        await self.send(ErrorEvent(code=code, message=message))

    async def run(self) -> None:
        """Serve the connection until {"type":"end"} (graceful) or the client goes away (abort)."""
        try:
            await self.send(ReadyEvent(session_id=self.id, sample_rate=SAMPLE_RATE, encoding=self.config.encoding,
                                       channels=self.config.channels, language=self.language,
                                       max_frame_bytes=self.settings.max_frame_bytes,
                                       signals=list(self.pool.facts.signals)))
        except ClientGone:
            logger.info("session %s: client left before the ready event", self.id)
            return
        self.started_at = asyncio.get_running_loop().time()
        self.ends_at = self.started_at + self.settings.max_session_s
        sender = self._sender = asyncio.create_task(self._deliver_results())
        try:
            await self._serve(sender)
        finally:
            self.ended = True
            self._update_activity()

    async def _serve(self, sender: asyncio.Task) -> None:
        try:
            ending = await self._receive_until_done()
            await self._finish(sender, ending)
        except (ClientGone, WebSocketDisconnect):
            logger.info("session %s: client left, abandoning %d in-flight segments", self.id, len(self.in_flight))
            self._abort(sender)
        except asyncio.CancelledError:
            self._abort(sender)
            raise
        except Exception:  # noqa: BLE001 - one broken session must not take the server down
            logger.exception("session %s failed", self.id)
            self._abort(sender)
            await self._close_quietly(1011)

    async def _close_quietly(self, code: int) -> None:
        try:
            await self.ws.close(code)
        except Exception:  # noqa: BLE001 - the socket may already be gone
            pass

    async def _receive_until_done(self) -> Ending:
        """Read frames until {"type":"end"}, a timeout or the edge's shutdown; how to end."""
        try:
            await self._receive_until_end()
        except SessionTimeout as timeout:
            logger.info("session %s: %s: %s", self.id, timeout.code.value, timeout.message)
            self.metrics.session_timeouts.labels(timeout.code.value).inc()
            await self.send(ErrorEvent(code=timeout.code, message=timeout.message))
            return Ending(TIMEOUT_CLOSE_CODES[timeout.code])
        except SessionStopped:
            logger.info("session %s: stopped by the edge's shutdown", self.id)
            return Ending(SERVICE_RESTART, ErrorEvent(code=ErrorCode.SERVER_SHUTDOWN, message=SHUTDOWN_MESSAGE))
        return Ending(NORMAL_CLOSURE)

    def _deadline(self) -> tuple[float, ErrorCode, str]:
        """When the next frame is due at the latest, and the timeout that passing it is."""
        settings = self.settings
        if not self.got_first_frame:
            due, code = self.started_at + settings.first_frame_timeout_s, ErrorCode.FIRST_FRAME_TIMEOUT
            message = f"no frame within {settings.first_frame_timeout_s:g} s of the ready event"
        else:  # idle time counts from now: time the edge spent holding the client back is not idle
            due, code = asyncio.get_running_loop().time() + settings.idle_timeout_s, ErrorCode.IDLE_TIMEOUT
            message = f"no frame for {settings.idle_timeout_s:g} s"
        if self.ends_at <= due:
            due, code = self.ends_at, ErrorCode.MAX_DURATION
            message = f"sessions last at most {settings.max_session_s:g} s; open a new one to go on"
        return due, code, message

    async def _next_message(self) -> dict:
        """The next ASGI message from the client; SessionTimeout once its deadline passes,
        SessionStopped once the edge stops the session."""
        due, code, message = self._deadline()
        remaining = due - asyncio.get_running_loop().time()
        if remaining <= 0:  # checked first: a client flooding frames never waits in receive()
            raise SessionTimeout(code, message)
        if self._stop.done():  # likewise
            raise SessionStopped()
        receive = asyncio.ensure_future(self.ws.receive())
        try:
            await asyncio.wait((receive, self._stop), timeout=remaining, return_when=asyncio.FIRST_COMPLETED)
        finally:
            if not receive.done():  # cancelled too when this session is: no receive outlives it
                receive.cancel()
        if not receive.done():
            raise SessionStopped() if self._stop.done() else SessionTimeout(code, message)
        self.got_first_frame = True  # a message that came with the stop is still handled: it was read
        return receive.result()

    async def _receive_until_end(self) -> None:
        while True:
            message = await self._next_message()
            if message["type"] == "websocket.disconnect":
                raise ClientGone()
            if message.get("bytes") is not None:
                await self.on_audio(message["bytes"])
            elif message.get("text") is not None and await self.on_text(message["text"]):
                return

    async def on_text(self, text: str) -> bool:
        """Handle a text frame; True when it ends the session."""
        try:
            payload = parse_text_frame(text)
        except BadJson as exc:
            await self.client_error(ErrorCode.BAD_JSON, str(exc))
            return False
        kind = payload.get("type", "config") if isinstance(payload, dict) else None
        if kind == "end":
            return True
        if kind == "config":
            await self.on_config(payload)
            return False
        await self.client_error(ErrorCode.UNKNOWN_MESSAGE, 'expected a JSON object of type "config" or "end"')
        return False

    async def on_config(self, payload: dict) -> None:
        if self.audio_started:
            await self.client_error(ErrorCode.CONFIG_AFTER_AUDIO, "config must come before the first audio frame")
            return
        try:
            config = ClientConfig.model_validate(payload)
        except ValidationError as exc:
            problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'config'}: {e['msg']}" for e in exc.errors())
            await self.client_error(ErrorCode.BAD_CONFIG, problems)
            return
        self.config, self.decoder = config, PcmDecoder(config)
        await self.send(ConfigEvent(sample_rate=config.sample_rate, encoding=config.encoding,
                                    channels=config.channels, language=self.language,
                                    word_timestamps=config.word_timestamps, interim=config.interim,
                                    speaker_id=config.speaker_id, channel_id=config.channel_id,
                                    metadata=config.metadata))

    async def on_audio(self, data: bytes) -> None:
        received_at = time.perf_counter()
        if len(data) > self.settings.max_frame_bytes:
            await self.client_error(ErrorCode.FRAME_TOO_LARGE,
                                    f"frame of {len(data)} bytes exceeds {self.settings.max_frame_bytes}; "
                                    "it was not processed, send smaller frames")
            return
        self.audio_started = True
        self.pace.on_audio(received_at)
        for segment in self.segmenter.feed(self.decoder.feed(data), received_at):
            await self._submit(segment)
        self._update_activity()
        self._start_interim(received_at)

    def _start_interim(self, received_at: float) -> None:
        """An interim call on the open segment, when the client asked for them and one is due
        (edge/interim.py): interim spans are the lexicon's words, and a bulk session gets none."""
        if not self.config.interim or "lexicon" not in self.pool.facts.signals:
            return
        if self.pace.priority(self.decoder.input_seconds, received_at) is not Priority.REALTIME:
            return
        self.interim.maybe_start(self.segmenter.open_speech(received_at), self.segmenter.trailing_silence_s,
                                 self.config.language)

    def _update_activity(self) -> None:
        """Tell the fair share whether this session is a real-time one speaking or awaiting a
        result: bulk calls hold back meanwhile (edge/fairness.py)."""
        realtime = self.pace.priority(self.decoder.input_seconds, time.perf_counter()) is Priority.REALTIME
        active = not self.ended and realtime and (self.segmenter.in_speech or self._realtime_calls > 0)
        self.fair_share.set_realtime_active(self.id, active)

    async def _acquire_slot(self) -> None:
        """Wait for one of the max_pending_segments slots (backpressure); a slot is freed when its
        result is sent. If the sender stopped (its socket broke), no slot will ever come back:
        end the session rather than wait forever (that wait leaked sessions)."""
        acquire = asyncio.ensure_future(self._slots.acquire())
        if self._sender is None:
            await acquire
            return
        await asyncio.wait({acquire, self._sender}, return_when=asyncio.FIRST_COMPLETED)
        if not acquire.done():
            acquire.cancel()
            raise ClientGone()

    async def _submit(self, segment: Segment) -> None:
        await self._acquire_slot()
        seq = self.next_seq
        self.next_seq += 1
        priority = self.pace.priority(self.decoder.input_seconds, time.perf_counter())
        self.metrics.segment_priority.labels(priority.name.lower()).inc()
        task = asyncio.create_task(self._moderate(seq, segment, priority))
        self.in_flight.add(task)
        task.add_done_callback(self.in_flight.discard)
        if priority is Priority.REALTIME:  # counted from now, so that no bulk call starts before this one
            self._realtime_calls += 1
            self.interim_gate.final_started()
            self._update_activity()
            task.add_done_callback(self._realtime_call_done)
        self.pending.put_nowait(task)

    async def _moderate(self, seq: int, segment: Segment, priority: Priority) -> tuple[SegmentResult, float]:
        times = {"seq": seq, "start_s": round(segment.start_s, 3), "end_s": round(segment.end_s, 3)}
        try:
            async with self.fair_share.call(priority, self._bulk_share):
                # The client's language, or None: the model's exported default then applies.
                with_words = wants_word_times(self.pool.facts, self.settings.span_word_times,
                                              self.config.word_timestamps)
                result, late = await self.outage.call(
                    lambda: self.pool.moderate(segment.audio, self.config.language, with_words, priority),
                    self.pool.wait_ready)
        except TritonCallError as exc:
            self.metrics.triton_errors.labels(exc.reason).inc()
            return ErrorEvent(code=exc.code, message=str(exc), **times), segment.closed_at
        except Exception:  # noqa: BLE001 - e.g. a malformed response; the session goes on
            logger.exception("session %s: segment %d failed", self.id, seq)
            self.metrics.triton_errors.labels("internal").inc()
            # The details stay in the log: an internal error's text is no business of the client's.
            return ErrorEvent(code=ErrorCode.TRITON_ERROR, message="moderation failed (server error)", **times), \
                segment.closed_at
        event = self._segment_event(result, times, segment)
        event.late = True if late else None
        if event.is_harmful and self.incidents is not None:
            self._keep_incident(event, segment)
        return event, segment.closed_at

    def _keep_incident(self, event: SegmentEvent, segment: Segment) -> None:
        """Hands the harmful segment to the incident writer (a queue: the event never waits)."""
        c = self.config
        self.incidents.submit(IncidentDraft(event.model_copy(deep=True), "live", segment.audio, segment.start_s,
                                            session_id=self.id, speaker_id=c.speaker_id, channel_id=c.channel_id,
                                            metadata=dict(c.metadata)))

    def _realtime_call_done(self, _task: asyncio.Task) -> None:
        self._realtime_calls -= 1
        self.interim_gate.final_done()
        self._update_activity()

    def _segment_event(self, result: Moderation, times: dict, segment: Segment) -> SegmentEvent:
        return segment_event(result, self.pool.facts, self.settings.verdict_policy(), times["seq"], segment.start_s,
                             segment.end_s, self.config.word_timestamps)

    async def _deliver_results(self) -> None:
        """Send results in segment order as they complete."""
        while (task := await self.pending.get()) is not _END:
            event, closed_at = await task
            event.latency_ms = round((time.perf_counter() - closed_at) * 1000, 1)
            self._resolve_interim(event)
            self._record(event)
            await self.send(event)
            self._slots.release()

    def _resolve_interim(self, event: SegmentResult) -> None:
        """Tell a client of interim results which of their spans this final does not confirm."""
        if self.config.interim and event.end_s is not None:
            self.interim.resolve(event.end_s, event if isinstance(event, SegmentEvent) else None)

    async def _send_interim(self, event: InterimEvent) -> None:
        try:
            await self.send(event)
        except ClientGone:
            pass  # the receive loop finds out too, and ends the session

    def _record(self, event: SegmentResult) -> None:
        if isinstance(event, ErrorEvent):
            self.failed_segments += 1
            self.metrics.segments.labels("error").inc()
            return
        self.latencies_ms.append(event.latency_ms)
        self.harmful_segments += event.is_harmful
        self.metrics.segments.labels("harmful" if event.is_harmful else "normal").inc()
        self.metrics.segment_latency.observe(event.latency_ms / 1000)

    async def _finish(self, sender: asyncio.Task, ending: Ending) -> None:
        """Flush buffered speech, deliver every pending result, send the summary (and the event
        that follows it), close."""
        now = time.perf_counter()
        tail = self.decoder.flush()
        for segment in self.segmenter.feed(tail, now) + self.segmenter.flush(now):
            await self._submit(segment)
        self.pending.put_nowait(_END)
        await sender
        await self.interim.finish()
        await self.send(self.summary())
        if ending.after_summary is not None:
            await self.send(ending.after_summary)
        await self.ws.close(ending.close_code)

    def summary(self) -> SummaryEvent:
        lat = np.array(self.latencies_ms) if self.latencies_ms else None
        return SummaryEvent(
            session_id=self.id, segments=len(self.latencies_ms), harmful_segments=self.harmful_segments,
            failed_segments=self.failed_segments, audio_seconds=round(self.decoder.input_seconds, 3),
            p50_latency_ms=None if lat is None else round(float(np.percentile(lat, 50)), 1),
            p95_latency_ms=None if lat is None else round(float(np.percentile(lat, 95)), 1),
        )

    def _abort(self, sender: asyncio.Task) -> None:
        """Client gone: drop all session state. Its segments are cancelled; a Triton call one of
        them started runs on to its end in the pool, which never cancels a call (tritonserver 2.51
        can crash on it), and its result is dropped."""
        sender.cancel()
        self.interim.cancel()
        for task in list(self.in_flight):
            task.cancel()
            self.metrics.segments.labels("cancelled").inc()
        self.in_flight.clear()
        while not self.pending.empty():
            self.pending.get_nowait()
