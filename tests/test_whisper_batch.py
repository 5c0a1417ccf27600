"""Batched Whisper decoding (no Triton): a batch gives each clip the text it gets alone."""

from __future__ import annotations

import sys

import numpy as np
import pytest

from tests.speech import SAMPLE_RATE, read_wav


@pytest.fixture(scope="module")
def whisper_batch(model_repository):
    sys.path.insert(0, str(model_repository / "whisper" / "1"))
    from whisper_batch import WhisperBatch

    return WhisperBatch(str(model_repository / "whisper" / "1" / "whisper.pt"))


def test_batch_matches_one_by_one(whisper_batch, english_wav):
    speech = read_wav(english_wav)
    clips = [speech, speech[: 2 * SAMPLE_RATE], np.zeros(SAMPLE_RATE, np.float32)]
    en = whisper_batch.language_token("en")
    batched = whisper_batch.transcribe(clips, [en] * len(clips))
    alone = [whisper_batch.transcribe([clip], [en])[0] for clip in clips]
    assert [b.text for b in batched] == [a.text for a in alone]
    np.testing.assert_allclose([b.no_speech_prob for b in batched], [a.no_speech_prob for a in alone], atol=1e-3)
    assert batched[0].text and batched[2].text == ""


def test_unknown_language_is_rejected(whisper_batch):
    with pytest.raises(ValueError, match="unsupported language"):
        whisper_batch.language_token("xx")
