"""One job's run: decode, segment with the shared VAD, moderate on Triton, stream the events.

Segments go to Triton ``JobSettings.concurrency`` at a time, at bulk priority, and their events are
written in order. A run that resumes a job (its worker died) decodes the file again and skips the
segments whose events are already in the job's stream.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections import deque
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from jobs.decode import decode
from jobs.metrics import JobMetrics
from jobs.models import FINAL_EVENTS, JobErrorCode, JobEvent, JobInfo, JobState, ProgressEvent
from jobs.settings import JobSettings
from jobs.store import JobStore, LeaseLost, StoredEvent, now, with_state
from moderation.events import SAMPLE_RATE, SegmentEvent
from moderation.triton import ModerationPool, Priority, TritonCallError
from moderation.vad import Segment, Segmenter, SegmenterLimits
from moderation.verdict import Moderation, segment_event, wants_word_times

logger = logging.getLogger(__name__)

AUTO = "auto"
DETECT_WINDOW_S = 30.0
"""``auto`` detects the language from this much of the recording's first speech (Whisper's window)."""
PROGRESS_INTERVAL_S = 1.0
"""Least wall time between two progress events (a segment result may come every few ms)."""
RETRY_BACKOFF_S = 0.5
"""Wait before the second try of a segment Triton could not take; doubles per try ..."""
RETRY_BACKOFF_MAX_S = 5.0
"""... up to this, while JobSettings.triton_wait_s lasts."""
RETRY_REASONS = ("unavailable", "timeout", "expired_in_queue")


class Handover(Exception):
    """The worker is stopping: the job stopped after its last finished segment, for another worker."""


class JobFailed(Exception):
    def __init__(self, code: JobErrorCode, message: str):
        super().__init__(message)
        self.code = code


@dataclass
class Resume:
    """What the job's stream already holds from earlier runs."""

    segments: list[SegmentEvent] = field(default_factory=list)
    finished: bool = False

    @classmethod
    def from_events(cls, events: list[StoredEvent]) -> Resume:
        resume = cls()
        for event in events:
            if event.event == JobEvent.TRANSCRIPT_SEGMENT:
                resume.segments.append(SegmentEvent.model_validate_json(event.data))
            elif event.event in FINAL_EVENTS:
                resume.finished = True
        return resume

    @property
    def next_seq(self) -> int:
        return self.segments[-1].seq + 1 if self.segments else 0


@dataclass
class JobRun:
    """A worker's run of one job; it writes only while it holds the job's lease (``worker``)."""

    info: JobInfo
    path: Path
    worker: str
    store: JobStore
    pool: ModerationPool
    settings: JobSettings
    resume: Resume
    stopping: threading.Event = field(default_factory=threading.Event)
    """Set when the worker shuts down: no new segment starts, the ones in flight are written."""
    metrics: JobMetrics = field(default_factory=JobMetrics)
    lost: threading.Event = field(default_factory=threading.Event)
    """Set when this worker lost the job's lease: it stops like a hand-over, writing nothing more."""
    language: str | None = None
    position_s: float = 0.0
    _progress_at: float = float("-inf")
    _progress_position_s: float = -1.0

    async def run(self) -> list[SegmentEvent]:
        """All segments of the recording (resumed ones first); raises JobFailed or LeaseLost."""
        self.language = self.info.language or (None if self.info.options.language == AUTO
                                               else self.info.options.language)
        segments = list(self.resume.segments)
        window: deque[asyncio.Task[SegmentEvent]] = deque()
        try:
            async for seq, segment in self._segments():
                if self.stopping.is_set() or self.lost.is_set():
                    break
                window.append(asyncio.create_task(self._moderate(seq, segment)))
                if len(window) >= self.settings.concurrency:
                    segments.append(await self._emit(window.popleft()))
            while window:
                segments.append(await self._emit(window.popleft()))
            if self.lost.is_set():
                raise LeaseLost(f"job {self.info.id}: lease lost")
            if self.stopping.is_set():
                raise Handover(f"job {self.info.id}: worker stopping after segment {len(segments) - 1}")
        finally:
            # A failure: the segments still in the window are not wanted any more. Their Triton
            # calls run on to their end in the pool, which never cancels one (docs/OPERATIONS.md).
            for task in window:
                task.cancel()
            await asyncio.gather(*window, return_exceptions=True)
        return segments

    async def _segments(self) -> AsyncIterator[tuple[int, Segment]]:
        """(seq, segment) of segments not yet done; detects the language first when asked to."""
        source = self._segmented()
        if self.language is None and self.info.options.language == AUTO:
            head = []
            async for item in source:
                head.append(item)
                if sum(len(s.audio) for _, s in head) >= DETECT_WINDOW_S * SAMPLE_RATE:
                    break
            await self._detect_language([s for _, s in head])
            for item in head:
                yield item
        async for item in source:
            yield item

    async def _segmented(self) -> AsyncIterator[tuple[int, Segment]]:
        segmenter = Segmenter(SegmenterLimits.from_settings(self.settings))
        chunks = decode(self.path, self.settings.max_duration_s)
        seq = 0
        while (chunk := await asyncio.to_thread(_next_chunk, chunks)) is not None:
            self.position_s += len(chunk) / SAMPLE_RATE
            for segment in segmenter.feed(chunk):
                if seq >= self.resume.next_seq:
                    yield seq, segment
                seq += 1
        for segment in segmenter.flush():
            if seq >= self.resume.next_seq:
                yield seq, segment
            seq += 1

    async def _detect_language(self, head: list[Segment]) -> None:
        if not head:  # no speech at all: the model's default applies
            return
        audio = np.concatenate([s.audio for s in head])[: int(DETECT_WINDOW_S * SAMPLE_RATE)]
        result = await self._call(audio, AUTO, with_words=False)
        self.language = result.language
        logger.info("job %s: detected language %s", self.info.id, self.language)

    async def _moderate(self, seq: int, segment: Segment) -> SegmentEvent:
        with_words = wants_word_times(self.pool.facts, self.settings.span_word_times, self.info.options.word_timestamps)
        started = time.perf_counter()
        result = await self._call(segment.audio, self.language, with_words)
        event = segment_event(result, self.pool.facts, self.settings.verdict_policy(), seq, segment.start_s,
                              segment.end_s, self.info.options.word_timestamps)
        event.latency_ms = round((time.perf_counter() - started) * 1000, 1)
        return event

    async def _call(self, audio: np.ndarray, language: str | None, with_words: bool) -> Moderation:
        """One Triton call, tried again (with backoff) while Triton is unavailable or too busy, for
        up to ``triton_wait_s``."""
        give_up_at = time.monotonic() + self.settings.triton_wait_s
        backoff = RETRY_BACKOFF_S
        while True:
            try:
                return await self.pool.moderate(audio, language, with_words, Priority.BULK)
            except TritonCallError as exc:
                if self.lost.is_set():
                    raise LeaseLost(f"job {self.info.id}: lease lost while Triton fails ({exc})") from exc
                if self.stopping.is_set():
                    raise Handover(f"job {self.info.id}: worker stopping while Triton fails ({exc})") from exc
                if exc.reason not in RETRY_REASONS or time.monotonic() + backoff > give_up_at:
                    raise JobFailed(JobErrorCode(exc.code), str(exc)) from exc
                logger.warning("job %s: Triton call failed (%s); trying again in %.1f s", self.info.id, exc, backoff)
                self.metrics.triton_retries.labels(exc.reason).inc()
                await asyncio.sleep(backoff)  # backoff before a retry, not a race fix
                backoff = min(RETRY_BACKOFF_MAX_S, backoff * 2)

    async def _emit(self, task: asyncio.Task[SegmentEvent]) -> SegmentEvent:
        """Writes a finished segment's event (and a progress event now and then)."""
        event = await task
        self.info = self.info.model_copy(update={"segments_done": event.seq + 1, "language": self.language,
                                                 **self._progress(event.end_s)})
        await self.store.append(self.info.id, self.worker, JobEvent.TRANSCRIPT_SEGMENT, event, self.info)
        self.metrics.segments.labels("harmful" if event.is_harmful else "normal").inc()
        if time.monotonic() - self._progress_at >= PROGRESS_INTERVAL_S:
            await self.progress_event(event.end_s)
        return event

    def _progress(self, position_s: float) -> dict:
        duration = self.info.duration_s
        fraction = min(1.0, position_s / duration) if duration else 0.0
        return {"position_s": round(position_s, 3), "progress": round(fraction, 4)}

    async def progress_event(self, position_s: float) -> None:
        if round(position_s, 3) == self._progress_position_s:
            return  # said already
        self._progress_at, self._progress_position_s = time.monotonic(), round(position_s, 3)
        duration = self.info.duration_s
        event = ProgressEvent(fraction=round(min(1.0, position_s / duration), 4) if duration else None,
                              position_s=round(position_s, 3), duration_s=duration)
        await self.store.append(self.info.id, self.worker, JobEvent.PROGRESS, event)


def _next_chunk(chunks: Iterator[np.ndarray]) -> np.ndarray | None:
    return next(chunks, None)


def started(info: JobInfo) -> JobInfo:
    return with_state(info, JobState.RUNNING, started_at=info.started_at or now())
