"""The CTranslate2 engine of the whisper model: the same contract as the torch engine
(whisper_batch), on CTranslate2's Whisper (the engine faster-whisper runs), whose int8 CPU kernels
keep Whisper's accuracy where torch's dynamic int8 does not (docs/PERFORMANCE.md).

A Triton batch is one batched encode, one batched language detection (only when a row asks for
it), one batched greedy generate, and, for the rows that want words, one ``align`` per language.
With ``inter_threads`` > 1 the batch is split into that many parts, run at once on CTranslate2's
workers, each with ``intra_threads`` threads (all the cores by default): on 2 CPU cores a batch of
4 costs 702 ms a segment as one call, 553 as two overlapping calls of 2 threads each, and a batch
of 8 665 against 600 (docs/PERFORMANCE.md).
Kept free of Triton imports so it can be tested and benchmarked on its own.
"""

from __future__ import annotations

import itertools
import json
import logging
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import ctranslate2
import numpy as np
import torch
from whisper.audio import HOP_LENGTH, N_FRAMES
from whisper.tokenizer import Tokenizer
from whisper_contract import Engine, Languages, Transcription, loop_found, token_budget, transcript
from whisper_mel import LogMel
from whisper_words import MEDIAN_FILTER_WIDTH, path_words

logger = logging.getLogger(__name__)

COMPUTE_TYPES = {"cpu": ("int8", "int8_float32", "float32"), "cuda": ("float16", "int8_float16", "int8", "float32")}
"""Compute types this engine accepts per device (CTranslate2 converts the stored weights at load)."""
FIT_MARGIN_FRAMES = 300
"""With ``fit``, the encoder sees the longest clip of the batch plus this many mel frames (3 s):
on espeak-ng speech a 1 s margin lost short final words that 3 s kept, at about a third of the
30 s window's cost on CPU (docs/PERFORMANCE.md, interim results)."""
MAX_DECODE_TOKENS = 224
"""Whisper's text context is 448 tokens; a request decodes at most half, as openai-whisper does."""
TIMESTAMP_TOKENS = 1501
"""<|0.00|> ... <|30.00|>: the last tokens of every Whisper vocabulary."""


class WhisperCT2(Engine):
    """Holds one CTranslate2 Whisper model on one device and transcribes batches of 16 kHz clips."""

    def __init__(self, model_dir: str, device: str = "cpu", device_index: int = 0, compute_type: str = "int8",
                 intra_threads: int = 0, inter_threads: int = 1):
        if compute_type not in COMPUTE_TYPES.get(device, ()):
            raise ValueError(f"compute type {compute_type!r} is not one of {COMPUTE_TYPES.get(device)} on {device}")
        if intra_threads == 0 and device == "cpu":  # every part may use every core (measured best on 2)
            intra_threads = len(os.sched_getaffinity(0))
        self.model = ctranslate2.models.Whisper(model_dir, device=device, device_index=device_index,
                                                compute_type=compute_type, intra_threads=intra_threads,
                                                inter_threads=inter_threads)
        self.inter_threads = inter_threads
        self._parts = ThreadPoolExecutor(inter_threads, "whisper-part") if inter_threads > 1 else None
        self.languages = Languages(self.model.is_multilingual, self.model.num_languages)
        self.tokenizer = self.languages.tokenizer
        self.log_mel = LogMel(self.model.n_mels, torch.device("cpu"), pad_in_mel=True)  # as faster-whisper
        eot = self.tokenizer.eot
        # As the torch engine: no special token after EOT (timestamps included), no non-speech symbol.
        self._suppress = sorted(set(self.tokenizer.non_speech_tokens)
                                | set(range(eot + 1, self.tokenizer.timestamp_begin + TIMESTAMP_TOKENS)))
        logger.info("loaded CTranslate2 whisper %s on %s:%d (%s; intra %d, inter %d threads)", model_dir, device,
                    device_index, compute_type, intra_threads, inter_threads)
        logger.info("word alignment heads: %s", alignment_heads(Path(model_dir)))

    def transcribe(self, clips: list[np.ndarray], language_tokens: list[int | None],
                   word_timestamps: list[bool] | None = None, fit: bool = False) -> list[Transcription]:
        if self._parts is None or len(clips) == 1:
            return self._transcribe(clips, language_tokens, word_timestamps, fit)
        flags = word_timestamps or [False] * len(clips)
        parts = [list(range(i, len(clips), self.inter_threads)) for i in range(min(self.inter_threads, len(clips)))]
        futures = [self._parts.submit(self._transcribe, [clips[r] for r in part],
                                      [language_tokens[r] for r in part], [flags[r] for r in part], fit)
                   for part in parts]
        results: list = [None] * len(clips)
        for part, future in zip(parts, futures, strict=True):
            for row, result in zip(part, future.result(), strict=True):
                results[row] = result
        return results

    def close(self) -> None:
        if self._parts is not None:
            self._parts.shutdown(wait=True)

    def _transcribe(self, clips: list[np.ndarray], language_tokens: list[int | None],
                    word_timestamps: list[bool] | None, fit: bool = False) -> list[Transcription]:
        frames = min(N_FRAMES, max(len(c) for c in clips) // HOP_LENGTH + FIT_MARGIN_FRAMES) if fit else N_FRAMES
        encoded = self.model.encode(self._features(clips, frames))
        languages = self._languages(encoded, language_tokens)
        budgets = [token_budget(len(c), MAX_DECODE_TOKENS) for c in clips]
        # Whisper in CTranslate2 decodes at most max_length / 2 tokens: twice the largest budget.
        generated = self.model.generate(
            encoded, [self._prompt(language) for language in languages], beam_size=1,
            max_length=2 * max(budgets), return_scores=True, return_no_speech_prob=True,
            suppress_blank=True, suppress_tokens=self._suppress)
        kept = [_decoded_tokens(g.sequences_ids[0], budget) for g, budget in zip(generated, budgets, strict=True)]
        tokens = [row_tokens for row_tokens, _ in kept]
        results = [self._result(g, row_tokens, decoded, language)
                   for g, (row_tokens, decoded), language in zip(generated, kept, languages, strict=True)]
        rows = [row for row, result in enumerate(results) if word_timestamps and word_timestamps[row] and result.text]
        if rows:
            self._attach_words(results, rows, tokens, encoded, clips, languages, frames)
        return results

    def _features(self, clips: list[np.ndarray], frames: int) -> ctranslate2.StorageView:
        """The batch's log-mel over ``frames`` mel frames: Whisper's 30 s window (3000) as it was
        trained, or fewer with ``fit`` (CTranslate2 encodes any length up to 3000)."""
        return ctranslate2.StorageView.from_array(np.ascontiguousarray(self.log_mel(clips, frames).numpy()))

    def _languages(self, encoded, language_tokens: list[int | None]) -> list[int]:
        """Each row's language token: requested, or detected (one batched pass, only if a row asks)."""
        if all(token is not None for token in language_tokens):
            return list(language_tokens)
        detected = self.model.detect_language(encoded)
        special = self.tokenizer.special_tokens
        return [special[ranked[0][0]] if token is None else token
                for token, ranked in zip(language_tokens, detected, strict=True)]

    def _prompt(self, language: int) -> list[int]:
        t = self.tokenizer
        return [t.sot, language, t.transcribe, t.no_timestamps]

    def _result(self, generated, tokens: list[int], decoded: int, language: int) -> Transcription:
        # CTranslate2's score is the mean log-probability of the decoded tokens (length penalty 1).
        # As the torch engine: the sum over the tokens decoded until the row stopped (a loop's copies
        # included), over the tokens kept plus the EOT.
        avg = generated.scores[0] * decoded / (len(tokens) + 1)
        prob = float(generated.no_speech_prob)
        text = transcript(self.tokenizer.decode(tokens).strip(), prob, avg)
        return Transcription(text=text, no_speech_prob=prob, avg_logprob=avg, language=self.languages.code(language))

    def _attach_words(self, results, rows, tokens, encoded, clips, languages, frames: int) -> None:
        """Time the words of ``rows`` (one ``align`` per language among them); a failure is reported
        to those rows only, their transcripts stand."""
        try:
            for language, group in itertools.groupby(sorted(rows, key=lambda r: languages[r]),
                                                     key=lambda r: languages[r]):
                group = list(group)
                # align appends <|notimestamps|> to the start sequence itself.
                aligned = self.model.align(
                    _rows(encoded, group), self._prompt(language)[:-1], [tokens[r] for r in group],
                    [min(len(clips[r]) // HOP_LENGTH, frames) for r in group],
                    median_filter_width=MEDIAN_FILTER_WIDTH)
                tokenizer = self.languages.word_tokenizer(language)
                for row, alignment in zip(group, aligned, strict=True):
                    results[row].words = _row_words(alignment, tokens[row], clips[row], tokenizer)
        except Exception as exc:  # noqa: BLE001 - a word-timing bug must not cost the transcripts
            logger.exception("word alignment of %d rows failed", len(rows))
            for row in rows:
                results[row].words_error = f"word timestamps failed: {exc}"


def _decoded_tokens(sequence: list[int], budget: int) -> tuple[list[int], int]:
    """The tokens a row keeps (within its budget, a decoding loop cut to its first copy) and how
    many the torch engine would have decoded before stopping: it stops such rows while decoding,
    CTranslate2 decodes on; the rule is the same."""
    tokens = list(sequence[:budget])
    found = loop_found(tokens)
    return (tokens, len(tokens)) if found is None else (tokens[:found[0]], found[1])


def _row_words(alignment, text_tokens: list[int], clip: np.ndarray, tokenizer: Tokenizer):
    if not alignment.alignments:
        return []
    text_indices, time_indices = (np.array(column) for column in zip(*alignment.alignments, strict=True))
    return path_words(text_indices, time_indices, list(alignment.text_token_probs), text_tokens, clip, tokenizer)


def _rows(encoded: ctranslate2.StorageView, rows: list[int]) -> ctranslate2.StorageView:
    """The encoder output of ``rows`` only (on its device): align pays for those rows alone."""
    if rows == list(range(encoded.shape[0])):
        return encoded
    if encoded.device == "cuda":  # CUDA array interface: sliced on the GPU, no copy to the host
        full = torch.as_tensor(encoded, device=f"cuda:{encoded.device_index}")
        return ctranslate2.StorageView.from_array(full[rows].contiguous())
    return ctranslate2.StorageView.from_array(np.ascontiguousarray(np.asarray(encoded)[rows]))


def alignment_heads(model_dir: Path) -> list:
    """The [layer, head] pairs the CTranslate2 directory's config names for ``align``."""
    config = model_dir / "config.json"
    return json.loads(config.read_text()).get("alignment_heads", []) if config.exists() else []
