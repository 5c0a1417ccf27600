"""LANGUAGE "auto" on a real tritonserver: Whisper detects each request's language within its
batch's encoder pass, transcribes in it, and reports it as LANGUAGE_CODE (also for fixed and
default languages, and in batches that mix auto and fixed rows).

espeak-ng's Korean is not used for detection: Whisper base hears it as Thai (7 of 8 words and
phrases tried; openai-whisper's own detect_language agrees), so Spanish stands in for a second
language. Fixed "ko" on that Korean audio still transcribes Korean and reports "ko".
"""

from __future__ import annotations

import asyncio
import re

import pytest

from moderation.triton import Moderation, ensemble_inputs, parse_moderation
from scripts.bench.triton_stats import counts_reaching, model_counts
from scripts.speech import ENGLISH_SENTENCE, cer, read_wav, synthesize, wer
from tests.integration.triton_calls import with_client

AUTO = "auto"
MAX_WER = 0.3
KOREAN_WORD = "안녕하세요"
MAX_KOREAN_CER = 0.5
"""espeak-ng's word is heard exactly on some CPUs and as "아, 넌 하세요" (CER 0.4) on others (AMD
EPYC, CTranslate2 int8): the test asks for Korean heard as Korean, not for this voice's accuracy."""
HANGUL = re.compile(r"[\uac00-\ud7a3]")


def heard_as_korean(transcript: str) -> bool:
    """Hangul only (beside punctuation and spaces), and close to the word spoken."""
    letters = re.findall(r"\w", transcript)
    return bool(letters) and all(HANGUL.match(c) for c in letters) and cer(KOREAN_WORD, transcript) <= MAX_KOREAN_CER
SPANISH_GREETING = "bueno"
"""What the Spanish fixture's transcript ("Buenos días, ¿cómo estás hoy?") starts with: Whisper base
hears espeak-ng's "Buenos días" as "Buenos días" or "Bueno, sí", and the rest less exactly."""


async def infer(client, audio, language: str | None, word_timestamps: bool = False) -> Moderation:
    """One ensemble request, built and read by the edge's own helpers."""
    return parse_moderation(await client.infer("ensemble", ensemble_inputs(audio, language, word_timestamps),
                                               client_timeout=120))


@pytest.fixture(scope="module")
def korean_audio(tmp_path_factory):
    return read_wav(synthesize(KOREAN_WORD, tmp_path_factory.mktemp("ko") / "ko.wav", voice="ko",
                               words_per_minute=120))


def test_auto_detects_english_and_transcribes_it(triton, english_wav):
    result = with_client(triton, lambda c: infer(c, read_wav(english_wav), AUTO))
    assert result.language == "en"
    assert wer(ENGLISH_SENTENCE, result.transcript) <= MAX_WER, result.transcript


def test_auto_detects_spanish(triton, spanish_wav):
    result = with_client(triton, lambda c: infer(c, read_wav(spanish_wav), AUTO))
    assert result.language == "es"
    assert SPANISH_GREETING in result.transcript.lower(), result.transcript


@pytest.mark.parametrize("language", ["ko", None])
def test_a_fixed_or_default_language_is_reported_as_transcribed(triton, korean_audio, language):
    # None sends no LANGUAGE: the exported default, "ko", applies.
    result = with_client(triton, lambda c: infer(c, korean_audio, language))
    assert result.language == "ko"
    assert heard_as_korean(result.transcript), result.transcript


def test_a_batch_mixing_auto_and_fixed_rows_gives_each_its_own_language(triton, english_wav, spanish_wav,
                                                                        korean_audio):
    english, spanish = read_wav(english_wav), read_wav(spanish_wav)
    requests = [(english, AUTO, True), (korean_audio, "ko", False), (spanish, AUTO, False), (english, "en", False)]

    async def scenario(client):
        before = await model_counts(client, "whisper")
        results = await asyncio.gather(*(infer(client, *r) for r in requests))
        return results, before, await counts_reaching(client, "whisper", before[0] + len(requests))

    results, before, after = with_client(triton, scenario)
    assert [r.language for r in results] == ["en", "ko", "es", "en"]
    assert after[1] - before[1] < after[0] - before[0], "the requests were not batched together"
    for english_result in (results[0], results[3]):
        assert wer(ENGLISH_SENTENCE, english_result.transcript) <= MAX_WER, english_result.transcript
    assert heard_as_korean(results[1].transcript), results[1].transcript
    assert SPANISH_GREETING in results[2].transcript.lower(), results[2].transcript
    # The auto row's words are timed with the detected language's tokenizer.
    assert [w.word for w in results[0].words] == results[0].transcript.split()
