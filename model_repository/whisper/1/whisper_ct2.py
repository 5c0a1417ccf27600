"""The CTranslate2 engine of the whisper model: the same contract as the torch engine
(whisper_batch), on CTranslate2's Whisper (the engine faster-whisper runs), whose int8 CPU kernels
keep Whisper's accuracy where torch's dynamic int8 does not (docs/PERFORMANCE.md).

A Triton batch is one batched encode, one batched language detection (only when a row asks for
it), one batched greedy generate, and, for the rows that want words, one ``align`` per language.
With ``inter_threads`` > 1 the batch is split into that many parts, run at once on CTranslate2's
workers, each with ``intra_threads`` threads (all the cores by default): on 2 CPU cores a batch of
4 costs 702 ms a segment as one call, 553 as two overlapping calls of 2 threads each, and a batch
of 8 665 against 600 (docs/PERFORMANCE.md).

Long-form windows (``transcribe_long``, the batch jobs' path) decode with timestamps after an
optional prompt and are split into Whisper's own segments; their words come from one alignment
of the whole window. On CPU a batch of windows runs on a second copy of the weights with one
thread per core (the window runner), which long windows prefer to the live path's oversubscribed
parts.
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
from whisper.audio import HOP_LENGTH, N_FRAMES, SAMPLE_RATE
from whisper.tokenizer import Tokenizer
from whisper_contract import (
    Engine,
    Languages,
    LongTranscription,
    Piece,
    Transcription,
    is_hallucination,
    is_silent,
    loop_found,
    token_budget,
    transcript,
)
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
SECONDS_PER_TIMESTAMP = 0.02
LONG_FORM_MAX_LENGTH = 448
"""max_length of a long-form window's generate, as faster-whisper passes it (Whisper's text context)."""
PROMPT_MAX_TOKENS = 223
"""Tokens of previous text a long-form prompt keeps (its end): half the text context, less
<|startofprev|>, as openai-whisper and faster-whisper do."""


class WhisperCT2(Engine):
    """Holds one CTranslate2 Whisper model on one device and transcribes batches of 16 kHz clips."""

    def __init__(self, model_dir: str, device: str = "cpu", device_index: int = 0, compute_type: str = "int8",
                 intra_threads: int = 0, inter_threads: int = 1, window_runner: bool = True):
        if compute_type not in COMPUTE_TYPES.get(device, ()):
            raise ValueError(f"compute type {compute_type!r} is not one of {COMPUTE_TYPES.get(device)} on {device}")
        if intra_threads == 0 and device == "cpu":  # every part may use every core (measured best on 2)
            intra_threads = len(os.sched_getaffinity(0))
        self.model = ctranslate2.models.Whisper(model_dir, device=device, device_index=device_index,
                                                compute_type=compute_type, intra_threads=intra_threads,
                                                inter_threads=inter_threads)
        self.inter_threads = inter_threads
        self._parts = ThreadPoolExecutor(inter_threads, "whisper-part") if inter_threads > 1 else None
        self._windows = self._window_runner(model_dir, device, compute_type, intra_threads, inter_threads) \
            if window_runner else None
        self.languages = Languages(self.model.is_multilingual, self.model.num_languages)
        self.tokenizer = self.languages.tokenizer
        self.log_mel = LogMel(self.model.n_mels, torch.device("cpu"), pad_in_mel=True)  # as faster-whisper
        eot = self.tokenizer.eot
        # As the torch engine: no special token after EOT (timestamps included), no non-speech symbol.
        self._suppress = sorted(set(self.tokenizer.non_speech_tokens)
                                | set(range(eot + 1, self.tokenizer.timestamp_begin + TIMESTAMP_TOKENS)))
        # Long-form decoding keeps the timestamps (CTranslate2 applies Whisper's timestamp rules
        # when the prompt lacks <|notimestamps|>).
        self._suppress_long = sorted(set(self.tokenizer.non_speech_tokens)
                                     | set(range(eot + 1, self.tokenizer.timestamp_begin)))
        logger.info("loaded CTranslate2 whisper %s on %s:%d (%s; intra %d, inter %d threads)", model_dir, device,
                    device_index, compute_type, intra_threads, inter_threads)
        logger.info("word alignment heads: %s", alignment_heads(Path(model_dir)))

    @staticmethod
    def _window_runner(model_dir: str, device: str, compute_type: str, intra_threads: int,
                       inter_threads: int) -> tuple[ctranslate2.models.Whisper, ThreadPoolExecutor] | None:
        """On CPU, a second copy of the weights for batches of long-form windows: one thread per
        part, a part per core, where the live path's parts (``intra`` threads each, best for a
        segment alone) oversubscribe the cores. Through the job API, 4 recordings at once ran at
        RTF 0.022 with it against 0.024 without (2 cores; in-process the two were even:
        docs/PERFORMANCE.md). A batch smaller than the cores keeps the live model."""
        threads = len(os.sched_getaffinity(0))
        if device != "cpu" or threads < 2 or intra_threads * inter_threads <= threads:
            return None
        model = ctranslate2.models.Whisper(model_dir, device=device, compute_type=compute_type, intra_threads=1,
                                           inter_threads=threads)
        return model, ThreadPoolExecutor(threads, "whisper-window")

    def transcribe(self, clips: list[np.ndarray], language_tokens: list[int | None],
                   word_timestamps: list[bool] | None = None, fit: bool = False) -> list[Transcription]:
        flags = word_timestamps or [False] * len(clips)
        return self._in_parts(lambda *columns: self._transcribe(*columns, fit=fit), self._parts, self.inter_threads,
                              clips, language_tokens, flags)

    def _in_parts(self, run, executor: ThreadPoolExecutor | None, count: int, clips: list, *columns: list) -> list:
        """``run(clips, *columns)`` on the batch, split into ``count`` parts run at once on ``executor``."""
        if executor is None or len(clips) == 1:
            return run(clips, *columns)
        parts = [list(range(i, len(clips), count)) for i in range(min(count, len(clips)))]
        futures = [executor.submit(run, *[[column[r] for r in part] for column in (clips, *columns)])
                   for part in parts]
        results: list = [None] * len(clips)
        for part, future in zip(parts, futures, strict=True):
            for row, result in zip(part, future.result(), strict=True):
                results[row] = result
        return results

    def close(self) -> None:
        for executor in (self._parts, self._windows[1] if self._windows else None):
            if executor is not None:
                executor.shutdown(wait=True)

    long_form = True

    def transcribe_long(self, clips: list[np.ndarray], language_tokens: list[int | None], prompts: list[str],
                        word_timestamps: list[bool]) -> list[LongTranscription]:
        """Each clip as one 30 s window, decoded with timestamps after its prompt (the text before
        it), split into Whisper's segments at its timestamps; one batched encode, generate and
        align per part of the batch (``inter_threads``)."""
        model, executor, count = self.model, self._parts, self.inter_threads
        if self._windows is not None and len(clips) >= self._windows[0].num_workers:
            model, executor = self._windows
            count = model.num_workers
        return self._in_parts(lambda *columns: self._transcribe_long(model, *columns), executor, count, clips,
                              language_tokens, prompts, word_timestamps)

    def _transcribe_long(self, model: ctranslate2.models.Whisper, clips: list[np.ndarray],
                         language_tokens: list[int | None], prompts: list[str],
                         word_timestamps: list[bool]) -> list[LongTranscription]:
        encoded = model.encode(self._features(clips, N_FRAMES))
        languages = self._languages(encoded, language_tokens, model)
        generated = model.generate(
            encoded, [self._long_prompt(language, prompt) for language, prompt in zip(languages, prompts, strict=True)],
            beam_size=1, max_length=LONG_FORM_MAX_LENGTH, return_scores=True, return_no_speech_prob=True,
            suppress_blank=True, suppress_tokens=self._suppress_long)
        rows = [self._long_result(g, clip, language) for g, clip, language in zip(generated, clips, languages,
                                                                                  strict=True)]
        results = [result for result, _ in rows]
        wanted = [r for r, result in enumerate(results) if word_timestamps[r] and result.pieces]
        if wanted:
            self._attach_long_words(model, results, [rows[r][1] for r in wanted], wanted, encoded, clips, languages)
        return results

    def _long_prompt(self, language: int, prompt: str) -> list[int]:
        t = self.tokenizer
        previous = t.encode(" " + prompt.strip())[-PROMPT_MAX_TOKENS:] if prompt.strip() else []
        return ([t.sot_prev, *previous] if previous else []) + [t.sot, language, t.transcribe]

    def _long_result(self, generated, clip: np.ndarray, language: int) -> tuple[LongTranscription, list[list[int]]]:
        """The window's pieces, and each piece's text tokens (for the alignment)."""
        sequence = list(generated.sequences_ids[0])
        begin = self.tokenizer.timestamp_begin
        text_positions = [i for i, token in enumerate(sequence) if token < begin]
        found = loop_found([sequence[i] for i in text_positions])
        looped = found is not None
        if looped:  # keep up to the end of the loop's first copy
            sequence = sequence[:text_positions[found[0] - 1] + 1] if found[0] else []
        prob = float(generated.no_speech_prob)
        avg = float(generated.scores[0])
        duration = len(clip) / SAMPLE_RATE
        pieces, tokens, transcribed_to = split_timestamps(sequence, begin, self.tokenizer.eot, duration,
                                                          stopped=looped or len(sequence) >= MAX_DECODE_TOKENS - 1)
        kept_pieces, kept_tokens = [], []
        if not is_silent(prob, avg):
            for (start, end), piece_tokens in zip(pieces, tokens, strict=True):
                text = self.tokenizer.decode(piece_tokens).strip()
                if text and not is_hallucination(text, prob):
                    kept_pieces.append(Piece(start=start, end=end, text=text))
                    kept_tokens.append(piece_tokens)
        return LongTranscription(pieces=kept_pieces, transcribed_to=transcribed_to, no_speech_prob=prob,
                                 avg_logprob=avg, language=self.languages.code(language)), kept_tokens

    def _attach_long_words(self, model, results: list[LongTranscription], tokens: list[list[list[int]]],
                           rows: list[int], encoded, clips, languages) -> None:
        """Times the words of each wanted window in one alignment of all its pieces' text (as
        openai-whisper does per window), then gives each word to the piece its text lies in."""
        flat = [[token for piece in row for token in piece] for row in tokens]
        try:
            for language, group in itertools.groupby(sorted(range(len(rows)), key=lambda i: languages[rows[i]]),
                                                     key=lambda i: languages[rows[i]]):
                group = list(group)
                aligned = model.align(
                    _rows(encoded, [rows[i] for i in group]), self._prompt(language)[:-1], [flat[i] for i in group],
                    [len(clips[rows[i]]) // HOP_LENGTH for i in group], median_filter_width=MEDIAN_FILTER_WIDTH)
                tokenizer = self.languages.word_tokenizer(language)
                for i, alignment in zip(group, aligned, strict=True):
                    words = _row_words(alignment, flat[i], clips[rows[i]], tokenizer)
                    assign_words(results[rows[i]].pieces, words)
        except Exception as exc:  # noqa: BLE001 - a word-timing bug must not cost the transcripts
            logger.exception("word alignment of %d long-form windows failed", len(rows))
            for row in rows:
                results[row].words_error = f"word timestamps failed: {exc}"

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

    def _languages(self, encoded, language_tokens: list[int | None], model=None) -> list[int]:
        """Each row's language token: requested, or detected (one batched pass, only if a row asks)."""
        if all(token is not None for token in language_tokens):
            return list(language_tokens)
        detected = (model or self.model).detect_language(encoded)
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


def split_timestamps(sequence: list[int], timestamp_begin: int, eot: int, duration: float,
                     stopped: bool) -> tuple[list[tuple[float, float]], list[list[int]], float]:
    """Whisper's segments in a timestamped token sequence: (start, end) of each, their text tokens,
    and how far the window is transcribed. Text after the last timestamp is a segment to the end of
    the window when decoding ended by itself; when it was ``stopped`` (token limit, loop), that
    text is dropped and the window counts as transcribed to its last timestamp."""
    spans, tokens, text, start, last = [], [], [], 0.0, 0.0
    for token in sequence:
        if token >= timestamp_begin:
            time = min(duration, (token - timestamp_begin) * SECONDS_PER_TIMESTAMP)
            if text:
                spans.append((start, max(start, time)))
                tokens.append(text)
                text = []
            start = last = time
        elif token < eot:
            text.append(token)
    if not text or stopped:
        return spans, tokens, last if stopped else duration
    spans.append((start, duration))
    tokens.append(text)
    return spans, tokens, duration


def assign_words(pieces: list[Piece], words) -> None:
    """Gives each word (in order) to the piece whose text it is found in, reading on from the
    previous word (a word found in none goes to the piece of the word before it), and times each
    piece by its words, as openai-whisper does: its timestamps are coarser than the words'."""
    piece, cursor = 0, 0
    for word in words:
        text = word.word.strip()
        for candidate in range(piece, len(pieces)):
            at = pieces[candidate].text.find(text, cursor if candidate == piece else 0) if text else -1
            if at >= 0:
                piece, cursor = candidate, at + len(text)
                break
        if pieces:
            pieces[piece].words.append(word)
    for timed in pieces:
        if timed.words:
            timed.start, timed.end = timed.words[0].start, max(timed.words[0].start, timed.words[-1].end)


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
