"""The live stream: captured audio to the edge over however many sessions it takes, without
losing any of it, and every event back in stream time.

Audio waits in a bounded backlog until the edge has it; a session lost (the edge restarted, the
network gone) is followed by a new one, with the reconnection policy of every client
(moderation.client), from where the edge stopped reading (docs/PROTOCOL.md, Reconnecting).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import threading
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Protocol

import websockets
from pydantic import ValidationError

from moderation.client import DEFAULT_BACKOFF, FRAME_MS, Backoff, connect_options, retryable
from moderation.protocol import (
    SAMPLE_RATE,
    SERVER_EVENTS,
    AnyServerEvent,
    ClientConfig,
    ErrorCode,
    ErrorEvent,
    ReadyEvent,
    SegmentEvent,
    SummaryEvent,
)

logger = logging.getLogger(__name__)

BYTES_PER_S = 2 * SAMPLE_RATE
"""What the client sends: the edge's default format, 16 kHz mono pcm_s16le (no format config)."""
FRAME_BYTES = BYTES_PER_S * FRAME_MS // 1000
MAX_BACKLOG_S = 300.0
"""Captured audio kept while it cannot be sent (the edge unreachable): 5 minutes, 9.6 MB. Beyond
it the oldest audio is dropped, counted and reported."""
MAX_RESEND_S = 60.0
"""After a connection lost without a summary (the edge crashed), the audio after the last result
that came is sent again, but from no more than this long before what was sent."""
RESEND_BYTES = int(MAX_RESEND_S * SAMPLE_RATE) * 2
END_WAIT_S = 15.0
"""When the user stops: how long the client waits for the edge's last results and its summary."""
FATAL_CLOSE_CODES = frozenset({1008, 1009})
"""Close codes of the client's own fault (a refused credential or origin, a frame too large):
reconnecting would only repeat it."""
FATAL_ERRORS = frozenset({ErrorCode.BAD_CONFIG})
GO_ON_ERRORS = frozenset({ErrorCode.IDLE_TIMEOUT})
"""Errors closed with a fatal code that a new session mends: ``idle_timeout`` comes while the
capture device is gone (no audio to send); the client goes on once there is audio again."""


class LinkState(StrEnum):
    CONNECTING = "connecting"
    LIVE = "live"
    """A session is open: audio flows and results come."""
    RECONNECTING = "reconnecting"
    AUTH_FAILED = "auth_failed"
    """The edge refused the credential: no retry until the user changes it."""
    FAILED = "failed"
    """An error retrying cannot mend (a wrong URL, a refused config)."""
    STOPPED = "stopped"


class StreamListener(Protocol):
    def link(self, state: LinkState, detail: str) -> None:
        """The connection's state changed (called on the stream's event loop)."""

    def event(self, event: AnyServerEvent, offset_s: float) -> None:
        """An event of the session whose audio begins ``offset_s`` into the stream."""


class Backlog:
    """Captured audio, from the capture thread to the sender, addressed by byte of the stream."""

    def __init__(self, max_s: float = MAX_BACKLOG_S):
        self.max_bytes = int(max_s * BYTES_PER_S) // 2 * 2
        self._lock = threading.Lock()
        self._data = bytearray()
        self.first = 0
        """Stream byte of ``_data[0]``."""
        self.dropped = 0
        """Bytes dropped unsent because the backlog was full."""
        self._sent = 0
        self._waiters: list[tuple[asyncio.AbstractEventLoop, asyncio.Event]] = []

    @property
    def total(self) -> int:
        """Bytes captured since the stream began."""
        with self._lock:
            return self.first + len(self._data)

    def append(self, pcm: bytes) -> None:
        """From any thread: more captured audio."""
        with self._lock:
            self._data += pcm
            over = len(self._data) - self.max_bytes
            if over > 0:
                self.dropped += max(0, self.first + over - max(self.first, self._sent))
                del self._data[:over]
                self.first += over
            waiters, self._waiters = self._waiters, []
        for loop, ready in waiters:
            loop.call_soon_threadsafe(ready.set)

    async def wait_beyond(self, position: int) -> None:
        """Until audio after ``position`` was captured."""
        ready = asyncio.Event()
        with self._lock:
            if self.first + len(self._data) > position:
                return
            self._waiters.append((asyncio.get_running_loop(), ready))
        await ready.wait()

    def read(self, position: int, limit: int) -> tuple[int, bytes]:
        """Up to ``limit`` bytes from ``position`` on (from the oldest kept, if that was dropped)."""
        with self._lock:
            start = max(position, self.first)
            at = start - self.first
            return start, bytes(self._data[at:at + limit])

    def mark_sent(self, position: int) -> None:
        with self._lock:
            self._sent = max(self._sent, position)

    def release(self, position: int) -> None:
        """Audio before ``position`` will not be sent again."""
        with self._lock:
            drop = min(len(self._data), max(0, position - self.first))
            del self._data[:drop]
            self.first += drop


@dataclass
class SessionLog:
    """What one session read and answered, for where the next one goes on."""

    offset: int
    """Stream byte where its audio began."""
    sent: int = 0
    """Stream byte up to which it was sent audio."""
    confirmed: int = 0
    """Stream byte up to which its segments came back."""
    ready: bool = False
    summary: SummaryEvent | None = None
    close_code: int | None = None
    error: ErrorEvent | None = None

    @property
    def offset_s(self) -> float:
        return self.offset / BYTES_PER_S

    def resume_at(self) -> int:
        """Where the next session goes on: after what the summary says was read; after a lost
        connection, after the last result (bounded by MAX_RESEND_S); nothing read without ``ready``."""
        if self.summary is not None:
            return self.offset + round(self.summary.audio_seconds * SAMPLE_RATE) * 2
        if not self.ready:
            return self.offset
        return max(self.offset, self.confirmed, self.sent - RESEND_BYTES)


class Fatal(Exception):
    """The stream cannot go on: ``state`` says why (AUTH_FAILED or FAILED)."""

    def __init__(self, state: LinkState, detail: str):
        super().__init__(detail)
        self.state, self.detail = state, detail


@dataclass
class StreamConfig:
    url: str
    language: str
    interim: bool
    token: str | None = None
    cafile: Path | None = None
    backoff: Backoff = DEFAULT_BACKOFF


class LiveStream:
    """Streams a Backlog to the edge until ``stop`` is set, then ends the session cleanly."""

    def __init__(self, config: StreamConfig, backlog: Backlog, listener: StreamListener):
        self.config, self.backlog, self.listener = config, backlog, listener
        self.sessions: list[SessionLog] = []
        """Every session that got ``ready``, once it ended."""
        self.current: SessionLog | None = None
        """The session open (or being opened) now."""
        self._frame = json.dumps({"type": "config", **ClientConfig(
            language=config.language, interim=config.interim).model_dump(exclude_unset=True)})

    async def run(self, stop: asyncio.Event) -> LinkState:
        """The stream until stopped (STOPPED) or a fatal error (AUTH_FAILED, FAILED)."""
        position, attempt = 0, 0
        while not stop.is_set():
            self.listener.link(LinkState.CONNECTING if attempt == 0 else LinkState.RECONNECTING,
                               f"attempt {attempt + 1}" if attempt else self.config.url)
            log = self.current = SessionLog(offset=position, sent=position, confirmed=position)
            try:
                why = await self._session(log, stop)
            except Fatal as exc:
                self.listener.link(exc.state, exc.detail)
                return exc.state
            if log.ready:
                self.sessions.append(log)
                attempt = 0
            position = log.resume_at()
            self.backlog.release(position)
            if stop.is_set():
                break
            attempt += 1
            delay = self.config.backoff.delay_s(min(attempt, self.config.backoff.max_attempts))
            logger.info("%s; reconnecting in %.2f s from %.3f s of the stream", why, delay, position / BYTES_PER_S)
            self.listener.link(LinkState.RECONNECTING, f"{why}; next attempt in {delay:.1f} s")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), delay)  # the backoff itself, cut short by a stop
        self.listener.link(LinkState.STOPPED, "")
        return LinkState.STOPPED

    async def _session(self, log: SessionLog, stop: asyncio.Event) -> str:
        """One session; why it ended, when a new one may go on. Fatal when one would not."""
        options = connect_options(self.config.url, self.config.token, self.config.cafile)
        try:
            async with websockets.connect(self.config.url, **options) as ws:
                sender: asyncio.Task | None = None
                try:
                    await ws.send(self._frame)
                    sender = asyncio.create_task(self._send(ws, log, stop))
                    async for message in ws:
                        self._receive(message, log)
                except websockets.ConnectionClosedError:
                    pass  # lost, or closed with another code than 1000: judged below
                finally:
                    if sender is not None:
                        sender.cancel()
                        await asyncio.gather(sender, return_exceptions=True)
                log.close_code = ws.close_code
        except (OSError, websockets.InvalidHandshake) as exc:
            if not retryable(exc):
                raise Fatal(*_refusal(exc)) from exc
            return f"connection failed: {exc}"
        self._judge(log, stop)
        return f"closed with {log.close_code}"

    async def _send(self, ws, log: SessionLog, stop: asyncio.Event) -> None:
        """The backlog from the session's offset, as it is captured; ``end`` once stopped."""
        stopping = asyncio.create_task(stop.wait())
        try:
            while True:
                more = asyncio.create_task(self.backlog.wait_beyond(log.sent))
                await asyncio.wait({more, stopping}, return_when=asyncio.FIRST_COMPLETED)
                more.cancel()
                start, data = self.backlog.read(log.sent, 50 * FRAME_BYTES)
                log.sent = start  # audio dropped from a full backlog is skipped
                for at in range(0, len(data), FRAME_BYTES):
                    await ws.send(data[at:at + FRAME_BYTES])
                    log.sent = start + min(len(data), at + FRAME_BYTES)
                    self.backlog.mark_sent(log.sent)
                self.backlog.release(min(log.sent, max(log.confirmed, log.sent - RESEND_BYTES)))
                if stopping.done() and log.sent >= self.backlog.total:
                    await ws.send(json.dumps({"type": "end"}))
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(ws.wait_closed(), END_WAIT_S)  # the edge's last results
                    await ws.close()
                    return
        finally:
            stopping.cancel()

    def _receive(self, message, log: SessionLog) -> None:
        try:
            event = SERVER_EVENTS.validate_json(message)
        except ValidationError:
            logger.warning("passing over an event this client does not know: %.200s", message)
            return
        if isinstance(event, ReadyEvent):
            log.ready = True
            self.listener.link(LinkState.LIVE, event.session_id)
        elif isinstance(event, SegmentEvent):
            log.confirmed = max(log.confirmed, log.offset + round(event.end_s * SAMPLE_RATE) * 2)
        elif isinstance(event, SummaryEvent):
            log.summary = event
        elif isinstance(event, ErrorEvent) and log.error is None:
            log.error = event
        self.listener.event(event, log.offset_s)

    @staticmethod
    def _judge(log: SessionLog, stop: asyncio.Event) -> None:
        """Raise Fatal when the session ended in a way a new one would repeat."""
        if log.error is not None and log.error.code in FATAL_ERRORS:
            raise Fatal(LinkState.FAILED, f"{log.error.code}: {log.error.message}")
        if log.close_code in FATAL_CLOSE_CODES and not (log.error is not None and log.error.code in GO_ON_ERRORS):
            detail = f"{log.error.code}: {log.error.message}" if log.error else f"closed with {log.close_code}"
            raise Fatal(LinkState.FAILED, detail)
        if log.close_code == 1000 and not stop.is_set():
            logger.info("the edge ended the session (%s): going on in a new one",
                        log.error.code if log.error else "max duration")


def _refusal(exc: Exception) -> tuple[LinkState, str]:
    """The state and message for a connection the edge refused for good."""
    if isinstance(exc, websockets.InvalidStatus):
        status = exc.response.status_code
        if status in (401, 403):
            return LinkState.AUTH_FAILED, f"the edge refused the credential (HTTP {status}): check the token"
        return LinkState.FAILED, f"the edge refused the connection (HTTP {status}): check the URL"
    return LinkState.FAILED, str(exc)
