"""A segment whose Triton call found no server waits for one, within the edge's bounds."""

from __future__ import annotations

import asyncio

import pytest

from edge.outage import OutageLimits, OutageWait
from moderation.events import TritonErrorCode
from moderation.triton import TritonCallError


def unavailable() -> TritonCallError:
    return TritonCallError(TritonErrorCode.TRITON_UNAVAILABLE, "unavailable", "connection refused")


class Attempts:
    """Fails with each of ``failures`` in turn, then answers "ok"."""

    def __init__(self, *failures: TritonCallError):
        self.failures, self.calls = list(failures), 0

    async def __call__(self) -> str:
        self.calls += 1
        if self.failures:
            raise self.failures.pop(0)
        return "ok"


class Readiness:
    """wait_ready: answers ``ready`` after recording how long the caller would wait."""

    def __init__(self, ready: bool = True):
        self.ready, self.waits = ready, []

    async def __call__(self, timeout_s: float) -> bool:
        self.waits.append(timeout_s)
        return self.ready


def run(wait: OutageWait, attempt, ready):
    return asyncio.run(wait.call(attempt, ready))


def test_a_call_that_found_no_server_is_sent_again_once_one_is_ready_and_comes_late():
    wait, ready = OutageWait(OutageLimits(wait_s=30, max_waiting=4)), Readiness()
    attempt = Attempts(unavailable(), unavailable())
    assert run(wait, attempt, ready) == ("ok", True)
    assert attempt.calls == 3 and len(ready.waits) == 2 and all(0 < w <= 30 for w in ready.waits)
    assert (wait.late, wait.gave_up, wait.waiting) == (1, 0, 0)


def test_a_call_that_succeeds_first_is_not_late():
    wait = OutageWait(OutageLimits(wait_s=30, max_waiting=4))
    assert run(wait, Attempts(), Readiness()) == ("ok", False) and wait.late == 0


def test_no_server_within_the_wait_gives_triton_unavailable_naming_the_limit():
    wait, attempt = OutageWait(OutageLimits(wait_s=5, max_waiting=4)), Attempts(unavailable())
    with pytest.raises(TritonCallError, match="within 5 s .EDGE_OUTAGE_WAIT_S") as caught:
        run(wait, attempt, Readiness(ready=False))
    assert caught.value.code is TritonErrorCode.TRITON_UNAVAILABLE and attempt.calls == 1
    assert (wait.gave_up, wait.waiting) == (1, 0)


@pytest.mark.parametrize("reason, code", [("timeout", TritonErrorCode.TRITON_TIMEOUT),
                                          ("model", TritonErrorCode.TRITON_ERROR)])
def test_failures_a_wait_cannot_mend_are_not_retried(reason, code):
    ready = Readiness()
    with pytest.raises(TritonCallError) as caught:
        run(OutageWait(OutageLimits(wait_s=30, max_waiting=4)), Attempts(TritonCallError(code, reason, "x")), ready)
    assert caught.value.reason == reason and ready.waits == []


def test_a_wait_of_0_turns_waiting_off():
    ready = Readiness()
    with pytest.raises(TritonCallError, match="connection refused"):
        run(OutageWait(OutageLimits(wait_s=0, max_waiting=4)), Attempts(unavailable()), ready)
    assert ready.waits == []


def test_beyond_the_edges_waiting_places_a_segment_fails_at_once():
    async def scenario():
        wait = OutageWait(OutageLimits(wait_s=30, max_waiting=1))
        gate, waiting = asyncio.Event(), asyncio.Event()

        async def ready_when_opened(timeout_s: float) -> bool:
            waiting.set()
            await gate.wait()
            return True

        first = asyncio.create_task(wait.call(Attempts(unavailable()), ready_when_opened))
        await waiting.wait()  # the first segment holds the one place
        assert wait.waiting == 1
        with pytest.raises(TritonCallError, match="1 segments already wait"):
            await wait.call(Attempts(unavailable()), ready_when_opened)
        gate.set()
        assert await first == ("ok", True)
        return wait

    wait = asyncio.run(scenario())
    assert (wait.waiting, wait.late, wait.gave_up) == (0, 1, 1)
