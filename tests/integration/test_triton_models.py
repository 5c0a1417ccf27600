"""The exported repository on a real tritonserver: batching, accuracy, silence and bad requests."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest
import tritonclient.grpc.aio as grpcclient
from tritonclient.grpc import InferInput
from tritonclient.utils import InferenceServerException

from moderation.triton import Moderation, ensemble_inputs, parse_moderation, parse_window
from scripts.bench.triton_stats import counts_reaching, model_counts
from scripts.cli import MODEL_REPOSITORY
from scripts.export import triton_config
from scripts.export.triton_config import EnsembleValues, KoelectraValues, WhisperValues
from scripts.speech import (
    DIALOGUE,
    DIALOGUE_WAV,
    ENGLISH_SENTENCE,
    SAMPLE_RATE,
    read_wav,
    speech_times,
    synthesize,
    wer,
)
from tests.integration.test_language_detection import KOREAN_WORD, heard_as_korean
from tests.integration.triton_calls import with_client


async def infer_ensemble(client: grpcclient.InferenceServerClient, audio, language: str | None = None) -> Moderation:
    """One request, built and read by the edge's own helpers, so tests and product speak alike."""
    return parse_moderation(await client.infer("ensemble", ensemble_inputs(audio, language), client_timeout=120))


def test_concurrent_requests_of_different_lengths_are_batched(triton, english_wav):
    speech = read_wav(english_wav)
    lengths = [int(len(speech) * (i + 3) / 10) for i in range(8)]  # 8 distinct lengths

    async def scenario(client):
        before = {m: await model_counts(client, m) for m in ("whisper", "koelectra")}
        results = await asyncio.gather(*(infer_ensemble(client, speech[:n], "en") for n in lengths))
        # Triton counts a batch after its execute returns, which can follow the responses.
        after = {m: await counts_reaching(client, m, before[m][0] + len(lengths)) for m in before}
        return results, before, after

    results, before, after = with_client(triton, scenario)
    assert len(results) == 8
    assert all(r.transcript for r in results), [r.transcript for r in results]
    assert all(0.0 <= r.harmful_prob <= 1.0 for r in results)
    for model in ("whisper", "koelectra"):
        inferences = after[model][0] - before[model][0]
        executions = after[model][1] - before[model][1]
        assert inferences == 8, (model, inferences)
        assert executions < inferences, f"{model}: {executions} executions for {inferences} requests, no batching"


def test_english_speech_transcribes_accurately(triton, english_wav):
    result = with_client(triton, lambda c: infer_ensemble(c, read_wav(english_wav), "en"))
    error_rate = wer(ENGLISH_SENTENCE, result.transcript)
    assert error_rate <= 0.25, (result.transcript, error_rate)
    assert result.no_speech_prob < 0.5


def test_silence_gives_empty_transcript(triton):
    result = with_client(triton, lambda c: infer_ensemble(c, np.zeros(2 * SAMPLE_RATE, np.float32), "en"))
    assert result.transcript == ""
    assert result.harmful_prob == 0.0
    assert result.no_speech_prob > 0.5


def test_korean_word_transcribes_with_the_default_language(triton, tmp_path):
    # espeak-ng's Korean is poor, but a single greeting comes through; no LANGUAGE input is sent.
    audio = read_wav(synthesize(KOREAN_WORD, tmp_path / "ko.wav", voice="ko", words_per_minute=120))
    result = with_client(triton, lambda c: infer_ensemble(c, audio))
    assert heard_as_korean(result.transcript), result.transcript


def test_too_long_request_fails_alone_while_a_concurrent_valid_one_succeeds(triton, english_wav):
    speech = read_wav(english_wav)
    too_long = np.zeros(35 * SAMPLE_RATE, np.float32)

    async def scenario(client):
        return await asyncio.gather(
            infer_ensemble(client, too_long, "en"), infer_ensemble(client, speech, "en"), return_exceptions=True
        )

    bad, good = with_client(triton, scenario)
    assert isinstance(bad, InferenceServerException)
    assert "35.0 s" in bad.message() and "maximum is 30 s" in bad.message()
    assert not isinstance(good, Exception), good
    assert wer(ENGLISH_SENTENCE, good.transcript) <= 0.25


@pytest.mark.parametrize(
    ("audio", "language", "message"),
    [
        (np.zeros(0, np.float32), "en", "AUDIO is empty"),
        (np.full(SAMPLE_RATE, np.nan, np.float32), "en", "NaN"),
        (np.zeros(SAMPLE_RATE, np.float32), "klingon", "unsupported language"),
    ],
)
def test_bad_requests_get_clear_errors(triton, audio, language, message):
    with pytest.raises(InferenceServerException) as info:
        with_client(triton, lambda c: infer_ensemble(c, audio, language))
    assert message in info.value.message()


def test_koelectra_scores_batches_and_empty_text(triton):
    texts = ["안녕하세요 반갑습니다", "", "너 진짜 왜 그렇게 못하냐"]

    async def one(client, text):
        inp = InferInput("TEXT", [1, 1], "BYTES")
        inp.set_data_from_numpy(np.array([[text.encode()]], dtype=np.object_))
        result = await client.infer("koelectra", [inp])
        return float(result.as_numpy("HARMFUL_PROB").reshape(-1)[0])

    async def scenario(client):
        return await asyncio.gather(*(one(client, t) for t in texts))

    probs = with_client(triton, scenario)
    assert probs[1] == 0.0
    assert all(0.0 < p < 1.0 for p in (probs[0], probs[2]))


@pytest.mark.parametrize(("model", "values"), [("whisper", WhisperValues), ("koelectra", KoelectraValues),
                                               ("ensemble", EnsembleValues)])
def test_every_served_config_is_its_template_rendered_with_the_exported_values(model_repository, model, values):
    model_dir = model_repository / model
    rendered = triton_config.render(triton_config.read(model_dir, values))
    assert (model_dir / "config.pbtxt").read_text() == rendered


def test_the_ensemble_publishes_whispers_default_language(triton):
    async def scenario(client):
        return await client.get_model_config("ensemble", as_json=True)

    config = with_client(triton, scenario)["config"]
    whisper = triton_config.read(MODEL_REPOSITORY / "whisper", WhisperValues)
    assert config["parameters"]["default_language"]["string_value"] == whisper.default_language == "ko"


def test_a_long_form_window_returns_whisper_segments_with_words_beside_a_short_request(triton):
    """The batch jobs' path: a window of several sentences, decoded with timestamps into Whisper's
    own segments (with and without a prompt), batched with an ordinary request of the live path."""
    dialogue = read_wav(DIALOGUE_WAV)
    sentences = speech_times(DIALOGUE_WAV)

    async def window(client, prompt: str = ""):
        inputs = ensemble_inputs(dialogue, "en", word_timestamps=True, long_form=True, prompt=prompt)
        return parse_window(await client.infer("whisper", inputs, client_timeout=120))

    async def scenario(client):
        return await asyncio.gather(window(client), window(client, "Good game everyone."),
                                    infer_ensemble(client, dialogue[: 3 * SAMPLE_RATE], "en"))

    plain, prompted, short = with_client(triton, scenario)
    assert short.transcript and short.words == []  # an ordinary request keeps its own shape
    for result in (plain, prompted):
        assert result.language == "en" and result.transcribed_to == pytest.approx(len(dialogue) / SAMPLE_RATE, abs=0.05)
        text = " ".join(s.text for s in result.segments)
        assert wer(" ".join(DIALOGUE), text) <= 0.2, text
        words = [w for s in result.segments for w in s.words]
        assert words and all(s.start <= w.start <= w.end <= s.end for s in result.segments for w in s.words)
        assert [w.start for w in words] == sorted(w.start for w in words)
    # Whisper's segments, timed by their words, start where the sentences do
    assert len(plain.segments) == len(DIALOGUE)
    for segment, (start, _end) in zip(plain.segments, sentences, strict=True):
        assert abs(segment.start - start) <= 0.3, (segment, sentences)
