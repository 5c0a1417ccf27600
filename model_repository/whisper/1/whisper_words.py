"""Word timing helpers of the whisper model: alignment heads, openai-whisper's duration clamping,
and fitting DTW's word spans to the speech in the clip (no Triton imports; used by both engines).

DTW over the alignment heads' cross-attention (openai-whisper's ``word_timestamps``) gives each word
the pause before it; fitting the words to the frames that hold speech removes that: on espeak-ng
words with pauses, a median error of 0.006 s instead of 0.25 s (docs/PERFORMANCE.md).
"""

from __future__ import annotations

import itertools

import numpy as np
from whisper.audio import HOP_LENGTH
from whisper.audio import TOKENS_PER_SECOND as ENCODER_FRAMES_PER_SECOND
from whisper.model import ModelDimensions
from whisper.timing import WordTiming, merge_punctuations
from whisper.tokenizer import Tokenizer
from whisper_contract import Word

ALIGNMENT_HEADS_KEY, ALIGNMENT_ORIGIN_KEY = "alignment_heads", "alignment_heads_origin"
"""Checkpoint keys the exporter writes: the [layer, head] pairs of the decoder's cross-attention heads
that follow the audio (openai-whisper's published ones for known models), and where they came from."""
DEFAULT_HEADS_ORIGIN = "default: every head of the last half of the decoder layers"
"""Checkpoints without published heads use openai-whisper's own default (Whisper.__init__)."""
PROMPT_TOKENS = 4
"""sot, language, transcribe, no_timestamps: the decoder prompt (WhisperBatch._prompt)."""
MEDIAN_FILTER_WIDTH = 7
"""Frames of the median filter over the attention weights (openai-whisper's find_alignment default)."""
MAX_MEDIAN_WORD_S = 0.7
"""Word-duration clamping as openai-whisper does it: the median word lasts at most this long, and a
word at a sentence boundary or the clip's first word may last at most twice the median ..."""
FIRST_WORD_PAUSE_MEDIANS = 4
"""... the first word is clamped when it ends more than this many medians after the clip starts."""
SILENCE_DB = -40.0
"""An encoder frame (20 ms) whose RMS is this far below the clip's loudest frame is silence: DTW
hands the silence before a word to that word (openai-whisper starts each word where the previous one
ended), so words are fitted to the speech in their span. Noisy audio has no frame this quiet and
keeps the DTW times."""
MIN_PAUSE_FRAMES = 6
"""Silences shorter than this many encoder frames (120 ms: a stop consonant's closure) are part of speech."""
FRAME_SAMPLES = 2 * HOP_LENGTH
"""Samples per encoder frame (the encoder's stride-2 conv halves the 10 ms mel frames)."""
SENTENCE_END_MARKS = ".。!！?？"
PREPEND_PUNCTUATIONS = "\"'“¿([{-"
APPEND_PUNCTUATIONS = "\"'.。,，!！?？:：”)]}、"
"""openai-whisper's defaults: punctuation is merged into the word it belongs to, not timed alone."""


def default_alignment_heads(dims: ModelDimensions) -> list[tuple[int, int]]:
    """Every head of the last half of the decoder layers (openai-whisper's default)."""
    return [(layer, head) for layer in range(dims.n_text_layer // 2, dims.n_text_layer)
            for head in range(dims.n_text_head)]


def checkpoint_alignment_heads(checkpoint: dict, dims: ModelDimensions) -> tuple[list[tuple[int, int]], str]:
    """The checkpoint's alignment heads and their origin; the default for checkpoints that have none
    (exported before the heads were recorded, or from a source that publishes none)."""
    stored = checkpoint.get(ALIGNMENT_HEADS_KEY)
    if not stored:
        return default_alignment_heads(dims), DEFAULT_HEADS_ORIGIN
    heads = [(int(layer), int(head)) for layer, head in stored]
    outside = [h for h in heads if not (0 <= h[0] < dims.n_text_layer and 0 <= h[1] < dims.n_text_head)]
    if outside:
        raise ValueError(f"alignment heads {outside} lie outside the decoder's "
                         f"{dims.n_text_layer} layers x {dims.n_text_head} heads")
    return sorted(set(heads)), str(checkpoint.get(ALIGNMENT_ORIGIN_KEY, "checkpoint"))


def median_word_duration(timings: list[WordTiming]) -> float:
    durations = [t.end - t.start for t in timings if t.end > t.start]
    return min(MAX_MEDIAN_WORD_S, float(np.median(durations))) if durations else 0.0


def clamp_sentence_boundaries(timings: list[WordTiming], longest: float) -> None:
    """openai-whisper's clamping: DTW gives a word beside a sentence end the pause around it; cut
    such words (and the final marks) to ``longest``. Runs before punctuation is merged."""
    for previous, timing in itertools.pairwise(timings):
        if timing.end - timing.start > longest:
            if timing.word in SENTENCE_END_MARKS:
                timing.end = timing.start + longest
            elif previous.word in SENTENCE_END_MARKS:
                timing.start = timing.end - longest


def clamp_first_word(words: list[WordTiming], median: float) -> None:
    """The clip's first word after a leading pause gets the pause too: start it ``2 * median``
    before its end, as openai-whisper does for the first word of a segment after silence."""
    if words and words[0].end > FIRST_WORD_PAUSE_MEDIANS * median and words[0].end - words[0].start > 2 * median:
        words[0].start = max(0.0, words[0].end - 2 * median)


def speech_frames(clip: np.ndarray) -> np.ndarray:
    """Per encoder frame of ``clip``: True where it is louder than SILENCE_DB below its loudest frame."""
    n = len(clip) // FRAME_SAMPLES
    rms = np.sqrt(np.square(clip[: n * FRAME_SAMPLES].astype(np.float64).reshape(n, FRAME_SAMPLES)).mean(axis=1))
    if n == 0 or rms.max() <= 0:
        return np.ones(n, dtype=bool)
    return 20 * np.log10(np.maximum(rms, 1e-12) / rms.max()) > SILENCE_DB


def voiced_runs(speech: np.ndarray) -> list[tuple[int, int]]:
    """[start, end) frame runs of speech, joined across silences shorter than a pause."""
    voiced = np.flatnonzero(speech)
    if not voiced.size:
        return []
    breaks = np.flatnonzero(np.diff(voiced) > MIN_PAUSE_FRAMES)
    starts = np.r_[voiced[0], voiced[breaks + 1]]
    ends = np.r_[voiced[breaks], voiced[-1]] + 1
    return list(zip(starts.tolist(), ends.tolist(), strict=True))


def snap_to_speech(words: list[WordTiming], speech: np.ndarray) -> None:
    """Fit each word to the longest stretch of speech in its DTW span: the span often holds the pause
    before the word and the tail of the previous word, which this drops. A word whose span holds no
    speech (or audio too noisy to have silence) keeps its DTW times."""
    for word in words:
        first = round(word.start * ENCODER_FRAMES_PER_SECOND)
        runs = voiced_runs(speech[first: round(word.end * ENCODER_FRAMES_PER_SECOND)])
        if runs:
            run_start, run_end = max(runs, key=lambda run: (run[1] - run[0], run[0]))
            word.start = (first + run_start) / ENCODER_FRAMES_PER_SECOND
            word.end = (first + run_end) / ENCODER_FRAMES_PER_SECOND


def extend_to_speech_end(words: list[WordTiming], speech: np.ndarray) -> None:
    """DTW often ends a word before its sound does (the rest goes to the pause after it): a word whose
    speech goes on past its end is extended to where that speech stops, never past the next word."""
    for i, word in enumerate(words):
        first, last = round(word.start * ENCODER_FRAMES_PER_SECOND), round(word.end * ENCODER_FRAMES_PER_SECOND)
        limit = round(words[i + 1].start * ENCODER_FRAMES_PER_SECOND) if i + 1 < len(words) else len(speech)
        for run_start, run_end in voiced_runs(speech[first:limit]):
            if run_start < last - first <= run_end:
                word.end = max(word.end, (first + run_end) / ENCODER_FRAMES_PER_SECOND)


def path_words(text_indices: np.ndarray, time_indices: np.ndarray, token_probs: list[float],
               text_tokens: list[int], clip: np.ndarray, tokenizer: Tokenizer) -> list[Word]:
    """Words with their times and mean token probability, from one row's alignment path (DTW's
    token and encoder-frame indices, whichever engine computed them): openai-whisper's word
    splitting and clamping, then fitted to the speech in ``clip``."""
    words, word_tokens = tokenizer.split_to_word_tokens(text_tokens + [tokenizer.eot])
    if len(word_tokens) <= 1:  # EOT alone: nothing to time
        return []
    jumps = np.pad(np.diff(text_indices), (1, 0), constant_values=1).astype(bool)
    jump_times = time_indices[jumps] / ENCODER_FRAMES_PER_SECOND  # when each token's path starts
    boundaries = np.pad(np.cumsum([len(t) for t in word_tokens[:-1]]), (1, 0))
    timings = [WordTiming(word, tokens, float(jump_times[i]), float(jump_times[j]),
                          float(np.mean(token_probs[i:j])))
               for word, tokens, i, j in zip(words[:-1], word_tokens[:-1], boundaries[:-1], boundaries[1:],
                                              strict=True)]
    median = median_word_duration(timings)
    if median > 0:
        clamp_sentence_boundaries(timings, 2 * median)
    merge_punctuations(timings, PREPEND_PUNCTUATIONS, APPEND_PUNCTUATIONS)
    timings = [t for t in timings if t.word.strip()]
    clamp_first_word(timings, median)
    speech = speech_frames(clip)
    snap_to_speech(timings, speech)
    extend_to_speech_end(timings, speech)
    return [Word(t.word.strip(), round(t.start, 2), round(t.end, 2), round(t.probability, 4)) for t in timings]
