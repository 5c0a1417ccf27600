"""A session whose socket breaks under it ends and frees everything, whatever it was waiting on."""

from __future__ import annotations

import asyncio

import pytest

from edge.fairness import FairShare
from edge.metrics import EdgeMetrics
from edge.session import Session
from edge.settings import EdgeSettings
from scripts.speech import DIALOGUE_WAV, pcm16, read_wav
from tests.unit.fakes import FakePool

FRAME_BYTES = 640
SESSION_END_S = 20
"""Failure detection only: a session that has not ended by then is stuck for good."""


class BreakingSocket:
    """Serves audio frames as fast as they are read; every send after the first ``sends_ok``
    fails as Starlette's does on a socket that is closed under it."""

    def __init__(self, pcm: bytes, sends_ok: int):
        self.frames = [pcm[i:i + FRAME_BYTES] for i in range(0, len(pcm), FRAME_BYTES)]
        self.sends_ok, self.sent, self.read = sends_ok, 0, 0

    async def receive(self) -> dict:
        if self.read == len(self.frames):
            await asyncio.Event().wait()  # a client that stays connected but sends nothing more
        self.read += 1
        return {"type": "websocket.receive", "bytes": self.frames[self.read - 1]}

    async def send_text(self, text: str) -> None:
        if self.sent >= self.sends_ok:
            raise RuntimeError('Cannot call "send" once a close message has been sent.')
        self.sent += 1

    async def close(self, code: int = 1000) -> None:
        pass


@pytest.mark.parametrize("max_pending", [1, 2])
def test_a_result_that_cannot_be_sent_ends_the_session_instead_of_blocking_it(max_pending):
    # The fast-client leak: results stop being sent, so the in-flight slots never come back and
    # the receive loop, held back by backpressure, used to wait for them forever.
    pool = FakePool()
    socket = BreakingSocket(pcm16(read_wav(DIALOGUE_WAV)) * 3, sends_ok=1)  # the ready event only

    async def scenario():
        settings = EdgeSettings(max_pending_segments=max_pending)
        session = Session(socket, settings, pool, EdgeMetrics(), FairShare(2, 1))
        await asyncio.wait_for(session.run(), SESSION_END_S)
        return session

    session = asyncio.run(scenario())
    assert not session.in_flight and session.pending.empty()
    assert socket.read < len(socket.frames)  # it stopped reading the client at once
