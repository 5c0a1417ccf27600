"""The whisper model's engine-independent rules (whisper_contract), without Triton or weights: the
CTranslate2 engine cuts decoding loops after the fact with ``loop_cut``, the torch engine while
decoding with ``WhisperBatch._stop_loops``; both must keep the same tokens."""

from __future__ import annotations

import sys

import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from scripts.cli import MODEL_REPOSITORY

sys.path.insert(0, str(MODEL_REPOSITORY / "whisper" / "1"))
from whisper_batch import WhisperBatch  # noqa: E402
from whisper_contract import (  # noqa: E402
    MIN_TOKEN_BUDGET,
    TOKENS_PER_SECOND,
    is_silent,
    loop_cut,
    token_budget,
    transcript,
)


def stepwise_cut(tokens: list[int]) -> int | None:
    """What the torch engine keeps: _stop_loops after every decoded token, as its greedy loop runs it."""
    generated = torch.tensor([tokens])
    for filled in range(1, len(tokens) + 1):
        lengths = torch.tensor([filled])
        if bool(WhisperBatch._stop_loops(generated, filled, lengths, torch.tensor([False]))[0]):
            return int(lengths[0])
    return None


def test_a_block_decoded_three_times_is_cut_to_its_first_copy():
    assert loop_cut([5, 11, 12, 13, 11, 12, 13, 11, 12, 13, 40, 41]) == 4
    assert loop_cut([7, 7, 7, 7, 7, 7]) == 2  # a 2-token block (7 7) three times
    assert loop_cut(list(range(40))) is None
    assert loop_cut([1, 2, 1, 2, 3]) is None  # twice is not a loop


@settings(max_examples=300, deadline=None)
@given(st.lists(st.integers(0, 3), max_size=40))
def test_the_after_the_fact_cut_keeps_what_the_torch_engine_keeps(tokens):
    assert loop_cut(tokens) == stepwise_cut(tokens)


def test_silence_rules_and_token_budgets():
    # above NO_SPEECH_MAX, silence whatever the log-probability: the confident hallucinations on noise
    assert is_silent(0.71, 0.0) and is_silent(0.75, -0.39)
    assert not is_silent(0.56, -0.83) and not is_silent(0.31, -0.4)  # the most doubtful real speech measured
    assert not is_silent(0.5, -3.0)  # Whisper's own rule needs a no-speech probability above 0.6 too
    # noise's known phrases, where Whisper doubted there was speech; the same words spoken are kept
    assert transcript("이 영상은 영상에서", 0.65, -0.3) == "" and transcript("I.", 0.6, -0.4) == ""
    assert transcript("이 노래는 정말 좋아요", 0.55, -0.3) == ""
    # the same noise on an AVX2 CPU: lower no-speech, and the opening alone
    assert transcript("이 영상은 영상이", 0.4874, -0.3) == "" and transcript("이 영상은", 0.66, -0.3) == ""
    assert transcript("I", 0.4874, -0.3) == "" and transcript("이 영상은 좋아요", 0.31, -0.3) == "이 영상은 좋아요"
    assert transcript("I.", 0.2, -0.4) == "I." and transcript("안녕하세요", 0.56, -0.83) == "안녕하세요"
    assert token_budget(0, 224) == MIN_TOKEN_BUDGET
    assert token_budget(16000 * 4, 224) == MIN_TOKEN_BUDGET + 4 * TOKENS_PER_SECOND
    assert token_budget(16000 * 30, 224) == 224
