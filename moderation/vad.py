"""Speech segmentation with WebRTC VAD over bounded, preallocated buffers.

A segment opens on the first speech frame (with pre-roll), closes after ``min_silence_ms`` of
non-speech (keeping ``post_roll_ms`` of it) or when it reaches ``max_segment_s``, and is dropped
when it holds less than ``min_speech_ms`` of speech. Speech that runs to ``max_segment_s`` is
cut at the quietest point of its last ``cut_search_ms`` (a pause between words), and the audio
after the cut opens the next segment: no word is split or lost.
"""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass

import numpy as np
import webrtcvad

from moderation.events import SAMPLE_RATE
from moderation.settings import ModerationSettings


@dataclass(frozen=True)
class SegmenterLimits:
    frame_ms: int = 30
    aggressiveness: int = 2
    min_silence_ms: int = 400
    max_segment_s: float = 5.0
    min_speech_ms: int = 200
    pre_roll_ms: int = 200
    post_roll_ms: int = 200
    cut_search_ms: int = 1000

    @classmethod
    def from_settings(cls, s: ModerationSettings) -> SegmenterLimits:
        return cls(s.vad_frame_ms, s.vad_aggressiveness, s.min_silence_ms, s.max_segment_s, s.min_speech_ms,
                   s.pre_roll_ms, s.post_roll_ms, s.cut_search_ms)


CUT_WINDOW = SAMPLE_RATE // 100
"""10 ms: the energy resolution of a cut."""
PAUSE_WINDOWS = 10
"""A cut goes in the middle of the quietest stretch of this many CUT_WINDOWs (100 ms): longer than
the silent closure of a stop consonant inside a word (p, t, k: 30-70 ms in espeak-ng's speech),
shorter than a phrase pause (150-170 ms); measured in docs/PERFORMANCE.md."""


def quietest_point(audio: np.ndarray, search: int) -> int:
    """The sample in the middle of the quietest PAUSE_WINDOWS stretch of the last ``search``
    samples of ``audio`` (the latest of equally quiet ones, so the least audio is carried over)."""
    windows = min(len(audio), search) // CUT_WINDOW
    if windows == 0:
        return len(audio)
    start = len(audio) - windows * CUT_WINDOW  # windows end where the audio does
    energy = np.square(audio[start:]).reshape(windows, CUT_WINDOW).mean(axis=1)
    span = min(PAUSE_WINDOWS, windows)
    stretch = np.convolve(energy, np.ones(span) / span, mode="valid")
    quietest = len(stretch) - 1 - int(np.argmin(stretch[::-1]))
    return start + quietest * CUT_WINDOW + span * CUT_WINDOW // 2


@dataclass
class Segment:
    audio: np.ndarray
    """16 kHz mono float32 samples (a copy, owned by the segment)."""
    start_s: float
    end_s: float
    closed_at: float
    """perf_counter() when the audio frame that completed the segment was received."""


class Segmenter:
    def __init__(self, limits: SegmenterLimits):
        if limits.frame_ms not in (10, 20, 30):
            raise ValueError("WebRTC VAD frames must be 10, 20 or 30 ms")
        self.limits = limits
        self._vad = webrtcvad.Vad(limits.aggressiveness)
        self._frame_len = SAMPLE_RATE * limits.frame_ms // 1000
        self._frame = np.zeros(self._frame_len, dtype=np.float32)
        self._frame_fill = 0
        self._pre_roll: deque[np.ndarray] = deque(maxlen=limits.pre_roll_ms // limits.frame_ms)
        self._buffer = np.zeros(int(limits.max_segment_s * SAMPLE_RATE), dtype=np.float32)
        self._length = 0
        self._start = 0
        self._position = 0
        self._in_speech = False
        self._speech_frames = 0
        self._silence_frames = 0

    @property
    def in_speech(self) -> bool:
        """A segment is open: speech has started and not yet been closed by silence."""
        return self._in_speech

    @property
    def trailing_silence_s(self) -> float:
        """How long the open segment's speech has paused (non-speech frames at its end); 0 when none is open."""
        return self._silence_frames * self.limits.frame_ms / 1000 if self._in_speech else 0.0

    def open_speech(self, received_at: float) -> Segment | None:
        """A copy of the open segment's audio so far (interim results), or None when none is open."""
        if not self._in_speech:
            return None
        return Segment(audio=self._buffer[:self._length].copy(), start_s=self._start / SAMPLE_RATE,
                       end_s=(self._start + self._length) / SAMPLE_RATE, closed_at=received_at)

    def feed(self, samples: np.ndarray, received_at: float | None = None) -> list[Segment]:
        """Consume 16 kHz samples; returns the segments they completed."""
        received_at = time.perf_counter() if received_at is None else received_at
        out: list[Segment] = []
        offset = 0
        while offset < len(samples):
            take = min(self._frame_len - self._frame_fill, len(samples) - offset)
            self._frame[self._frame_fill:self._frame_fill + take] = samples[offset:offset + take]
            self._frame_fill += take
            offset += take
            if self._frame_fill == self._frame_len:
                self._frame_fill = 0
                segment = self._on_frame(self._frame, received_at)
                if segment is not None:
                    out.append(segment)
        return out

    def flush(self, received_at: float | None = None) -> list[Segment]:
        """End of stream: close the open segment, including a trailing partial frame."""
        received_at = time.perf_counter() if received_at is None else received_at
        if self._in_speech and self._frame_fill:
            self._append(self._frame[: self._frame_fill])
        self._frame_fill = 0
        if not self._in_speech:
            return []
        segment = self._close(received_at, trailing_silence=self._silence_frames)
        return [segment] if segment is not None else []

    def _is_speech(self, frame: np.ndarray) -> bool:
        pcm = (np.clip(frame, -1.0, 1.0) * 32767).astype("<i2").tobytes()
        return self._vad.is_speech(pcm, SAMPLE_RATE)

    def _on_frame(self, frame: np.ndarray, received_at: float) -> Segment | None:
        speech = self._is_speech(frame)
        self._position += self._frame_len
        if not self._in_speech:
            if not speech:
                self._pre_roll.append(frame.copy())
                return None
            self._open()
        self._append(frame)
        self._speech_frames += speech
        self._silence_frames = 0 if speech else self._silence_frames + 1
        if self._silence_frames * self.limits.frame_ms >= self.limits.min_silence_ms:
            return self._close(received_at, trailing_silence=self._silence_frames)
        if self._length + self._frame_len > len(self._buffer):
            return self._cut(received_at)
        return None

    def _cut(self, received_at: float) -> Segment:
        """Speech reached the maximum: close the segment at its quietest recent point and carry
        the audio after it into the next one, which stays open (speech goes on)."""
        search = min(self.limits.cut_search_ms * SAMPLE_RATE // 1000, self._length // 2)
        cut = quietest_point(self._buffer[:self._length], search)
        segment = Segment(audio=self._buffer[:cut].copy(), start_s=self._start / SAMPLE_RATE,
                          end_s=(self._start + cut) / SAMPLE_RATE, closed_at=received_at)
        carried = self._length - cut
        self._buffer[:carried] = self._buffer[cut:self._length].copy()
        self._start, self._length = self._start + cut, carried
        # The carried frames' flags are not kept: count them as speech, less the trailing silence.
        self._silence_frames = min(self._silence_frames, carried // self._frame_len)
        self._speech_frames = carried // self._frame_len - self._silence_frames
        return segment

    def _open(self) -> None:
        self._in_speech, self._length, self._speech_frames, self._silence_frames = True, 0, 0, 0
        self._start = self._position - self._frame_len
        for frame in self._pre_roll:
            self._append(frame)
        self._start -= len(self._pre_roll) * self._frame_len
        self._pre_roll.clear()

    def _append(self, samples: np.ndarray) -> None:
        self._buffer[self._length:self._length + len(samples)] = samples
        self._length += len(samples)

    def _close(self, received_at: float, trailing_silence: int) -> Segment | None:
        keep_silence = min(trailing_silence, self.limits.post_roll_ms // self.limits.frame_ms)
        length = self._length - (trailing_silence - keep_silence) * self._frame_len
        self._in_speech = False
        tail_start = max(length, self._length - self._pre_roll.maxlen * self._frame_len)
        for i in range(tail_start, self._length - self._frame_len + 1, self._frame_len):
            self._pre_roll.append(self._buffer[i:i + self._frame_len].copy())
        if self._speech_frames * self.limits.frame_ms < self.limits.min_speech_ms:
            return None
        return Segment(
            audio=self._buffer[:length].copy(), start_s=self._start / SAMPLE_RATE,
            end_s=(self._start + length) / SAMPLE_RATE, closed_at=received_at,
        )
