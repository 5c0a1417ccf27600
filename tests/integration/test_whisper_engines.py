"""Both Whisper engines (CTranslate2, the default, and openai-whisper on torch) keep the whisper
model's contract on a real tritonserver: each request of a concurrent, batched mix of lengths gets
its own transcript; silence, over-long audio, auto language and word timestamps behave alike.

The repository's own engine is served by the session's tritonserver; the other engine is exported
into a scratch repository (whisper alone) and served by a second one for this module.
"""

from __future__ import annotations

import asyncio
import json
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest
import tritonclient.grpc.aio as grpcclient
from tritonclient.utils import InferenceServerException

from moderation.triton import ensemble_inputs
from scripts.bench.triton_stats import counts_reaching, model_counts
from scripts.cli import MODEL_REPOSITORY, REPO_ROOT
from scripts.export import export_whisper, triton_config
from scripts.export.triton_config import WhisperValues
from scripts.export.whisper_sources import offline_ct2_dir
from scripts.service.launch import free_port
from scripts.service.serve_triton import Ports, TritonServer
from scripts.speech import (
    BENCH_SENTENCES,
    GAME_CHAT_SENTENCES,
    RECORDING_SENTENCES,
    SAMPLE_RATE,
    read_wav,
    synthesize,
    wer,
)
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
    served = triton_config.read(model_repository / "whisper", WhisperValues).engine
    if request.param == served:
        yield request.param, triton
        return
    with tempfile.TemporaryDirectory() as tmp:
        export_whisper.main(["--repository", tmp, "--engine", request.param])
        ports = Ports(free_port(), free_port(), free_port())
        with open(Path(tmp) / "triton.log", "wb") as log, TritonServer(Path(tmp), ports, log_file=log):
            yield request.param, f"127.0.0.1:{ports.grpc}"


async def transcribe(client, audio: np.ndarray, language: str = "en", words: bool = False) -> dict:
    # The whisper model takes the ensemble's inputs: the edge builds them.
    result = await client.infer("whisper", ensemble_inputs(audio, language, words), client_timeout=180)
    return {"text": result.as_numpy("TRANSCRIPT")[0, 0].decode(),
            "no_speech": float(result.as_numpy("NO_SPEECH_PROB")[0, 0]),
            "words": json.loads(result.as_numpy("WORDS")[0, 0]),
            "language": result.as_numpy("LANGUAGE_CODE")[0, 0].decode()}


def test_a_concurrent_batch_of_eight_lengths_gives_each_request_its_own_transcript(engine, clips):
    name, url = engine

    async def scenario(client: grpcclient.InferenceServerClient):
        before = await model_counts(client, "whisper")
        results = await asyncio.gather(*(transcribe(client, clip) for clip in clips))
        return results, before, await counts_reaching(client, "whisper", before[0] + len(clips))

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


@pytest.fixture(scope="module")
def in_process(whisper_pt):
    """Both engines in this process, on the same weights: (CTranslate2 int8, torch fp32)."""
    sys.path.insert(0, str(MODEL_REPOSITORY / "whisper" / "1"))
    from whisper_batch import WhisperBatch
    from whisper_ct2 import WhisperCT2

    return WhisperCT2(str(offline_ct2_dir(REPO_ROOT / ".cache"))), WhisperBatch(str(whisper_pt))


def test_both_engines_time_the_same_words_alike(in_process, clips):
    results = [engine.transcribe([clips[3]], [engine.language_token("en")], [True])[0] for engine in in_process]
    words = [[w.word for w in r.words] for r in results]
    assert words[0] == words[1] and words[0], words
    gaps = [abs(a.start - b.start) for a, b in zip(results[0].words, results[1].words, strict=True)]
    assert np.median(gaps) <= 0.1 and max(gaps) <= 0.3, gaps


def test_a_long_dense_clip_is_decoded_to_its_end(in_process, tmp_path):
    # ~120 tokens in 21 s: more than half the 224-token budget, all of which must be decodable.
    text = " ".join(RECORDING_SENTENCES + GAME_CHAT_SENTENCES[:6])
    clip = read_wav(synthesize(text, tmp_path / "long.wav", words_per_minute=260))
    ct2 = in_process[0]
    result = ct2.transcribe([clip], [ct2.language_token("en")])[0]
    assert wer(text, result.text) <= 0.3, result.text
    assert wer(GAME_CHAT_SENTENCES[5], " ".join(result.text.split()[-len(GAME_CHAT_SENTENCES[5].split()):])) <= 0.5


def test_auto_is_refused_per_request_by_an_english_only_model(in_process):
    sys.path.insert(0, str(MODEL_REPOSITORY / "whisper" / "1"))
    from whisper_contract import Languages, vocabulary_languages

    with pytest.raises(ValueError, match="one language"):
        Languages(*vocabulary_languages(51864)).requested("auto")  # the .en models' vocabulary
    assert in_process[0].requested_language("auto") is None  # the multilingual base detects
