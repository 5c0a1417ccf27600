"""Draining the edge before it stops (SIGTERM: a rolling update, a scale-down).

At once: /readyz answers 503 ``draining`` (the load balancer stops sending clients here), new
sessions are refused with ``server_draining`` and close 1013, and ``edge_draining`` is 1. Open
sessions get ``drain_grace_s`` to end by themselves; then each one still open is stopped: it
reads no more audio, delivers the results of its segments (the open one flushed as the tail
segment), sends its summary and a ``server_shutdown`` error, and closes with 1012 (Service
Restart), so its client reconnects (docs/PROTOCOL.md, Reconnecting). Once no session is left the
drain is over and uvicorn's own shutdown runs (edge/__main__.py).

``Drain.start()`` is the one entry point: the server calls it on the first SIGTERM or SIGINT, the
unit tests call it directly.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator
from contextlib import contextmanager

from prometheus_client import CollectorRegistry, Counter, Gauge

from edge.admission import SessionRefused
from edge.settings import EdgeSettings
from moderation.protocol import ErrorCode
from moderation.triton import longest_call_s

logger = logging.getLogger(__name__)

FINISH_MARGIN_S = 5.0
"""Stopped sessions get their longest Triton call (moderation/triton.py) plus this to deliver their
last results, summary and close. One still open then (a client that does not read) is left to uvicorn's shutdown, which
closes its socket with 1012 and no event: the process must exit in bounded time."""

SessionStop = asyncio.Future
"""A session's shutdown hook: resolved (to None) when the edge stops the session. The session's
receive loop waits on it beside the socket (edge/session.py)."""


class EdgeDraining(SessionRefused):
    """The edge is draining: it takes no new session."""

    code = ErrorCode.SERVER_DRAINING

    def __init__(self) -> None:
        super().__init__("this edge is shutting down; reconnect (to another edge)")


class Drain:
    """The sessions open on this edge, and its drain once ``start()`` was called."""

    def __init__(self, grace_s: float, finish_s: float, registry: CollectorRegistry):
        self.grace_s, self.finish_s = grace_s, finish_s
        self.draining = False
        self._stops: set[SessionStop] = set()
        """One hook per open session."""
        self._none_open: asyncio.Event | None = None
        """Set whenever no session is open; made by ``start()``, in the loop that drains."""
        self._task: asyncio.Task[None] | None = None
        self._gauge = Gauge("edge_draining", "1 from the start of the drain (SIGTERM) until the process exits: "
                            "not ready, new sessions refused", registry=registry)
        self._stopped = Counter("edge_drain_stopped_sessions", "Sessions still open when the drain grace period "
                                "ended, ended by the edge with server_shutdown and 1012", registry=registry)

    @classmethod
    def from_settings(cls, settings: EdgeSettings, registry: CollectorRegistry) -> Drain:
        return cls(settings.drain_grace_s, longest_call_s(settings.triton_timeout_s) + FINISH_MARGIN_S, registry)

    @property
    def open_sessions(self) -> int:
        return len(self._stops)

    @contextmanager
    def admit(self) -> Iterator[SessionStop]:
        """The shutdown hook of one new session, held for its lifetime; EdgeDraining once draining."""
        if self.draining:
            raise EdgeDraining()
        stop: SessionStop = asyncio.get_running_loop().create_future()
        self._stops.add(stop)
        try:
            yield stop
        finally:
            self._stops.discard(stop)
            if not self._stops and self._none_open is not None:
                self._none_open.set()

    def start(self) -> asyncio.Task[None]:
        """Start draining now; the task that ends once no session is open. A second call returns
        the same task. Call it in the app's event loop."""
        if self._task is None:
            self.draining = True
            self._gauge.set(1)
            self._none_open = asyncio.Event()
            if not self._stops:
                self._none_open.set()
            logger.info("draining: %d open session(s) get %g s to end", len(self._stops), self.grace_s)
            self._task = asyncio.get_running_loop().create_task(self._drain(), name="edge drain")
        return self._task

    async def _drain(self) -> None:
        if await self._none_open_within(self.grace_s):
            logger.info("drained: no session open")
            return
        logger.info("drain grace period over: stopping %d open session(s)", len(self._stops))
        self._stopped.inc(len(self._stops))
        for stop in self._stops:
            if not stop.done():
                stop.set_result(None)
        if await self._none_open_within(self.finish_s):
            logger.info("drained: every stopped session has closed")
        else:
            logger.warning("%d session(s) still open %g s after being stopped; shutting down regardless",
                           len(self._stops), self.finish_s)

    async def _none_open_within(self, timeout_s: float) -> bool:
        if self._none_open is None:
            raise RuntimeError("the drain has not started")
        if self._none_open.is_set():  # wait_for(…, 0) would time out even then
            return True
        try:
            await asyncio.wait_for(self._none_open.wait(), timeout_s)
        except TimeoutError:
            return False
        return True
