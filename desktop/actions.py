"""What the client does to the sound when it learns of a harmful span: beep over it, duck the
playing sound, or bleep a delayed copy (the delay line). Each works on stream seconds: the
capture's first sample is 0, the same clock as the edge's span times."""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from desktop.volume import Volume
from moderation.bleep import BLEEP_HZ, BLEEP_LEVEL

BEEP_MIN_S = 0.15
"""Shortest beep: a span of one short word still gets an audible tone."""
BEEP_MAX_S = 2.0
"""Longest beep: a classifier span covers its whole segment, which a tone that long would drown."""


def tone(start_frame: int, frames: int, rate: int, channels: int) -> np.ndarray:
    """The censor tone (moderation.bleep's) for frames ``start_frame`` on: phase-continuous across blocks."""
    t = np.arange(start_frame, start_frame + frames) / rate
    mono = (BLEEP_LEVEL * np.sin(2 * np.pi * BLEEP_HZ * t)).astype(np.float32)
    return np.repeat(mono[:, None], channels, axis=1)


def beep(span_s: float, rate: int, channels: int) -> np.ndarray:
    """The tone ``beep`` mode plays at once for a span this long."""
    frames = round(min(BEEP_MAX_S, max(BEEP_MIN_S, span_s)) * rate)
    return tone(0, frames, rate, channels)


class Ducker:
    """Lowers a volume by ``db`` while any span's duck lasts, then sets it back to exactly what it
    was. Overlapping ducks extend one another instead of lowering further."""

    def __init__(self, volume: Volume, db: float, margin_s: float, clock: Callable[[], float] = time.monotonic):
        self.volume, self.db, self.margin_s, self.clock = volume, db, margin_s, clock
        self._lock = threading.Lock()
        self._saved: float | None = None
        self._until = 0.0
        self.ducks = 0

    @property
    def ducked(self) -> bool:
        return self._saved is not None

    def duck(self, span_s: float) -> float:
        """Duck now for the span's length plus the margin; the time (``clock``) it is due back."""
        with self._lock:
            now = self.clock()
            self._until = max(self._until, now + span_s + self.margin_s)
            if self._saved is None:
                self._saved = self.volume.get()
                self.volume.set(self.volume.lowered(self._saved, self.db))
                self.ducks += 1
            return self._until

    def restore_due(self) -> bool:
        """Restore the volume if its duck is over; whether it is (or was) restored."""
        with self._lock:
            if self._saved is None:
                return True
            if self.clock() < self._until:
                return False
            self.volume.set(self._saved)
            self._saved = None
            return True

    def restore(self) -> None:
        """Set the volume back now (the client stops)."""
        with self._lock:
            if self._saved is not None:
                self.volume.set(self._saved)
                self._saved = None


@dataclass
class _Block:
    start: int
    """Stream frame of the block's first sample."""
    samples: np.ndarray


class DelayLine:
    """``bleep`` mode: what is captured plays on ``delay_s`` later, toned or muted over each
    harmful span (padded by ``pad_s``) that was known before its sound was due. Driven by the
    capture: each block captured releases the block ``delay_s`` older, so the delay holds to the
    sample whatever the devices' clocks do."""

    def __init__(self, delay_s: float, rate: int, channels: int, pad_s: float, mute: bool,
                 play: Callable[[np.ndarray], None]):
        self.delay_frames, self.rate, self.channels = round(delay_s * rate), rate, channels
        self.pad_s, self.mute, self.play = pad_s, mute, play
        self._lock = threading.Lock()
        self._queue: deque[_Block] = deque()
        self._queued = 0
        self._captured = 0
        self._played = 0
        """Stream frame up to which blocks were released to the output."""
        self._spans: list[tuple[int, int]] = []
        self.late = 0
        """Spans that came after their sound had (at least partly) played."""
        self.censored_frames = 0

    def push(self, samples: np.ndarray) -> None:
        """A captured block (frames × channels float32): queue it, release what is now due."""
        due: list[_Block] = []
        with self._lock:
            self._queue.append(_Block(self._captured, samples))
            self._captured += len(samples)
            self._queued += len(samples)
            while self._queue and self._queued - len(self._queue[0].samples) >= self.delay_frames:
                block = self._queue.popleft()
                self._queued -= len(block.samples)
                self._played = block.start + len(block.samples)
                due.append(self._censored(block))
            self._spans = [s for s in self._spans if s[1] > self._played]
        for block in due:
            self.play(block)

    def add_span(self, start_s: float, end_s: float, count_late: bool = True) -> bool:
        """A harmful span in stream seconds; False when part of it had already played (late,
        counted unless ``count_late`` is false: a final's span over an interim one)."""
        start = max(0, round((start_s - self.pad_s) * self.rate))
        end = round((end_s + self.pad_s) * self.rate)
        with self._lock:
            late = start < self._played
            if end > self._played:
                self._spans.append((max(start, self._played), end))
            if late and count_late:
                self.late += 1
        return not late

    def _censored(self, block: _Block) -> np.ndarray:
        out = block.samples
        stop = block.start + len(out)
        for start, end in self._spans:
            lo, hi = max(start, block.start), min(end, stop)
            if lo >= hi:
                continue
            if out is block.samples:
                out = out.copy()
            a, b = lo - block.start, hi - block.start
            out[a:b] = 0.0 if self.mute else tone(lo, hi - lo, self.rate, out.shape[1])
            self.censored_frames += hi - lo
        return out
