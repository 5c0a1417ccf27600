"""Admission of WebSocket sessions against the per-process limit."""

from __future__ import annotations

from contextlib import contextmanager

from prometheus_client import Gauge


class SessionLimitReached(Exception):
    """The edge already holds its maximum number of sessions."""


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
