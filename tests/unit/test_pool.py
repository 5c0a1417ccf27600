"""TritonPool without Triton: discovery with an injected resolver, least-in-flight balancing,
failover to another replica, and the per-replica metrics."""

from __future__ import annotations

import asyncio
import json

import numpy as np
import pytest
from prometheus_client import generate_latest
from tritonclient.utils import InferenceServerException

from edge.metrics import EdgeMetrics
from moderation.discovery import Discovery, Target, replica_address
from moderation.protocol import ErrorCode
from moderation.triton import TritonCallError, TritonPool
from moderation.verdict import ModelFacts

PORT = 8001


class Answers:
    """A resolver whose answer the test changes; OSError while ``failing``."""

    def __init__(self, *ips: str):
        self.ips, self.failing, self.asked = list(ips), False, 0

    async def __call__(self, host: str, port: int) -> list[str]:
        self.asked += 1
        if self.failing:
            raise OSError("Temporary failure in name resolution")
        return list(self.ips)


def test_targets_parse_names_ipv4_and_ipv6():
    assert Target.parse("triton-grpc:8001") == Target("triton-grpc", 8001)
    assert Target.parse("[::1]:8001").literal and Target.parse("10.0.0.7:8001").literal
    assert replica_address("::1", 8001) == "[::1]:8001"
    with pytest.raises(ValueError, match="host:port"):
        Target.parse("triton-grpc")


def test_a_name_is_every_address_it_resolves_to_and_follows_the_answer():
    answers = Answers("10.0.0.1", "10.0.0.2")

    async def scenario():
        pool = TritonPool([f"triton-grpc:{PORT}", f"10.9.9.9:{PORT}"], "ensemble", 1.0, 60.0, resolver=answers)
        seen = []
        for change in (lambda: None, lambda: answers.ips.append("10.0.0.3"), lambda: answers.ips.remove("10.0.0.1"),
                       lambda: setattr(answers, "failing", True)):
            change()
            await pool.discover()
            seen.append(pool.servers)
        await pool.close()
        return seen

    first, added, dropped, dns_failed = asyncio.run(scenario())
    assert first == ["10.0.0.1:8001", "10.0.0.2:8001", "10.9.9.9:8001"]
    assert added == ["10.0.0.1:8001", "10.0.0.2:8001", "10.0.0.3:8001", "10.9.9.9:8001"]
    assert dropped == ["10.0.0.2:8001", "10.0.0.3:8001", "10.9.9.9:8001"]
    assert dns_failed == dropped  # a failed lookup keeps the replicas it knew


def test_localhost_is_one_replica():
    assert asyncio.run(Discovery([Target("localhost", PORT)]).replicas()) == {"127.0.0.1:8001"}


class FakeResult:
    def as_numpy(self, name: str):
        values = {"TRANSCRIPT": np.array([b"hello"], dtype=np.object_), "HARMFUL_PROB": np.array([0.1]),
                  "NO_SPEECH_PROB": np.array([0.01])}
        return values.get(name)


class FakeClient:
    """Answers after ``gate`` opens; raises ``error`` if set."""

    def __init__(self, error: InferenceServerException | None = None):
        self.error, self.calls, self.gate = error, [], asyncio.Event()
        self.gate.set()
        self.open_calls = self.finished_calls = 0
        self.closed_with_calls: int | None = None
        """Calls still open when the client was closed (closing a gRPC channel cancels them)."""

    async def infer(self, model, inputs, **options):
        self.calls.append(options)
        self.open_calls += 1
        try:
            await self.gate.wait()
        finally:
            self.open_calls -= 1
        self.finished_calls += 1
        if self.error is not None:
            raise self.error
        return FakeResult()

    async def close(self) -> None:
        self.closed_with_calls = self.open_calls


def pool_of(clients: dict[str, FakeClient], timeout_s: float = 5.0) -> TritonPool:
    pool = TritonPool([f"127.0.0.1:{PORT}"], "ensemble", timeout_s, 60.0)
    pool.clients, pool.ready = dict(clients), set(clients)
    return pool


DEAD = InferenceServerException("Socket closed", status="StatusCode.UNAVAILABLE")


def test_segments_go_to_the_ready_replica_with_the_fewest_calls_in_flight():
    busy, idle = FakeClient(), FakeClient()
    busy.gate.clear()

    async def scenario():
        pool = pool_of({"a:1": busy, "b:1": idle})
        held = asyncio.create_task(pool.moderate(np.zeros(160), "en"))  # the first pick: a:1
        await asyncio.sleep(0)  # let it reach replica a:1, where it stays until the gate opens
        for _ in range(4):
            await pool.moderate(np.zeros(160), "en")
        in_flight = dict(pool.in_flight)
        busy.gate.set()
        await held
        return in_flight

    in_flight = asyncio.run(scenario())
    # Round-robin would have sent two of the four to the busy replica.
    assert (len(busy.calls), len(idle.calls)) == (1, 4) and in_flight == {"a:1": 1, "b:1": 0}


def test_a_call_whose_replica_dies_is_retried_once_on_another_and_counted():
    dead, alive = FakeClient(DEAD), FakeClient()

    async def scenario():
        pool = pool_of({"a:1": dead, "b:1": alive})
        pool._round_robin = iter(range(0, 100, 2))  # the first pick is a:1
        result = await pool.moderate(np.zeros(160), "en")
        return pool, result

    pool, result = asyncio.run(scenario())
    assert result.transcript == "hello" and len(dead.calls) == 1 and len(alive.calls) == 1
    assert pool.ready == {"b:1"} and pool.retries == {"unavailable": 1}
    assert alive.calls[0]["timeout"] <= 5_000_000  # what is left of the segment's deadline, in µs
    metrics = generate_latest(registry_of(pool)).decode()
    assert 'edge_triton_retries_total{reason="unavailable"} 1.0' in metrics
    assert 'edge_triton_replica_ready{replica="a:1"} 0.0' in metrics
    assert 'edge_triton_replica_ready{replica="b:1"} 1.0' in metrics
    assert 'edge_triton_replica_in_flight{replica="b:1"} 0.0' in metrics


def test_a_cancelled_caller_never_cancels_its_call_and_close_waits_for_it():
    # tritonserver 2.51 can crash on a gRPC cancellation: the pool owns the rule for every caller.
    slow = FakeClient()
    slow.gate.clear()

    async def scenario():
        pool = pool_of({"a:1": slow})
        caller = asyncio.create_task(pool.moderate(np.zeros(160), "en"))
        while not slow.open_calls:
            await asyncio.sleep(0)
        caller.cancel()
        with pytest.raises(asyncio.CancelledError):
            await caller
        still_open = slow.open_calls
        closing = asyncio.create_task(pool.close())
        await asyncio.sleep(0)
        closed_early = closing.done()
        slow.gate.set()
        await closing
        return still_open, closed_early

    still_open, closed_early = asyncio.run(scenario())
    assert still_open == 1 and not closed_early
    assert slow.finished_calls == 1 and slow.closed_with_calls == 0


def registry_of(pool: TritonPool):
    metrics = EdgeMetrics()
    metrics.watch_pool(pool)
    return metrics.registry


@pytest.mark.parametrize("error", [DEAD, InferenceServerException("model failed", status="StatusCode.INTERNAL")])
def test_with_every_replica_failing_the_segment_gets_one_typed_error(error):
    clients = {"a:1": FakeClient(error), "b:1": FakeClient(error)}

    async def scenario():
        pool = pool_of(clients)
        with pytest.raises(TritonCallError) as raised:
            await pool.moderate(np.zeros(160), "en")
        return raised.value

    failure = asyncio.run(scenario())
    calls = sum(len(c.calls) for c in clients.values())
    if error is DEAD:  # retried once, then the error
        assert (failure.code, calls) == (ErrorCode.TRITON_UNAVAILABLE, 2)
    else:  # the model's own error is not retried
        assert (failure.code, calls) == (ErrorCode.TRITON_ERROR, 1)


def test_no_replica_at_all_is_a_typed_unavailable_error():
    async def scenario():
        pool = TritonPool([f"triton-grpc:{PORT}"], "ensemble", 1.0, 60.0, resolver=Answers())
        await pool.discover()
        with pytest.raises(TritonCallError) as raised:
            await pool.moderate(np.zeros(160), "en")
        return raised.value

    assert asyncio.run(scenario()).code == ErrorCode.TRITON_UNAVAILABLE


class TextResult:
    """A text model's batched answer to two texts: the classifier's or the lexicon's."""

    def __init__(self, model: str):
        match = json.dumps([{"start": 0, "end": 2, "text": "꺼져", "term": "꺼져", "category": "insult",
                             "sources": ["t"]}], ensure_ascii=False)
        self.values = {"HARMFUL_PROB": np.array([[0.2], [0.9]], dtype=np.float32),
                       "CATEGORY_PROBS": np.array([[0.1, 0.0], [0.8, 0.3]], dtype=np.float32)} \
            if model == "koelectra" else {"MATCHES": np.array([[b"[]"], [match.encode()]], dtype=np.object_)}

    def as_numpy(self, name: str):
        return self.values.get(name)


class TextClient(FakeClient):
    async def infer(self, model, inputs, **options):
        self.calls.append({"model": model, "texts": inputs[0].shape(), **options})
        return TextResult(model)


def test_texts_go_to_the_classifier_and_the_lexicon_in_one_batch_each():
    text_client = TextClient()

    async def scenario():
        pool = pool_of({"a:1": text_client})
        with pytest.raises(TritonCallError, match="has reported its models"):
            await pool.moderate_texts(["안녕"])  # no facts read yet
        pool._facts = ModelFacts("ko", ("lexicon",), classifier_model="koelectra", lexicon_model="lexicon")
        return await pool.moderate_texts(["안녕하세요", "꺼져 진짜"])

    clean, harmful = asyncio.run(scenario())
    assert sorted((c["model"], c["texts"]) for c in text_client.calls) == [("koelectra", [2, 1]), ("lexicon", [2, 1])]
    assert (clean.transcript, clean.matches, clean.category_probs) == ("안녕하세요", [], [pytest.approx(0.1), 0.0])
    assert harmful.harmful_prob == pytest.approx(0.9) and harmful.matches[0].category == "insult"
