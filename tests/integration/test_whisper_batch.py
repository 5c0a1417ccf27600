"""Batched Whisper decoding (no Triton)."""

from __future__ import annotations

import sys

import numpy as np
import pytest

from scripts.speech import ENGLISH_SENTENCE, SAMPLE_RATE, read_wav, wer


def load(model_repository, whisper_pt, context: str, cpu_int8: bool = False):
    sys.path.insert(0, str(model_repository / "whisper" / "1"))
    from whisper_batch import WhisperBatch

    return WhisperBatch(str(whisper_pt), encoder_context=context, cpu_int8=cpu_int8)


@pytest.fixture(scope="module")
def full_context(model_repository, whisper_pt):
    return load(model_repository, whisper_pt, "full")


@pytest.fixture(scope="module")
def fit_context(model_repository, whisper_pt):
    return load(model_repository, whisper_pt, "fit")


def test_full_context_batch_matches_one_by_one(full_context, english_wav):
    speech = read_wav(english_wav)
    clips = [speech, speech[: 2 * SAMPLE_RATE], np.zeros(SAMPLE_RATE, np.float32)]
    en = full_context.language_token("en")
    batched = full_context.transcribe(clips, [en] * len(clips))
    alone = [full_context.transcribe([clip], [en])[0] for clip in clips]
    assert [b.text for b in batched] == [a.text for a in alone]
    np.testing.assert_allclose([b.no_speech_prob for b in batched], [a.no_speech_prob for a in alone], atol=1e-3)
    assert batched[0].text and batched[2].text == ""


def test_fit_context_encodes_only_what_the_batch_needs(fit_context, english_wav):
    speech = read_wav(english_wav)
    assert fit_context.context_frames([speech[: SAMPLE_RATE]]) == 200
    assert fit_context.context_frames([speech[: SAMPLE_RATE], speech]) >= len(speech) // 160 + 100
    assert fit_context.context_frames([np.zeros(29 * SAMPLE_RATE, np.float32)]) == 3000
    en = fit_context.language_token("en")
    # Accurate alone and when padded up to a longer neighbour in the same batch.
    for result in (fit_context.transcribe([speech], [en])[0],
                   fit_context.transcribe([speech, np.zeros(12 * SAMPLE_RATE, np.float32)], [en, en])[0]):
        assert wer(ENGLISH_SENTENCE, result.text) <= 0.25, result.text
    assert fit_context.transcribe([np.zeros(2 * SAMPLE_RATE, np.float32)], [en])[0].text == ""


def test_int8_linear_layers_keep_transcripts_accurate(model_repository, whisper_pt, english_wav):
    import torch

    model = load(model_repository, whisper_pt, "fit", cpu_int8=True)
    assert not any(type(m) is torch.nn.Linear for m in model.model.modules()), "Linear layers not quantised"
    result = model.transcribe([read_wav(english_wav)], [model.language_token("en")])[0]
    assert wer(ENGLISH_SENTENCE, result.text) <= 0.25, result.text


def test_unknown_language_is_rejected(fit_context):
    with pytest.raises(ValueError, match="unsupported language"):
        fit_context.language_token("xx")
    with pytest.raises(ValueError, match="unsupported language"):
        fit_context.requested_language("xx")
    with pytest.raises(ValueError, match="unsupported language"):
        fit_context.language_token("auto")  # auto is a request's choice, never a default


def test_auto_is_the_only_request_without_a_language_token(fit_context):
    assert fit_context.requested_language(" AUTO ") is None
    assert fit_context.requested_language("en") == fit_context.language_token("en")


def test_auto_rows_beside_fixed_rows_decode_as_if_their_language_had_been_given(full_context, english_wav,
                                                                               spanish_wav):
    speech, spanish = read_wav(english_wav), read_wav(spanish_wav)
    en, es = full_context.language_token("en"), full_context.language_token("es")
    mixed = full_context.transcribe([speech, spanish, speech], [None, es, en], [True, False, False])
    alone = [full_context.transcribe([speech], [en], [True])[0], full_context.transcribe([spanish], [es])[0],
             full_context.transcribe([speech], [en])[0]]
    assert [r.language for r in mixed] == ["en", "es", "en"]
    assert [r.text for r in mixed] == [a.text for a in alone]
    np.testing.assert_allclose([r.no_speech_prob for r in mixed], [a.no_speech_prob for a in alone], atol=1e-3)
    assert [w.word for w in mixed[0].words] == [w.word for w in alone[0].words] != []


def test_decoding_loops_are_cut_to_one_copy(model_repository):
    import torch

    sys.path.insert(0, str(model_repository / "whisper" / "1"))
    from whisper_batch import WhisperBatch

    block = [11, 12, 13, 14]
    generated = torch.tensor([[5] + block * 3 + [0] * 3,     # a 4-token block three times: a loop
                              [5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 0, 0, 0, 0],  # no repetition
                              [7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 0, 0, 0]])  # row already done
    lengths = torch.tensor([13, 13, 13])
    done = torch.tensor([False, False, True])
    looping = WhisperBatch._stop_loops(generated, 13, lengths, done)
    assert looping.tolist() == [True, False, False]
    assert lengths.tolist() == [5, 13, 13]  # row 0 keeps its prefix and the first copy of the block
