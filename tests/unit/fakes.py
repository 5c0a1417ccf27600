"""A ModerationPool without Triton, for the unit tier."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from moderation.triton import InFlightCalls, Priority, ReplicaState, TritonCallError
from moderation.verdict import ModelFacts, Moderation


@dataclass
class Call:
    samples: int
    language: str | None
    word_timestamps: bool
    priority: Priority
    fit: bool = False


def numbered(index: int, audio: np.ndarray) -> Moderation:
    """The default answer: a transcript naming the call and its length."""
    return Moderation(f"segment {index}: {len(audio)} samples", 0.1, 0.01)


class FakePool:
    """Answers call i with ``respond(i, audio)`` (by default the transcript ``segment i: N samples``).

    ``latency_s`` simulates inference time; ``reverse_every=n`` holds calls until n have arrived
    and then answers them last-first; ``gated`` holds every call until ``open_gate()``; ``error``
    makes every call fail with it. Waiting and the gate work in the app's event loop (from a
    TestClient: ``client.portal.call(pool.open_gate)``)."""

    model = "ensemble"

    def __init__(self, facts: ModelFacts | None = None, up: bool = True, latency_s: float = 0.0,
                 reverse_every: int | None = None, gated: bool = False, error: TritonCallError | None = None,
                 respond: Callable[[int, np.ndarray], Moderation] = numbered,
                 text_respond: Callable[[str], Moderation] | None = None):
        self._facts, self.up, self.latency_s = facts or ModelFacts("ko"), up, latency_s
        self.reverse_every, self.error, self.respond = reverse_every, error, respond
        self.text_respond = text_respond or (lambda text: Moderation(text, 0.1, 0.0))
        self.text_batches: list[list[str]] = []
        self.calls: list[Call] = []
        self.retries: Counter[str] = Counter()
        self.completed: list[int] = []
        """Call indices in the order their answers were ready."""
        self.in_flight = self.peak_in_flight = 0
        self.bulk_in_flight = self.peak_bulk_in_flight = 0
        self.started = self.closed = False
        self._held: list[asyncio.Future] = []
        self.gated = gated
        self._gate: asyncio.Event | None = None
        self._watchers: list[tuple[int, asyncio.Future]] = []
        self._running = InFlightCalls()
        """As TritonPool's: a cancelled caller never cancels the call under it."""

    @property
    def servers(self) -> list[str]:
        return ["fake-triton:8001"]

    def replicas(self) -> list[ReplicaState]:
        return [ReplicaState("fake-triton:8001", self.up, self.in_flight, len(self.calls))]

    @property
    def facts(self) -> ModelFacts:
        return self._facts

    async def start(self) -> None:
        self.started = True

    async def close(self) -> None:
        self.closed = True

    async def refresh(self) -> set[str]:
        return set(self.servers) if self.up else set()

    async def wait_ready(self, timeout_s: float) -> bool:
        """No probing here: ready is whatever ``up`` says now."""
        return self.up

    async def moderate(self, audio: np.ndarray, language: str | None, word_timestamps: bool = False,
                       priority: Priority = Priority.REALTIME, fit: bool = False) -> Moderation:
        return await self._running.run(self._answer(audio, language, word_timestamps, priority, fit))

    async def _answer(self, audio: np.ndarray, language: str | None, word_timestamps: bool,
                      priority: Priority, fit: bool = False) -> Moderation:
        index = len(self.calls)
        self.calls.append(Call(len(audio), language, word_timestamps, priority, fit))
        self.in_flight += 1
        self.peak_in_flight = max(self.peak_in_flight, self.in_flight)
        bulk = priority is Priority.BULK
        self.bulk_in_flight += bulk
        self.peak_bulk_in_flight = max(self.peak_bulk_in_flight, self.bulk_in_flight)
        self._notify_watchers()
        try:
            await self._answer_turn()
        finally:
            self.in_flight -= 1
            self.bulk_in_flight -= bulk
        self.completed.append(index)
        if self.error is not None:
            raise self.error
        return self.respond(index, audio)

    async def moderate_texts(self, texts: list[str], priority: Priority = Priority.REALTIME) -> list[Moderation]:
        """``text_respond(text)`` per text (by default: harmful_prob 0.1, no match); the batch is
        recorded in ``text_batches``."""
        self.text_batches.append(list(texts))
        if self.error is not None:
            raise self.error
        return [self.text_respond(text) for text in texts]

    async def wait_in_flight(self, count: int) -> None:
        """Return once ``count`` calls are being answered at the same time."""
        if self.in_flight < count:
            watcher = asyncio.get_running_loop().create_future()
            self._watchers.append((count, watcher))
            await watcher

    async def drained(self) -> None:
        """Return once no call is being answered (each check yields to the loop once)."""
        while self.in_flight:
            await asyncio.sleep(0)

    def open_gate(self) -> None:
        self.gated = False
        if self._gate is not None:
            self._gate.set()

    def _notify_watchers(self) -> None:
        for count, watcher in [w for w in self._watchers if w[0] <= self.in_flight]:
            self._watchers.remove((count, watcher))
            watcher.set_result(None)

    async def _answer_turn(self) -> None:
        if self.gated:
            self._gate = self._gate or asyncio.Event()
            await self._gate.wait()
        if self.latency_s:
            await asyncio.sleep(self.latency_s)  # simulated inference time
        if self.reverse_every:
            turn = asyncio.get_running_loop().create_future()
            self._held.append(turn)
            if len(self._held) == self.reverse_every:
                for held in reversed(self._held):
                    held.set_result(None)
                self._held.clear()
            await turn
