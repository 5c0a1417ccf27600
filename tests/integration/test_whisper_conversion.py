"""CTranslate2 -> openai-whisper conversion: same transcript as faster-whisper on the source dir."""

from __future__ import annotations

import struct

import pytest
import torch
import whisper

from scripts.export.ct2_model_bin import ModelBinError, read_model_bin
from scripts.export.whisper_sources import load_ct2, offline_ct2_dir
from scripts.speech import read_wav


@pytest.fixture(scope="module")
def ct2_dir(model_repository):
    return offline_ct2_dir(model_repository.parent / ".cache")


def test_converted_model_transcribes_like_faster_whisper(ct2_dir, english_wav):
    from faster_whisper import WhisperModel

    audio = read_wav(english_wav)
    segments, _ = WhisperModel(str(ct2_dir), device="cpu", compute_type="float32").transcribe(
        audio, language="en", beam_size=1, temperature=0.0, without_timestamps=True,
        condition_on_previous_text=False, vad_filter=False,
    )
    reference = " ".join(s.text.strip() for s in segments)

    checkpoint = load_ct2(ct2_dir)
    model = whisper.model.Whisper(whisper.model.ModelDimensions(**checkpoint["dims"]))
    model.load_state_dict(checkpoint["model_state_dict"])
    mel = whisper.log_mel_spectrogram(whisper.pad_or_trim(torch.from_numpy(audio)), model.dims.n_mels)
    result = whisper.decode(model, mel, whisper.DecodingOptions(language="en", without_timestamps=True, fp16=False))

    assert reference, "faster-whisper produced no text"
    assert result.text.strip() == reference


def test_model_bin_reader_rejects_truncated_and_unknown_files(ct2_dir, tmp_path):
    head = (ct2_dir / "model.bin").open("rb").read(4096)
    truncated = tmp_path / "truncated.bin"
    truncated.write_bytes(head)
    with pytest.raises(ModelBinError, match="truncated"):
        read_model_bin(truncated)
    future = tmp_path / "future.bin"
    future.write_bytes(struct.pack("<I", 99) + head[4:])
    with pytest.raises(ModelBinError, match="unsupported model.bin version 99"):
        read_model_bin(future)


def test_random_stand_in_has_the_published_shape():
    from scripts.export.whisper_sources import random_weights

    checkpoint = random_weights("tiny")
    model = whisper.model.Whisper(whisper.model.ModelDimensions(**checkpoint["dims"]))
    model.load_state_dict(checkpoint["model_state_dict"])
    assert sum(p.numel() for p in model.parameters()) == pytest.approx(39e6, rel=0.05)  # Whisper tiny: 39 M
    with pytest.raises(ValueError, match="unknown shape"):
        random_weights("huge")


def test_hugging_face_checkpoint_converts_to_the_same_network(tmp_path):
    from transformers import WhisperConfig, WhisperForConditionalGeneration

    from scripts.export.whisper_sources import load_hf

    config = WhisperConfig(vocab_size=51865, num_mel_bins=80, d_model=64, encoder_layers=2, decoder_layers=2,
                           encoder_attention_heads=4, decoder_attention_heads=4, encoder_ffn_dim=256,
                           decoder_ffn_dim=256, max_source_positions=1500, max_target_positions=448)
    torch.manual_seed(0)
    hf = WhisperForConditionalGeneration(config).eval()
    hf.save_pretrained(tmp_path)
    checkpoint = load_hf(tmp_path)
    model = whisper.model.Whisper(whisper.model.ModelDimensions(**checkpoint["dims"]))
    model.load_state_dict({k: v.float() for k, v in checkpoint["model_state_dict"].items()})
    model.eval()
    hf = hf.half().float()  # the checkpoint is stored in float16: compare like with like
    mel = torch.randn(1, 80, 3000)
    tokens = torch.tensor([[50258, 50259, 50359, 50363]])
    with torch.no_grad():
        ours = model(mel, tokens)
        theirs = hf(input_features=mel, decoder_input_ids=tokens).logits
    torch.testing.assert_close(ours, theirs, atol=1e-3, rtol=1e-3)


def test_an_openai_checkpoint_written_for_ctranslate2_transcribes_like_the_source(ct2_dir, english_wav, tmp_path):
    # offline base -> openai-whisper checkpoint -> CTranslate2 directory (the ctranslate2 engine's
    # path for openai names, .pt files and random:<name>): the same network, so the same words.
    import sys

    from scripts.cli import MODEL_REPOSITORY
    from scripts.export.ct2_whisper import checkpoint_to_ct2
    from scripts.speech import ENGLISH_SENTENCE, wer

    sys.path.insert(0, str(MODEL_REPOSITORY / "whisper" / "1"))
    from whisper_ct2 import WhisperCT2

    checkpoint_to_ct2(load_ct2(ct2_dir), tmp_path / "ct2")
    audio = read_wav(english_wav)
    source, written = (WhisperCT2(str(path), compute_type="float32") for path in (ct2_dir, tmp_path / "ct2"))
    expected = source.transcribe([audio], [source.language_token("en")])[0]
    result = written.transcribe([audio], [None], [True])[0]  # detection names tokens by the vocabulary
    assert result.language == "en"
    assert result.text == expected.text and wer(ENGLISH_SENTENCE, result.text) <= 0.25, result.text
    assert [w.word for w in result.words] == result.text.split()
