"""Triton's own statistics over its gRPC API, for the benchmarks and tests."""

from __future__ import annotations

import asyncio

import tritonclient.grpc.aio as grpcclient


async def model_counts(client: grpcclient.InferenceServerClient, model: str) -> tuple[int, int]:
    """(inference_count, execution_count) of a model: fewer executions than inferences means batching."""
    stats = await client.get_inference_statistics(model, as_json=True)
    entry = stats["model_stats"][0]
    return int(entry.get("inference_count", 0)), int(entry.get("execution_count", 0))


async def compute_ns(client: grpcclient.InferenceServerClient, model: str) -> tuple[int, int]:
    """(successful requests, nanoseconds spent inside the model computing) of a model."""
    stats = (await client.get_inference_statistics(model, as_json=True))["model_stats"][0]["inference_stats"]
    return int(stats["success"].get("count", 0)), int(stats["compute_infer"].get("ns", 0))


async def busy_ns(client: grpcclient.InferenceServerClient, model: str) -> int:
    """Nanoseconds a model has spent executing batches (each batch once, whatever its size)."""
    stats = (await client.get_inference_statistics(model, as_json=True))["model_stats"][0]
    return sum(int(entry["compute_infer"].get("ns", 0)) for entry in stats.get("batch_stats", []))


STATS_SETTLE_S = 10.0
"""Triton counts a batch after its execute returns, which can be after the clients got their
responses: how long ``counts_reaching`` waits for the count to catch up."""
STATS_POLL_S = 0.05


async def counts_reaching(client: grpcclient.InferenceServerClient, model: str, inferences: int,
                          timeout_s: float = STATS_SETTLE_S) -> tuple[int, int]:
    """``model_counts`` once the inference count has reached ``inferences`` (or at the deadline)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while True:
        counts = await model_counts(client, model)
        if counts[0] >= inferences or loop.time() >= deadline:
            return counts
        await asyncio.sleep(STATS_POLL_S)
