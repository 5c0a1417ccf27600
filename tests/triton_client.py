"""Thin helpers over tritonclient's asyncio gRPC client for the tests.

Requests and responses are built and read by the edge's own helpers (edge.triton), so tests
and product speak to the ensemble the same way.
"""

from __future__ import annotations

import tritonclient.grpc.aio as grpcclient
from tritonclient.utils import InferenceServerException

from edge.triton import Moderation, ensemble_inputs, parse_moderation


async def infer_ensemble(client: grpcclient.InferenceServerClient, audio, language: str | None = None,
                         model: str = "ensemble") -> Moderation:
    result = await client.infer(model, ensemble_inputs(audio, language), client_timeout=120)
    return parse_moderation(result)


async def model_counts(client: grpcclient.InferenceServerClient, model: str) -> tuple[int, int]:
    """(inference_count, execution_count) of a model from Triton's statistics."""
    stats = await client.get_inference_statistics(model, as_json=True)
    entry = stats["model_stats"][0]
    return int(entry.get("inference_count", 0)), int(entry.get("execution_count", 0))


__all__ = ["InferenceServerException", "infer_ensemble", "model_counts"]
