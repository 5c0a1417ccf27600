"""What every client of the edge's WebSocket shares (the reference file client, edge/client.py,
and the desktop client, desktop/): the reconnection policy, the credential and TLS options, and
how the spans of interim and final events combine. docs/PROTOCOL.md, Reconnecting."""

from __future__ import annotations

import random
import ssl
from dataclasses import dataclass
from pathlib import Path

import websockets

from moderation.protocol import ErrorCode, InterimEvent, SegmentEvent

FRAME_MS = 20
"""Frame length a desktop capture loop typically sends."""
NORMAL_CLOSURE = 1000
RECONNECT_CLOSE_CODES = frozenset({1012, 1013})
"""Close codes after which a client reconnects and goes on: Service Restart (the edge shut
down) and Try Again Later (it was busy, or draining)."""
RECONNECT_ERRORS = frozenset({ErrorCode.SERVER_SHUTDOWN, ErrorCode.SERVER_DRAINING, ErrorCode.SERVER_BUSY})
"""Error events that come with those close codes: no failure of a stream that goes on elsewhere."""
RECONNECT_INITIAL_DELAY_S = 0.5
"""Wait before the first reconnection attempt."""
RECONNECT_FACTOR = 2.0
"""Each further attempt waits this many times longer than the one before..."""
RECONNECT_MAX_DELAY_S = 10.0
"""...up to this."""
RECONNECT_JITTER = 0.5
"""Up to this share of each wait is taken off at random, so that the clients of one drained edge
do not all come back in the same instant."""
RECONNECT_MAX_ATTEMPTS = 8
"""Attempts in a row without a ``ready`` event (refused connections, 1013s) before giving up."""


@dataclass(frozen=True)
class Backoff:
    """Waits between reconnection attempts: exponential, capped, with jitter."""

    initial_s: float = RECONNECT_INITIAL_DELAY_S
    factor: float = RECONNECT_FACTOR
    max_s: float = RECONNECT_MAX_DELAY_S
    jitter: float = RECONNECT_JITTER
    max_attempts: int = RECONNECT_MAX_ATTEMPTS

    def delay_s(self, attempt: int) -> float:
        """The wait before attempt ``attempt`` (1, 2, …) of a row."""
        step = min(self.max_s, self.initial_s * self.factor ** (attempt - 1))
        return step * (1 - self.jitter * random.random())


def connect_options(url: str, token: str | None = None, cafile: Path | None = None) -> dict:
    """websockets.connect options: the bearer credential, and for wss:// a TLS context trusting
    ``cafile`` (else the system's CAs)."""
    options: dict = {"max_size": None}
    if token:
        options["additional_headers"] = {"Authorization": f"Bearer {token}"}
    if url.startswith("wss://"):
        options["ssl"] = ssl.create_default_context(cafile=str(cafile) if cafile else None)
    return options


def retryable(exc: Exception) -> bool:
    """A failed connection that a later attempt may get: nothing listening (an edge restarting), a
    handshake cut off, or a 5xx answer (an edge shutting down); not a refused credential."""
    if isinstance(exc, websockets.InvalidStatus):
        return exc.response.status_code >= 500
    return isinstance(exc, OSError | websockets.InvalidMessage)


def merged(spans: list[tuple[float, float]]) -> list[tuple[float, float]]:
    """The union of spans as disjoint ones in order (an interim span and its final's overlap:
    ducked once, not twice)."""
    out: list[tuple[float, float]] = []
    for start, end in sorted(spans):
        if out and start <= out[-1][1]:
            out[-1] = (out[-1][0], max(out[-1][1], end))
        else:
            out.append((start, end))
    return out


def session_spans(events: list, offset_s: float = 0.0) -> list[tuple[float, float]]:
    """(start_s, end_s) in stream seconds of one session's harmful spans: the finals' and the
    interim spans their finals confirmed (a segment's final lists those it does not)."""
    segments = [e for e in events if isinstance(e, SegmentEvent)]
    unconfirmed = [h for s in segments for h in s.unconfirmed_interim or []]
    heard = [h for s in segments for h in s.harmful_spans]
    heard += [h for e in events if isinstance(e, InterimEvent) for h in e.harmful_spans if h not in unconfirmed]
    return [(offset_s + h.start_s, offset_s + h.end_s) for h in heard]


DEFAULT_BACKOFF = Backoff()
"""The policy above, as every client uses it unless told otherwise."""
