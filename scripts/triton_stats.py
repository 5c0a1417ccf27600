"""Triton's own statistics over its gRPC API, for the benchmarks and tests."""

from __future__ import annotations

import tritonclient.grpc.aio as grpcclient


async def model_counts(client: grpcclient.InferenceServerClient, model: str) -> tuple[int, int]:
    """(inference_count, execution_count) of a model: fewer executions than inferences means batching."""
    stats = await client.get_inference_statistics(model, as_json=True)
    entry = stats["model_stats"][0]
    return int(entry.get("inference_count", 0)), int(entry.get("execution_count", 0))
