"""Defect 2 of the hardening issue, on the real edge and Triton: one client uploading as fast as
it can starved everyone (18 of its 20 segments and a concurrent real-time user's got
``triton_timeout``), and Triton went on computing segments the edge had given up on.

Now a session ahead of real time is bulk: low Triton priority, one call at a time, within an
edge-wide share (edge/fairness.py); every call carries its deadline, and Triton's queue rejects
a request still waiting past it.
"""

from __future__ import annotations

import asyncio

import numpy as np
import pytest
from tritonclient.utils import InferenceServerException

from loadtest.compare import variant_repository
from loadtest.flood import UPLOAD_REPEATS, dialogue_pcm, realtime_beside
from moderation.triton import QUEUE_TIMEOUT_MESSAGE, ensemble_inputs
from scripts.bench.triton_stats import counts_reaching, model_counts
from scripts.service.launch import free_port, running_edge
from scripts.service.serve_triton import Ports, TritonServer
from scripts.speech import pcm16, read_wav
from tests.integration.test_edge_bad_input import wait_for_metric
from tests.integration.triton_calls import with_client

REALTIME_S = 40.0
"""Real-time speech streamed beside the flooder: 12 segments of the English dialogue."""
SLA_P95_MS = 3000


def test_a_realtime_user_keeps_its_latency_while_a_bulk_client_floods(triton, dialogue_wav, tmp_path):
    flood_pcm = pcm16(np.tile(read_wav(dialogue_wav), UPLOAD_REPEATS))
    with open(tmp_path / "edge.log", "wb") as log, running_edge(free_port(), triton, log) as edge:
        realtime, bulk = asyncio.run(realtime_beside(f"ws://{edge.address}/ws/audio", dialogue_pcm(REALTIME_S),
                                                     flood_pcm))
        wait_for_metric(edge.address, "edge_active_sessions", "", lambda value: value == 0)
        wait_for_metric(edge.address, "edge_segment_priority_total", '{priority="bulk"}', lambda value: value > 0)
    assert realtime.errors == [] and len(realtime.segments) >= 10, realtime.events
    assert realtime.percentile_ms(95) < SLA_P95_MS, [s["latency_ms"] for s in realtime.segments]
    # The flooder is served too, more slowly, and without timeouts.
    assert len(bulk.segments) >= 3 and bulk.errors == [], bulk.errors


@pytest.fixture(scope="module")
def one_at_a_time_triton(model_repository, tmp_path_factory) -> str:
    """The exported models with whisper (so the ensemble) batching one request at a time: the
    order Triton's queue serves requests in is then visible in the order they complete."""
    tmp = tmp_path_factory.mktemp("batch1")
    repository = variant_repository(model_repository, tmp / "models", {"max_batch_size": 1})
    ports = Ports(free_port(), free_port(), free_port())
    with open(tmp / "tritonserver.log", "wb") as log, TritonServer(repository, ports, log_file=log):
        yield f"127.0.0.1:{ports.grpc}"


async def _finish_order(client, audio: np.ndarray, calls: dict[str, dict]) -> list[tuple[str, str]]:
    """Send the calls back to back ({name: infer kwargs}); (name, outcome) in the order they ended."""
    ended: list[tuple[str, str]] = []

    async def call(name: str, kwargs: dict) -> None:
        try:
            await client.infer("ensemble", ensemble_inputs(audio, "en"), client_timeout=60, **kwargs)
            ended.append((name, "ok"))
        except InferenceServerException as exc:
            ended.append((name, exc.message()))

    await asyncio.gather(*(call(name, kwargs) for name, kwargs in calls.items()))
    return ended


def test_realtime_requests_jump_tritons_queue(one_at_a_time_triton, english_wav):
    calls = {"first": {}, "bulk1": {"priority": 2}, "bulk2": {"priority": 2}, "realtime": {"priority": 1}}
    ended = with_client(one_at_a_time_triton, lambda client: _finish_order(client, read_wav(english_wav), calls))
    names = [name for name, _ in ended]
    # Whichever request Triton got first runs first; the real-time one, sent last, runs next.
    assert names.index("realtime") <= 1 and all(outcome == "ok" for _, outcome in ended), ended


async def _finish_order_and_computed(client, audio: np.ndarray, calls: dict[str, dict]):
    """_finish_order, and how many requests whisper computed meanwhile (Triton's own count)."""
    before, _ = await model_counts(client, "whisper")
    ended = await _finish_order(client, audio, calls)
    oks = sum(outcome == "ok" for _, outcome in ended)
    computed, _ = await counts_reaching(client, "whisper", before + oks)
    return ended, computed - before


def test_a_request_still_queued_at_its_deadline_is_rejected_not_computed(one_at_a_time_triton, english_wav):
    calls = {"first": {}, **{f"late{i}": {"timeout": 200_000} for i in range(3)}}
    ended, computed = with_client(one_at_a_time_triton, lambda client: _finish_order_and_computed(
        client, read_wav(english_wav), calls))
    # One request runs at a time: whichever runs first completes, every other one waits past its
    # 0.2 s deadline and is rejected by Triton's queue. Whether the rejections reach the clients
    # before or after the running request's result depends on when Triton's batcher next looks at
    # its queue, so the proof that they were not computed is whisper's own count.
    rejected = [name for name, outcome in ended if QUEUE_TIMEOUT_MESSAGE in outcome]
    oks = [name for name, outcome in ended if outcome == "ok"]
    assert len(rejected) >= 2 and "first" in oks and "first" not in rejected, ended
    assert computed == len(oks) == len(ended) - len(rejected), (computed, ended)
