"""Both Whisper engines (CTranslate2, the default, and openai-whisper on torch) keep the whisper
model's contract on a real tritonserver: each request of a concurrent, batched mix of lengths gets
its own transcript; silence, over-long audio, auto language and word timestamps behave alike.

The repository's own engine is served by the session's tritonserver; the other engine is exported
into a scratch repository (whisper alone) and served by a second one for this module.
"""

from __future__ import annotations

import asyncio
import json
import tempfile
from pathlib import Path

import numpy as np
import pytest
import tritonclient.grpc.aio as grpcclient
from tritonclient.grpc import InferInput
from tritonclient.utils import InferenceServerException

from scripts.export import export_whisper
from scripts.launch import free_port
from scripts.serve_triton import Ports, TritonServer
from scripts.speech import BENCH_SENTENCES, GAME_CHAT_SENTENCES, SAMPLE_RATE, read_wav, synthesize, wer
from scripts.triton_stats import model_counts
from tests.integration.triton_calls import with_client

SENTENCES = BENCH_SENTENCES + GAME_CHAT_SENTENCES[:4]
"""Eight different English sentences, 1.5-6 s spoken: eight requests of different lengths."""
MAX_WER = 0.25
MEAN_WER = 0.15


@pytest.fixture(scope="module")
def clips(tmp_path_factory) -> list[np.ndarray]:
    folder = tmp_path_factory.mktemp("engines")
    return [read_wav(synthesize(s, folder / f"{i}.wav")) for i, s in enumerate(SENTENCES)]


@pytest.fixture(scope="module", params=["ctranslate2", "torch"])
def engine(request, model_repository, triton):
    """(engine name, gRPC address of a tritonserver whose "whisper" model runs on that engine)."""
    served = json.loads((model_repository / "whisper" / "config.values.json").read_text())["engine"]
    if request.param == served:
        yield request.param, triton
        return
    with tempfile.TemporaryDirectory() as tmp:
        export_whisper.main(["--repository", tmp, "--engine", request.param])
        ports = Ports(free_port(), free_port(), free_port())
        with open(Path(tmp) / "triton.log", "wb") as log, TritonServer(Path(tmp), ports, log_file=log):
            yield request.param, f"127.0.0.1:{ports.grpc}"


async def transcribe(client, audio: np.ndarray, language: str = "en", words: bool = False) -> dict:
    inputs = [InferInput("AUDIO", [1, len(audio)], "FP32"), InferInput("LANGUAGE", [1, 1], "BYTES"),
              InferInput("WORD_TIMESTAMPS", [1, 1], "BOOL")]
    inputs[0].set_data_from_numpy(audio[None, :].astype(np.float32))
    inputs[1].set_data_from_numpy(np.array([[language.encode()]], dtype=np.object_))
    inputs[2].set_data_from_numpy(np.array([[words]]))
    result = await client.infer("whisper", inputs, client_timeout=180)
    return {"text": result.as_numpy("TRANSCRIPT")[0, 0].decode(),
            "no_speech": float(result.as_numpy("NO_SPEECH_PROB")[0, 0]),
            "words": json.loads(result.as_numpy("WORDS")[0, 0]),
            "language": result.as_numpy("LANGUAGE_CODE")[0, 0].decode()}


def test_a_concurrent_batch_of_eight_lengths_gives_each_request_its_own_transcript(engine, clips):
    name, url = engine

    async def scenario(client: grpcclient.InferenceServerClient):
        before = await model_counts(client, "whisper")
        results = await asyncio.gather(*(transcribe(client, clip) for clip in clips))
        return results, before, await model_counts(client, "whisper")

    results, before, after = with_client(url, scenario)
    assert after[0] - before[0] == len(clips)
    assert after[1] - before[1] < len(clips), f"{name}: {after[1] - before[1]} executions, no batching"
    own = []
    for i, result in enumerate(results):
        rates = [wer(sentence, result["text"]) for sentence in SENTENCES]
        assert rates.index(min(rates)) == i, (name, "another request's transcript", SENTENCES[i], result["text"])
        own.append(rates[i])
    # Per sentence a contraction alone ("I am" -> "I'm") costs a short one 0.29: the mean is the bar.
    assert sum(own) / len(own) <= MEAN_WER, (name, [r["text"] for r in results])


def test_silence_is_empty_and_too_long_audio_fails_alone(engine, clips):
    name, url = engine

    async def scenario(client):
        return await asyncio.gather(transcribe(client, np.zeros(2 * SAMPLE_RATE, np.float32)),
                                    transcribe(client, np.zeros(31 * SAMPLE_RATE, np.float32)),
                                    transcribe(client, clips[3]), return_exceptions=True)

    silence, too_long, speech = with_client(url, scenario)
    assert silence["text"] == "" and silence["no_speech"] > 0.5, (name, silence)
    assert isinstance(too_long, InferenceServerException) and "maximum is 30 s" in too_long.message(), too_long
    assert wer(SENTENCES[3], speech["text"]) <= MAX_WER, (name, speech)


def test_auto_language_and_word_timestamps(engine, clips):
    name, url = engine
    clip = clips[3]
    result = with_client(url, lambda c: transcribe(c, clip, "auto", words=True))
    assert result["language"] == "en", (name, result)
    assert [w["word"] for w in result["words"]] == result["text"].split(), (name, result)
    starts = [w["start"] for w in result["words"]]
    assert starts == sorted(starts) and 0.0 <= starts[0] and result["words"][-1]["end"] <= len(clip) / SAMPLE_RATE
    assert all(w["end"] > w["start"] and 0.0 < w["probability"] <= 1.0 for w in result["words"]), result["words"]
