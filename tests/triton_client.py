"""Thin helpers over tritonclient's asyncio gRPC client for the tests."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import tritonclient.grpc.aio as grpcclient
from tritonclient.grpc import InferInput
from tritonclient.utils import InferenceServerException


@dataclass
class EnsembleResult:
    transcript: str
    harmful_prob: float
    no_speech_prob: float


def audio_inputs(audio: np.ndarray, language: str | None) -> list[InferInput]:
    audio = np.asarray(audio, dtype=np.float32).reshape(1, -1)
    inputs = [InferInput("AUDIO", list(audio.shape), "FP32")]
    inputs[0].set_data_from_numpy(audio)
    if language is not None:
        lang = InferInput("LANGUAGE", [1, 1], "BYTES")
        lang.set_data_from_numpy(np.array([[language.encode()]], dtype=np.object_))
        inputs.append(lang)
    return inputs


async def infer_ensemble(client: grpcclient.InferenceServerClient, audio, language: str | None = None,
                         model: str = "ensemble") -> EnsembleResult:
    result = await client.infer(model, audio_inputs(audio, language), client_timeout=120)
    return EnsembleResult(
        transcript=result.as_numpy("TRANSCRIPT").reshape(-1)[0].decode("utf-8"),
        harmful_prob=float(result.as_numpy("HARMFUL_PROB").reshape(-1)[0]),
        no_speech_prob=float(result.as_numpy("NO_SPEECH_PROB").reshape(-1)[0]),
    )


async def model_counts(client: grpcclient.InferenceServerClient, model: str) -> tuple[int, int]:
    """(inference_count, execution_count) of a model from Triton's statistics."""
    stats = await client.get_inference_statistics(model, as_json=True)
    entry = stats["model_stats"][0]
    return int(entry.get("inference_count", 0)), int(entry.get("execution_count", 0))


__all__ = ["EnsembleResult", "InferenceServerException", "audio_inputs", "infer_ensemble", "model_counts"]
