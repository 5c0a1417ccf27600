"""Admission of WebSocket sessions against the per-process limit and the per-key limit."""

from __future__ import annotations

from contextlib import contextmanager

from prometheus_client import Gauge

from moderation.protocol import ErrorCode


class SessionRefused(Exception):
    """A new session is refused: the client gets an error event with ``code`` and this message,
    and close 1013 (Try Again Later)."""

    code = ErrorCode.SERVER_BUSY


class SessionLimitReached(SessionRefused):
    """The edge already holds its maximum number of sessions; the message goes to the client."""

    def __init__(self, message: str = "too many sessions on this edge, retry later"):
        super().__init__(message)


class KeyLimitReached(SessionLimitReached):
    """One API key (or JWT subject) already holds its maximum number of sessions."""

    def __init__(self):
        super().__init__("too many sessions for this credential, retry later")


class Admission:
    """Counts open sessions; ``admit()`` holds a slot for the lifetime of one session."""

    def __init__(self, max_sessions: int, gauge: Gauge):
        self.max_sessions = max_sessions
        self.open = 0
        self._gauge = gauge

    @contextmanager
    def admit(self):
        """A slot for one session, released on every exit path; SessionLimitReached when full."""
        if self.open >= self.max_sessions:
            raise SessionLimitReached()
        self.open += 1
        self._gauge.inc()
        try:
            yield
        finally:
            self.open -= 1
            self._gauge.dec()


class KeyAdmission:
    """Counts open sessions per credential (``Principal.key``); ``admit(None)`` (authentication
    off) is not counted."""

    def __init__(self, max_sessions_per_key: int):
        self.max_sessions_per_key = max_sessions_per_key
        self.open: dict[str, int] = {}

    @contextmanager
    def admit(self, key: str | None):
        """A slot of ``key`` for one session, released on every exit path; KeyLimitReached when full."""
        if key is None:
            yield
            return
        if self.open.get(key, 0) >= self.max_sessions_per_key:
            raise KeyLimitReached()
        self.open[key] = self.open.get(key, 0) + 1
        try:
            yield
        finally:
            self.open[key] -= 1
            if not self.open[key]:
                del self.open[key]
