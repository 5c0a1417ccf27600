"""One job's run: decode, segment with the shared VAD, moderate on Triton, stream the events.

With long-form windows (``JobSettings.long_form``, when the served whisper model decodes them) the
speech segments are packed into windows of up to 30 s (jobs/windows.py), each transcribed by the
whisper model into Whisper's own segments, whose texts then go to the classifier and lexicon in
one batch; otherwise each speech segment goes through the ensemble, as a live stream's does.
Windows (or segments) go to Triton ``JobSettings.concurrency`` at a time, at bulk priority, and
their events are written in order, a window's all at once. A run that resumes a job (its worker
died) decodes the file again and skips the windows (or segments) whose events are already in the
job's stream: windows are cut the same way on every run, so the resumed transcript is the same.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

import numpy as np

from jobs.decode import decode
from jobs.metrics import JobMetrics
from jobs.models import FINAL_EVENTS, JobErrorCode, JobEvent, JobInfo, JobState, ProgressEvent
from jobs.settings import JobSettings
from jobs.store import JobStore, LeaseLost, StoredEvent, now, with_state
from jobs.windows import Window, Windower, split_at_silences
from moderation.events import SAMPLE_RATE, SegmentEvent
from moderation.incidents import IncidentDraft, Incidents
from moderation.triton import ModerationPool, Priority, TritonCallError
from moderation.vad import Segment, Segmenter, SegmenterLimits
from moderation.verdict import ModelWord, Moderation, WindowSegment, segment_event, wants_word_times

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
MAX_WINDOW_CALLS = 4
"""Calls one long-form window may take: when Whisper stops early (its 224-token limit, a loop),
the rest of the window is sent again, from its last complete segment, up to this many times."""
RESEND_MIN_S = 1.0
"""A window's rest shorter than this is not sent again (Whisper's last timestamp often falls a
little before the audio's end)."""
TEXTS_PER_CALL = 32
"""Segment texts of a window sent to the classifier and lexicon in one request (their
max_batch_size is 64)."""
T = TypeVar("T")


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
    incidents: Incidents | None = None
    """Where the job's harmful segments are kept for moderators (None: not kept)."""
    _clips: dict[int, tuple[np.ndarray, float]] = field(default_factory=dict)
    """The audio of each harmful event not yet written (by the event's id()), for its incident."""
    language: str | None = None
    position_s: float = 0.0
    _progress_at: float = float("-inf")
    _progress_position_s: float = -1.0

    async def run(self) -> list[SegmentEvent]:
        """All segments of the recording (resumed ones first); raises JobFailed or LeaseLost."""
        self.language = self.info.language or (None if self.info.options.language == AUTO
                                               else self.info.options.language)
        segments = list(self.resume.segments)
        window: deque[asyncio.Task[list[SegmentEvent]]] = deque()
        try:
            async for work in self._work():
                if self.stopping.is_set() or self.lost.is_set():
                    work.close()
                    break
                window.append(asyncio.create_task(work))
                if len(window) >= self.settings.concurrency:
                    segments += await self._emit(window.popleft(), segments)
            while window:
                segments += await self._emit(window.popleft(), segments)
            if self.lost.is_set():
                raise LeaseLost(f"job {self.info.id}: lease lost")
            if self.stopping.is_set():
                raise Handover(f"job {self.info.id}: worker stopping after segment {len(segments) - 1}")
        finally:
            # A failure: the work still in the window is not wanted any more. Its Triton calls run
            # on to their end in the pool, which never cancels one (docs/OPERATIONS.md).
            for task in window:
                task.cancel()
            await asyncio.gather(*window, return_exceptions=True)
        return segments

    async def _work(self) -> AsyncIterator[Awaitable[list[SegmentEvent]]]:
        """The moderation of each window (long-form) or speech segment not yet done, in order."""
        windower: Windower | None = None
        decided = False
        async for seq, segment in self._segments():
            if not decided:  # the language is known now (detected from the first speech if asked)
                windower = Windower(self.settings.window_s) if self.long_form else None
                decided = True
            if windower is None:
                if seq >= self.resume.next_seq:
                    yield self._moderate(segment)
                continue
            for full in windower.feed(segment):
                if self._to_do(full):
                    yield self._moderate_window(full)
        for last in windower.flush() if windower is not None else ():
            if self._to_do(last):
                yield self._moderate_window(last)

    @property
    def long_form(self) -> bool:
        """Whether this job's speech goes to Whisper in long-form windows."""
        return (self.settings.long_form and self.pool.facts.long_form
                and (self.language or "") not in self.settings.per_segment_languages)

    def _to_do(self, window: Window) -> bool:
        """A window is done when a stored segment starts inside it (its segments were written at
        once); later windows start after it."""
        return not self.resume.segments or window.start_s > self.resume.segments[-1].start_s

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
                yield seq, segment
                seq += 1
        for segment in segmenter.flush():
            yield seq, segment
            seq += 1

    async def _detect_language(self, head: list[Segment]) -> None:
        if not head:  # no speech at all: the model's default applies
            return
        audio = np.concatenate([s.audio for s in head])[: int(DETECT_WINDOW_S * SAMPLE_RATE)]
        result = await self._call(audio, AUTO, with_words=False)
        self.language = result.language
        logger.info("job %s: detected language %s", self.info.id, self.language)

    def _with_words(self) -> bool:
        return wants_word_times(self.pool.facts, self.settings.span_word_times, self.info.options.word_timestamps)

    async def _moderate(self, segment: Segment) -> list[SegmentEvent]:
        with_words = self._with_words()
        started = time.perf_counter()
        result = await self._call(segment.audio, self.language, with_words)
        event = segment_event(result, self.pool.facts, self.settings.verdict_policy(), 0, segment.start_s,
                              segment.end_s, self.info.options.word_timestamps)
        event.latency_ms = round((time.perf_counter() - started) * 1000, 1)
        if event.is_harmful and self.incidents is not None:
            self._clips[id(event)] = (segment.audio, segment.start_s)
        return [event]

    async def _moderate_window(self, window: Window) -> list[SegmentEvent]:
        """A window's segments, each judged on its own text and words."""
        with_words = self._with_words()
        started = time.perf_counter()
        pieces = await self._transcribe(window, with_words)
        texts = [piece.text for piece, _ in pieces]
        judged: list[Moderation] = []
        for first in range(0, len(texts), TEXTS_PER_CALL):
            batch = texts[first:first + TEXTS_PER_CALL]
            judged += await self._retrying(lambda batch=batch: self.pool.moderate_texts(batch, Priority.BULK))
        events = [self._window_event(piece, part, result) for (piece, part), result in zip(pieces, judged,
                                                                                             strict=True)]
        latency_ms = round((time.perf_counter() - started) * 1000, 1)
        for event in events:
            event.latency_ms = latency_ms
        return events

    async def _transcribe(self, window: Window, with_words: bool) -> list[tuple[WindowSegment, Window]]:
        """Whisper's segments of ``window``, each with the (part of the) window it is timed in.
        Whisper may stop before the window's end (its token limit, a loop, or an end-of-text
        before the last utterance): the rest is sent again, up to MAX_WINDOW_CALLS calls."""
        pieces: list[tuple[WindowSegment, Window]] = []
        part: Window | None = window
        for _ in range(MAX_WINDOW_CALLS):
            current = part
            result = await self._retrying(lambda current=current: self.pool.transcribe_window(
                current.audio, self.language, self.info.options.prompt or "", with_words, Priority.BULK))
            pieces += [(part, current) for piece in result.segments for part in split_at_silences(piece, current)]
            done_to = min(result.transcribed_to, heard_to(result.segments))
            if done_to <= 0 or done_to >= current.duration_s - RESEND_MIN_S:
                break
            logger.info("job %s: Whisper stopped at %.1f s of a %.1f s window; sending the rest again",
                        self.info.id, done_to, current.duration_s)
            part = current.after(done_to)
            if part is None:
                break
        return pieces

    def _window_event(self, piece: WindowSegment, window: Window, result: Moderation) -> SegmentEvent:
        """The event of one of Whisper's segments, in recording time, its words relative to it."""
        start_s = window.to_recording(piece.start, start=True)
        end_s = max(start_s, window.to_recording(piece.end, start=False))
        result.words = [ModelWord(word=w.word, probability=w.probability,
                                  start=max(0.0, window.to_recording(w.start, start=True) - start_s),
                                  end=max(0.0, window.to_recording(w.end, start=False) - start_s))
                        for w in piece.words]
        event = segment_event(result, self.pool.facts, self.settings.verdict_policy(), 0, start_s, end_s,
                              self.info.options.word_timestamps)
        if event.is_harmful and self.incidents is not None:
            self._clips[id(event)] = window.clip(piece.start, piece.end)
        return event

    async def _call(self, audio: np.ndarray, language: str | None, with_words: bool) -> Moderation:
        return await self._retrying(lambda: self.pool.moderate(audio, language, with_words, Priority.BULK))

    async def _retrying(self, call: Callable[[], Awaitable[T]]) -> T:
        """``call()``, tried again (with backoff) while Triton is unavailable or too busy, for up to
        ``triton_wait_s``."""
        give_up_at = time.monotonic() + self.settings.triton_wait_s
        backoff = RETRY_BACKOFF_S
        while True:
            try:
                return await call()
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

    async def _emit(self, task: asyncio.Task[list[SegmentEvent]], done: list[SegmentEvent]) -> list[SegmentEvent]:
        """Writes a finished window's (or segment's) events at once, numbered on from ``done``
        (and a progress event now and then)."""
        events = await task
        seq = done[-1].seq + 1 if done else 0
        for offset, event in enumerate(events):
            event.seq = seq + offset
        if events:
            self.info = self.info.model_copy(update={"segments_done": events[-1].seq + 1, "language": self.language,
                                                     **self._progress(events[-1].end_s)})
            await self.store.append_many(self.info.id, self.worker,
                                         [(JobEvent.TRANSCRIPT_SEGMENT, event) for event in events], self.info)
        for event in events:
            self.metrics.segments.labels("harmful" if event.is_harmful else "normal").inc()
            self._keep_incident(event)
        if events and time.monotonic() - self._progress_at >= PROGRESS_INTERVAL_S:
            await self.progress_event(events[-1].end_s)
        return events

    def _keep_incident(self, event: SegmentEvent) -> None:
        """A written harmful event's incident, to the writer (a queue: nothing waits for it)."""
        clip = self._clips.pop(id(event), None)
        if clip is not None and self.incidents is not None:
            who = self.info.options
            self.incidents.submit(IncidentDraft(event.model_copy(deep=True), "job", clip[0], clip[1],
                                                job_id=self.info.id, speaker_id=who.speaker_id,
                                                channel_id=who.channel_id, metadata=dict(who.metadata)))

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


def heard_to(segments: list[WindowSegment]) -> float:
    """Where the last of a window's segments ends (its last word's end, when later); 0 for none."""
    if not segments:
        return 0.0
    last = segments[-1]
    return max([last.end] + [w.end for w in last.words])


def _next_chunk(chunks: Iterator[np.ndarray]) -> np.ndarray | None:
    return next(chunks, None)


def started(info: JobInfo) -> JobInfo:
    return with_state(info, JobState.RUNNING, started_at=info.started_at or now())
