"""Fair use of Triton between sessions: real-time streams first, bulk senders take turns.

A session whose audio runs ahead of the wall clock (an upload, a file sent as fast as the socket
takes it) is *bulk*. Its segments are sent to Triton at the low priority, one session's at a time
(``bulk_session_max_in_flight``) and all bulk sessions' together within an edge-wide share
(``bulk_max_in_flight``), handed out in arrival order so concurrent uploads take turns. A bulk
segment waits for its share here, in the edge, where waiting costs nothing: its Triton deadline
starts when its call does, and the client is slowed by backpressure rather than failed.

Real-time segments never wait and go at the high priority: Triton batches them before queued
bulk requests. A bulk call also does not start while real-time sessions of this edge are
*active*, speaking (a segment is open, so a call is coming) or awaiting a result
(``bulk_pause_realtime_sessions``): bulk work fills the pauses of live speech, and a real-time
segment waits at most for a bulk call that started in such a pause. A bulk call that has waited
``bulk_max_pause_s`` goes anyway, so uploads progress however busy the live traffic is.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

from moderation.triton import Priority

RESUME_WINDOW_S = 2.0
"""The first seconds of a session, in which a backlog sent at once is forgiven (see Pace)."""
MAX_RESUME_BACKLOG_S = 4.0
"""The largest such backlog: a client that reconnects (after a 1012 or a network break) sends
the audio it captured meanwhile at once, then streams in real time again. Small, because an
uploader that opens session after session gets this much at real-time priority each time."""


class Pace:
    """How far a session's audio runs ahead of real time, and so the priority of its segments.

    A backlog of up to MAX_RESUME_BACKLOG_S sent within the first RESUME_WINDOW_S is forgiven: a
    resuming live client stays real-time, while an upload, which keeps running ahead, does not."""

    def __init__(self, bulk_lead_s: float) -> None:
        self.bulk_lead_s = bulk_lead_s
        self._first_audio_at: float | None = None
        self._backlog_s = 0.0

    def on_audio(self, now: float) -> None:
        """An audio frame arrived (``now`` on a monotonic clock)."""
        if self._first_audio_at is None:
            self._first_audio_at = now

    def lead_s(self, audio_s: float, now: float) -> float:
        """Seconds of audio received beyond the time since the first audio frame, less a forgiven
        initial backlog: about 0 for a client that streams in real time (less after a stall),
        growing for one that sends faster."""
        if self._first_audio_at is None:
            return 0.0
        lead = audio_s - (now - self._first_audio_at)
        if now - self._first_audio_at <= RESUME_WINDOW_S:
            self._backlog_s = max(self._backlog_s, min(lead, MAX_RESUME_BACKLOG_S))
        return lead - self._backlog_s

    def priority(self, audio_s: float, now: float) -> Priority:
        """BULK once the session runs more than ``bulk_lead_s`` ahead of real time."""
        return Priority.BULK if self.lead_s(audio_s, now) > self.bulk_lead_s else Priority.REALTIME


class FairShare:
    """Edge-wide admission of Triton calls by priority (one per app, shared by its sessions)."""

    def __init__(self, bulk_max_in_flight: int, bulk_session_max_in_flight: int,
                 bulk_pause_realtime_sessions: int = 1, bulk_max_pause_s: float = 5.0):
        self._bulk = asyncio.Semaphore(bulk_max_in_flight)
        self.bulk_session_max_in_flight = bulk_session_max_in_flight
        self.bulk_pause_realtime_sessions = bulk_pause_realtime_sessions
        self.bulk_max_pause_s = bulk_max_pause_s
        self._active: set[str] = set()
        """Real-time sessions speaking or awaiting a result now."""
        self._quieter = asyncio.Event()
        """Set (and replaced) whenever a real-time session stops being active."""

    @property
    def active_realtime_sessions(self) -> int:
        return len(self._active)

    def session_share(self) -> asyncio.Semaphore:
        """A new session's own bulk share."""
        return asyncio.Semaphore(self.bulk_session_max_in_flight)

    def set_realtime_active(self, session_id: str, active: bool) -> None:
        """Whether a real-time session is speaking or awaiting a result (False also when it ends)."""
        if active:
            self._active.add(session_id)
        elif session_id in self._active:
            self._active.discard(session_id)
            self._quieter.set()
            self._quieter = asyncio.Event()

    def _bulk_may_start(self) -> bool:
        return not self.bulk_pause_realtime_sessions or len(self._active) < self.bulk_pause_realtime_sessions

    @contextlib.asynccontextmanager
    async def call(self, priority: Priority, session_share: asyncio.Semaphore) -> AsyncIterator[None]:
        """Hold a share for one Triton call. A real-time call never waits. A bulk call waits for
        its session's share, then the edge-wide one (asyncio's semaphores wake in order), then
        until fewer than ``bulk_pause_realtime_sessions`` real-time sessions are active, or for
        ``bulk_max_pause_s`` at most (bulk work is slowed by live speech, never starved)."""
        if priority is Priority.REALTIME:
            yield
            return
        async with session_share, self._bulk:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.bulk_max_pause_s):
                    while not self._bulk_may_start():
                        await self._quieter.wait()
            yield
