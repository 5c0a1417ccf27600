"""Word timestamps of the batched Whisper (cross-attention DTW): accuracy against speech whose word
times are known exactly, batching, the exported alignment heads, and the WORDS output on tritonserver."""

from __future__ import annotations

import asyncio
import base64
import gzip
import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import tritonclient.grpc.aio as grpcclient
import whisper
from tritonclient.grpc import InferInput, InferRequestedOutput

from scripts.cli import MODEL_REPOSITORY
from scripts.export import export_whisper
from scripts.speech import ENGLISH_SENTENCE, SAMPLE_RATE, join_words, normalize, read_wav, synthesize

WORDS = ["please", "stop", "shouting", "at", "your", "teammates"]
"""Spoken one by one; whisper base transcribes them exactly when joined by GAPS_S."""
GAPS_S = [0.3, 0.5, 0.4, 0.6, 0.35, 0.55]
"""Silence after each word (0.3-0.6 s), so every word's true start and end are known."""
LEAD_S = 0.3
"""Silence before the first word."""
MEDIAN_ERROR_S, MAX_ERROR_S = 0.15, 0.4
"""How far word starts and ends may lie from the truth: median over all edges, and worst edge."""
BATCHING_TOLERANCE_S = 0.02
"""A clip's word times alone and batched with a longer clip (one 20 ms encoder frame)."""

Truth = list[tuple[str, float, float]]


def whisper_batch_module():
    sys.path.insert(0, str(MODEL_REPOSITORY / "whisper" / "1"))
    import whisper_batch

    return whisper_batch


@pytest.fixture(scope="module")
def exported(tmp_path_factory) -> Path:
    """The exporter's torch export into a scratch repository (the CTranslate2 source is cached in
    .cache, so this takes seconds): the checkpoint carries the published alignment heads."""
    repository = tmp_path_factory.mktemp("repository")
    export_whisper.main(["--repository", str(repository), "--engine", "torch"])
    return repository / "whisper" / "1" / export_whisper.CHECKPOINT_NAME


@pytest.fixture(scope="module")
def model(exported):
    return whisper_batch_module().WhisperBatch(str(exported))


@pytest.fixture(scope="module")
def gapped() -> tuple[np.ndarray, Truth]:
    return gapped_speech()


def gapped_speech() -> tuple[np.ndarray, Truth]:
    """WORDS synthesised separately, joined with GAPS_S of silence; the truth is each word's span."""
    speech, times = join_words(WORDS, GAPS_S, lead_s=LEAD_S)
    return speech, [(word, start, end) for word, (start, end) in zip(WORDS, times, strict=True)]


def edge_errors(words: list[dict], truth: Truth) -> np.ndarray:
    """|start - true start| and |end - true end| of every word, after checking the words' text."""
    assert [normalize(w["word"]) for w in words] == [word for word, _, _ in truth], words
    return np.abs(np.array([[w["start"], w["end"]] for w in words]) - np.array([[s, e] for _, s, e in truth]))


def as_dicts(words) -> list[dict]:
    return [vars(w) for w in words]


def test_the_default_export_records_whisper_bases_published_heads(exported, model):
    mask = np.frombuffer(gzip.decompress(base64.b85decode(whisper._ALIGNMENT_HEADS["base"])), dtype=bool)
    published = np.argwhere(mask.reshape(6, 8)).tolist()
    checkpoint = torch.load(exported, weights_only=True)
    assert checkpoint["alignment_heads"] == published
    assert checkpoint["alignment_heads_origin"] == "openai-whisper base"
    assert [list(h) for h in model.alignment_heads] == published


def test_sources_record_their_own_heads_or_none(tmp_path, model_repository):
    from transformers import WhisperConfig, WhisperForConditionalGeneration

    from scripts.export import whisper_sources

    tiny = whisper_sources.published_alignment_heads("tiny", {"n_text_layer": 4, "n_text_head": 6})
    assert tiny and all(0 <= layer < 4 and 0 <= head < 6 for layer, head in tiny)
    assert whisper_sources.published_alignment_heads("no-such-model", {}) is None
    config = WhisperConfig(vocab_size=51865, num_mel_bins=80, d_model=64, encoder_layers=2, decoder_layers=2,
                           encoder_attention_heads=4, decoder_attention_heads=4, encoder_ffn_dim=256,
                           decoder_ffn_dim=256, max_source_positions=1500, max_target_positions=448)
    WhisperForConditionalGeneration(config).save_pretrained(tmp_path / "hf")
    (tmp_path / "hf" / "generation_config.json").write_text(json.dumps({"alignment_heads": [[1, 0], [1, 3]]}))
    assert whisper_sources.load_hf(tmp_path / "hf")["alignment_heads"] == [[1, 0], [1, 3]]
    ct2 = tmp_path / "ct2"  # the cached offline source, with a config.json that names no heads
    ct2.mkdir()
    (ct2 / "model.bin").symlink_to(whisper_sources.offline_ct2_dir(model_repository.parent / ".cache") / "model.bin")
    (ct2 / "config.json").write_text("{}")
    assert "alignment_heads" not in whisper_sources.load_ct2(ct2)


def test_checkpoints_without_heads_use_the_last_half_of_the_decoder():
    whisper_batch_module()  # puts the model's directory on sys.path
    import whisper_words as module

    dims = whisper.model.ModelDimensions(80, 1500, 512, 8, 6, 51865, 448, 512, 8, 6)
    heads, origin = module.checkpoint_alignment_heads({"dims": vars(dims)}, dims)
    assert heads == [(layer, head) for layer in (3, 4, 5) for head in range(8)]
    assert origin == module.DEFAULT_HEADS_ORIGIN
    with pytest.raises(ValueError, match="outside"):
        module.checkpoint_alignment_heads({"alignment_heads": [[6, 0]]}, dims)


def test_word_times_match_speech_with_known_gaps(model, gapped):
    clip, truth = gapped
    result = model.transcribe([clip], [model.language_token("en")], [True])[0]
    errors = edge_errors(as_dicts(result.words), truth)
    print(f"word edge error: median {np.median(errors):.3f} s, max {errors.max():.3f} s")
    assert np.median(errors) <= MEDIAN_ERROR_S and errors.max() <= MAX_ERROR_S, errors
    assert all(0.0 < w.probability <= 1.0 for w in result.words)


def test_words_are_the_same_alone_and_batched_and_only_where_asked(model, gapped, english_wav):
    clip, _ = gapped
    speech = read_wav(english_wav)
    longer = np.concatenate([speech, np.zeros(SAMPLE_RATE // 2, np.float32), speech])
    assert len(longer) > len(clip)
    en = model.language_token("en")
    alone = model.transcribe([clip], [en], [True])[0]
    batched = model.transcribe([longer, clip, np.zeros(SAMPLE_RATE, np.float32), clip], [en] * 4,
                               [True, True, True, False])
    assert batched[1].text == alone.text and [w.word for w in batched[1].words] == [w.word for w in alone.words]
    times = np.array([[w.start, w.end] for w in alone.words])
    np.testing.assert_allclose([[w.start, w.end] for w in batched[1].words], times, atol=BATCHING_TOLERANCE_S)
    assert batched[0].words and batched[0].words[-1].end <= len(longer) / SAMPLE_RATE
    assert batched[2].text == "" and batched[2].words == []  # silence: no words
    assert batched[3].text == alone.text and batched[3].words == []  # not asked: no alignment
    assert all(r.words == [] for r in model.transcribe([clip], [en]))  # flags absent: off


def test_korean_words_in_a_batch_with_english(model, gapped, tmp_path):
    korean = read_wav(synthesize("안녕하세요", tmp_path / "ko.wav", voice="ko", words_per_minute=120))
    clip, truth = gapped
    ko, en = model.language_token("ko"), model.language_token("en")
    results = model.transcribe([korean, clip], [ko, en], [True, True])
    assert "안녕하세요" in results[0].text
    assert "".join(w.word for w in results[0].words) == results[0].text.replace(" ", "")
    assert all(0 <= w.start < w.end <= len(korean) / SAMPLE_RATE + 0.02 for w in results[0].words)
    assert np.median(edge_errors(as_dicts(results[1].words), truth)) <= MEDIAN_ERROR_S
    # Languages written without spaces split words at unicode boundaries (openai-whisper's rule).
    assert model.languages.word_tokenizer(model.language_token("ja")).language == "ja"


async def infer_whisper(client, audio: np.ndarray, word_timestamps: bool | None) -> tuple[str, list[dict]]:
    """One request to the whisper model itself: TRANSCRIPT and the parsed WORDS."""
    inputs = [InferInput("AUDIO", [1, len(audio)], "FP32"), InferInput("LANGUAGE", [1, 1], "BYTES")]
    inputs[0].set_data_from_numpy(audio[None, :].astype(np.float32))
    inputs[1].set_data_from_numpy(np.array([[b"en"]], dtype=np.object_))
    if word_timestamps is not None:
        inputs.append(InferInput("WORD_TIMESTAMPS", [1, 1], "BOOL"))
        inputs[-1].set_data_from_numpy(np.array([[word_timestamps]], dtype=bool))
    outputs = [InferRequestedOutput("TRANSCRIPT"), InferRequestedOutput("WORDS")]
    result = await client.infer("whisper", inputs, outputs=outputs, client_timeout=120)
    transcript = result.as_numpy("TRANSCRIPT").reshape(-1)[0].decode("utf-8")
    return transcript, json.loads(result.as_numpy("WORDS").reshape(-1)[0].decode("utf-8"))


def test_tritonserver_returns_words_only_to_requests_that_ask(triton, gapped, english_wav):
    clip, truth = gapped
    speech = read_wav(english_wav)

    async def scenario():
        client = grpcclient.InferenceServerClient(triton)
        try:  # concurrent, so that requests with and without words can share a batch
            return await asyncio.gather(infer_whisper(client, clip, True), infer_whisper(client, clip, False),
                                        infer_whisper(client, speech, None), infer_whisper(client, speech, True))
        finally:
            await client.close()

    (text, words), (text_off, words_off), (_, words_absent), (sentence, sentence_words) = asyncio.run(scenario())
    errors = edge_errors(words, truth)
    assert np.median(errors) <= MEDIAN_ERROR_S and errors.max() <= MAX_ERROR_S, errors
    assert set(words[0]) == {"word", "start", "end", "probability"}
    assert text_off == text and words_off == [] and words_absent == []
    assert [normalize(w["word"]) for w in sentence_words] == normalize(ENGLISH_SENTENCE).split(), sentence
