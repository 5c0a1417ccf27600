"""Long-form windows of a recording: its VAD speech segments packed into windows of up to 30 s
(Whisper's own window), with short gaps of silence between them, and the map from a window's
time back to the recording's.

Whisper pays for its 30 s window whatever the clip's length: one window of six utterances costs
about what one utterance alone does (docs/PERFORMANCE.md). The silence between segments is left
out beyond ``MAX_GAP_S``, so long silences send nothing and can get no text.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np

from moderation.events import SAMPLE_RATE
from moderation.vad import Segment
from moderation.verdict import ModelWord, WindowSegment, word_offsets

MAX_GAP_S = 0.3
"""Silence kept between two segments of a window (less when they were closer in the recording):
Whisper hears a pause there, which it marks with a timestamp, as between spoken sentences."""


CLIP_MARGIN_S = 0.2
"""Audio kept before and after a harmful segment in its incident's clip, as the live VAD keeps."""
SPLIT_SILENCE_S = 0.8
"""A silence this long in the recording ends a segment even where Whisper wrote on across it (in
the window it was only MAX_GAP_S): a pause between sentences, as the live stream's VAD cuts at,
while a hesitation inside one (the VAD's 0.4 s or so) stays. Whisper's own grouping across the
compressed gap varies by CPU (CTranslate2's int8 kernels differ between AVX2 and AVX-512): two
sentences 1 s apart came back as one segment on one machine and as two on another."""


@dataclass(frozen=True)
class Chunk:
    """A stretch of the recording inside a window: its window and recording times."""

    window_s: float
    start_s: float
    end_s: float

    @property
    def window_end_s(self) -> float:
        return self.window_s + self.end_s - self.start_s


@dataclass
class Window:
    """Audio of one Whisper window and where its pieces lie in the recording."""

    audio: np.ndarray
    chunks: list[Chunk]

    @property
    def start_s(self) -> float:
        return self.chunks[0].start_s

    @property
    def end_s(self) -> float:
        return self.chunks[-1].end_s

    @property
    def duration_s(self) -> float:
        return len(self.audio) / SAMPLE_RATE

    def to_recording(self, t: float, start: bool) -> float:
        """Recording time of window time ``t``; inside a gap, the next chunk's start (``start``)
        or the previous chunk's end."""
        for i, chunk in enumerate(self.chunks):
            if t < chunk.window_s:  # in the gap before this chunk
                return chunk.start_s if start or i == 0 else self.chunks[i - 1].end_s
            if t <= chunk.window_end_s:
                return chunk.start_s + (t - chunk.window_s)
        return self.chunks[-1].end_s

    def clip(self, start: float, end: float) -> tuple[np.ndarray, float]:
        """The window's audio from ``start`` to ``end`` (window time) with CLIP_MARGIN_S around
        it, and the recording time where it starts (a gap inside it is MAX_GAP_S at most)."""
        first = max(0.0, start - CLIP_MARGIN_S)
        samples = self.audio[int(first * SAMPLE_RATE):int((end + CLIP_MARGIN_S) * SAMPLE_RATE)]
        return samples, self.to_recording(first, start=True)

    def after(self, t: float) -> Window | None:
        """The part of the window from window time ``t`` on (what is left to transcribe when
        decoding stopped at ``t``); None when less than a frame is left."""
        first = int(round(t * SAMPLE_RATE))
        if len(self.audio) - first < SAMPLE_RATE // 100:
            return None
        chunks = []
        for chunk in self.chunks:
            if chunk.window_end_s <= t:
                continue
            cut = max(0.0, t - chunk.window_s)
            chunks.append(Chunk(max(0.0, chunk.window_s - t), chunk.start_s + cut, chunk.end_s))
        return Window(self.audio[first:], chunks) if chunks else None


@dataclass
class Windower:
    """Packs segments, in order, into windows of at most ``window_s`` seconds."""

    window_s: float
    _parts: list[np.ndarray] = field(default_factory=list)
    _chunks: list[Chunk] = field(default_factory=list)
    _samples: int = 0

    def feed(self, segment: Segment) -> Iterator[Window]:
        """The window that ``segment`` does not fit in any more, if any; the segment starts the next."""
        gap = self._gap(segment)
        if self._chunks and self._samples + len(gap) + len(segment.audio) > self.window_s * SAMPLE_RATE:
            yield from self.flush()
            gap = self._gap(segment)
        if len(gap):
            self._parts.append(gap)
            self._samples += len(gap)
        self._chunks.append(Chunk(self._samples / SAMPLE_RATE, segment.start_s,
                                  segment.start_s + len(segment.audio) / SAMPLE_RATE))
        self._parts.append(np.asarray(segment.audio, dtype=np.float32))
        self._samples += len(segment.audio)

    def flush(self) -> Iterator[Window]:
        if self._chunks:
            yield Window(np.concatenate(self._parts), self._chunks)
        self._parts, self._chunks, self._samples = [], [], 0

    def _gap(self, segment: Segment) -> np.ndarray:
        if not self._chunks:
            return np.zeros(0, np.float32)
        seconds = min(MAX_GAP_S, max(0.0, segment.start_s - self._chunks[-1].end_s))
        return np.zeros(int(round(seconds * SAMPLE_RATE)), np.float32)


def split_at_silences(piece: WindowSegment, window: Window) -> list[WindowSegment]:
    """``piece`` cut between words that SPLIT_SILENCE_S or more of the recording lies between;
    as it is without word times."""
    cuts = [i for i in range(1, len(piece.words))
            if window.to_recording(piece.words[i].start, start=True)
            - window.to_recording(piece.words[i - 1].end, start=False) >= SPLIT_SILENCE_S]
    if not cuts:
        return [piece]
    offsets = word_offsets(piece.text, piece.words)
    parts = []
    for first, last in zip([0, *cuts], [*cuts, len(piece.words)], strict=True):
        words: list[ModelWord] = piece.words[first:last]
        text_from = offsets[first][0] if first else 0
        text_to = offsets[last][0] if last < len(piece.words) else len(piece.text)
        if text_from < 0 or text_to < 0:  # a word not found in the text: keep Whisper's segment
            return [piece]
        parts.append(WindowSegment(start=words[0].start, end=words[-1].end, text=piece.text[text_from:text_to].strip(),
                                   words=words))
    return parts
