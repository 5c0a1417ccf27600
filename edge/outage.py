"""Riding out a Triton outage: a segment whose call found no Triton server (all down, or the one
it was sent to died under it) waits for a server to be ready again and is sent once more, so its
audio is moderated late instead of lost. The wait is bounded per segment in time and edge-wide in
count (OutageLimits); beyond either bound the client gets ``triton_unavailable`` as before.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

from moderation.events import TritonErrorCode
from moderation.triton import TritonCallError

logger = logging.getLogger(__name__)

T = TypeVar("T")

WAITABLE_REASONS = ("unavailable",)
"""Call failures a wait can mend: no server reachable. A timeout (a server too slow) or a model
error would fail the same way again."""


@dataclass(frozen=True)
class OutageLimits:
    wait_s: float
    """How long one segment waits for a ready server after its call found none; 0: it does not."""
    max_waiting: int
    """Segments the edge holds for a server at once (their audio is in memory); more fail at once."""


class OutageWait:
    """The edge's waiting segments: one instance per app, shared by every session."""

    def __init__(self, limits: OutageLimits):
        self.limits = limits
        self.waiting = 0
        self.late = 0
        """Segments that got their result after waiting (since start)."""
        self.gave_up = 0
        """Segments that waited the whole of ``wait_s``, or found the edge's waiting places full."""

    async def call(self, attempt: Callable[[], Awaitable[T]],
                   wait_ready: Callable[[float], Awaitable[bool]]) -> tuple[T, bool]:
        """``attempt()``'s result and whether it came late (after waiting for a server): a call
        that fails for a WAITABLE_REASONS reason is tried again whenever ``wait_ready(seconds)``
        says a server is ready, within ``wait_s``; raises the last TritonCallError otherwise."""
        try:
            return await attempt(), False
        except TritonCallError as exc:
            if exc.reason not in WAITABLE_REASONS or self.limits.wait_s <= 0:
                raise
            if self.waiting >= self.limits.max_waiting:
                self.gave_up += 1
                raise TritonCallError(exc.code, exc.reason, f"{exc}; {self.waiting} segments already wait for a "
                                                            "Triton server (EDGE_OUTAGE_MAX_SEGMENTS)") from exc
        self.waiting += 1
        try:
            return await self._again(attempt, wait_ready), True
        finally:
            self.waiting -= 1

    async def _again(self, attempt: Callable[[], Awaitable[T]], wait_ready: Callable[[float], Awaitable[bool]]) -> T:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.limits.wait_s
        while (remaining := deadline - loop.time()) > 0 and await wait_ready(remaining):
            try:
                result = await attempt()
            except TritonCallError as exc:
                if exc.reason not in WAITABLE_REASONS:
                    raise
                continue  # the server went again: the pool no longer counts it ready, wait once more
            self.late += 1
            return result
        self.gave_up += 1
        raise TritonCallError(TritonErrorCode.TRITON_UNAVAILABLE, "unavailable",
                              f"no Triton server was ready within {self.limits.wait_s:g} s (EDGE_OUTAGE_WAIT_S)")
