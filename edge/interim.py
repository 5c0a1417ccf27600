"""Interim results: harmful words flagged while their segment is still open (docs/PROTOCOL.md).

A segment closes only at the end of an utterance or at the maximum segment length, so a word early
in a long utterance would be known seconds after it was said. While a real-time session that asked
for ``"interim": true`` speaks, the edge sends the open segment's recent audio to Triton once
``EDGE_INTERIM_INTERVAL_S`` of new audio has come, or as soon as the speech pauses for the stable
margin, at the interim priority (below real-time finals, above bulk work). The call hears the
segment from ``EDGE_INTERIM_CONTEXT_S`` before what the previous call could judge, and Whisper
encodes just that audio, not its 30 s window (``EDGE_INTERIM_ENCODER_FIT``): about a quarter of a
final's compute on CPU. A lexicon span whose words ended at least ``EDGE_INTERIM_STABLE_MARGIN_S``
before the end of that audio, or before a word Whisper heard after it (its word times say
where), is sent at once in an ``interim`` event, once per span; the segment's final event later
lists the interim spans it does not confirm.

Interim calls are optional work. One is skipped, never queued, while this edge already has
``EDGE_INTERIM_MAX_CALLS`` Triton calls (real-time finals and interims) in flight, and a session
has at most one in flight: finals never wait in Triton's queue behind interims (it serves them
first), and a final that arrives while an interim call computes waits for that one call at most
(Triton does not preempt a running batch).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from edge.metrics import EdgeMetrics
from edge.settings import EdgeSettings
from moderation.events import SAMPLE_RATE, HarmfulSpan, SegmentEvent
from moderation.protocol import InterimEvent
from moderation.triton import ModerationPool, Priority
from moderation.vad import Segment
from moderation.verdict import lexicon_spans

logger = logging.getLogger(__name__)


class InterimGate:
    """Edge-wide count of Triton calls that interim calls give way to (one per app)."""

    def __init__(self, max_calls: int) -> None:
        self.max_calls = max_calls
        self.finals = 0
        """Real-time final calls of this edge submitted and not yet answered."""
        self.interims = 0
        """Interim calls of this edge in Triton."""

    def final_started(self) -> None:
        self.finals += 1

    def final_done(self) -> None:
        self.finals -= 1

    def try_acquire(self) -> bool:
        """Whether an interim call may start now (then ``release`` it when it has ended)."""
        if self.finals + self.interims >= self.max_calls:
            return False
        self.interims += 1
        return True

    def release(self) -> None:
        self.interims -= 1


def interim_window(speech: Segment, heard_s: float, stable_margin_s: float, context_s: float) -> Segment:
    """What an interim call hears of the open segment ``speech``: from ``context_s`` before the
    part the previous call (which heard up to ``heard_s``) could judge, to the end. Its words up to
    the stable margin were checked; Whisper decodes fewer words again, and a word that call heard
    unfinished is heard whole."""
    start_s = max(speech.start_s, heard_s - stable_margin_s - context_s)
    skip = int(round((start_s - speech.start_s) * SAMPLE_RATE))
    return Segment(audio=speech.audio[skip:], start_s=speech.start_s + skip / SAMPLE_RATE, end_s=speech.end_s,
                   closed_at=speech.closed_at)


MIN_INTERIM_AUDIO_S = 1.0
"""An interim call hears at least this much of its open segment (pre-roll included): on a
fraction of a word Whisper invents the rest (0.3 s of "fuck" came back as "Fuck you", with the
invented word after it making the real one look stable, and its time cut short)."""
WORD_TIME_TOLERANCE_S = 0.01
"""Word times are rounded to the millisecond and fitted to 10 ms frames: a span ending this much
after the last word's start still ends before that word."""


def widened(span: HarmfulSpan, word_starts_s: list[float], audio_end_s: float) -> HarmfulSpan:
    """``span`` ending where the next word heard after it starts, or at the end of the audio when
    none was: on a short clip Whisper can end a word early (0.58 s for a word that ended at 0.90),
    and a client bleeping an interim span must cover all of the word, at the cost of a pause."""
    later = [start for start in word_starts_s if start >= span.end_s - WORD_TIME_TOLERANCE_S]
    end_s = max(span.end_s, min(later, default=audio_end_s))
    return span.model_copy(update={"end_s": round(end_s, 3)})


def overlaps(a: HarmfulSpan, b: HarmfulSpan) -> bool:
    return a.start_s < b.end_s and b.start_s < a.end_s


def midpoint(span: HarmfulSpan) -> float:
    return (span.start_s + span.end_s) / 2


@dataclass
class InterimSpans:
    """One session's interim spans: which are stable enough to send, which were sent and await
    their final segment, and which a final did not confirm.

    A sent span belongs to the final segment that holds its midpoint (after a cut it may be the
    next one); once that segment's result is delivered, later interim results for its audio are
    dropped: the final has spoken."""

    stable_margin_s: float
    pending: list[HarmfulSpan] = field(default_factory=list)
    """Spans sent in interim events whose final segment has not been delivered yet."""
    resolved_until_s: float = 0.0
    """Stream time up to which final results have been delivered."""

    def new_stable(self, spans: list[HarmfulSpan], audio_end_s: float,
                   word_starts_s: list[float] | None = None) -> list[HarmfulSpan]:
        """The lexicon spans of an interim result that are stable, ending a stable margin before
        ``audio_end_s`` or before the start of the last word heard (Whisper heard a word after
        them, so they were heard whole), and were not sent before (a span overlapping a sent one
        is the same word, heard again); they count as sent from now. Each is widened to the next
        word heard after it, or to the end of the audio (see ``widened``)."""
        starts = sorted(word_starts_s or [])
        stable_until = audio_end_s - self.stable_margin_s
        if starts:
            stable_until = max(stable_until, starts[-1] + WORD_TIME_TOLERANCE_S)
        new: list[HarmfulSpan] = []
        for span in spans:
            if span.source != "lexicon" or span.end_s > stable_until:
                continue  # a classifier span covers the open segment: never stable
            span = widened(span, starts, audio_end_s)
            if midpoint(span) < self.resolved_until_s or any(overlaps(span, s) for s in self.pending + new):
                continue
            new.append(span)
        self.pending.extend(new)
        return new

    def resolve(self, end_s: float, final_spans: list[HarmfulSpan] | None) -> list[HarmfulSpan]:
        """A final result for the segment ending at ``end_s`` is being delivered: the sent spans it holds that
        none of ``final_spans`` overlaps (all of them when the final is an error, ``None``)."""
        mine = [s for s in self.pending if midpoint(s) < end_s]
        self.pending = [s for s in self.pending if midpoint(s) >= end_s]
        self.resolved_until_s = max(self.resolved_until_s, end_s)
        if final_spans is None:
            return mine
        return [s for s in mine if not any(overlaps(s, f) for f in final_spans)]


class SessionInterim:
    """One session's interim calls: when one is due, the call, its ``interim`` event, and what
    its finals confirm. ``send`` delivers an event to the session's client (ClientGone when the
    socket is gone)."""

    def __init__(self, settings: EdgeSettings, gate: InterimGate, pool: ModerationPool, metrics: EdgeMetrics,
                 send: Callable[[InterimEvent], Awaitable[None]]):
        self.settings, self.gate, self.pool, self.metrics, self._send = settings, gate, pool, metrics, send
        self.spans = InterimSpans(settings.interim_stable_margin_s)
        self.task: asyncio.Task | None = None
        """The call in flight (at most one)."""
        self._heard_s = 0.0
        """End of the audio the last call heard, in stream seconds."""
        self._skipped = False
        """The due call was skipped once already (counted once, tried again on each frame)."""

    def _due(self, speech: Segment, pause_s: float) -> bool:
        """After an interval of new audio, or at once when the speech pauses for the stable
        margin: its last words are then stable, which the segment's close would make wait."""
        if speech.end_s - speech.start_s < MIN_INTERIM_AUDIO_S:
            return False
        new_audio_s = speech.end_s - max(self._heard_s, speech.start_s)
        margin_s = self.settings.interim_stable_margin_s
        paused = pause_s >= margin_s and self._heard_s < speech.end_s - pause_s + margin_s
        return new_audio_s >= self.settings.interim_interval_s or paused

    def maybe_start(self, speech: Segment | None, pause_s: float, language: str | None) -> None:
        """Start a call on the open segment ``speech`` (which paused ``pause_s``) when one is due
        and the edge has room for it; otherwise do nothing: interim calls are never queued."""
        if speech is None or (self.task is not None and not self.task.done()) or not self._due(speech, pause_s):
            return
        if not self.gate.try_acquire():
            if not self._skipped:
                self.metrics.interim_calls.labels("skipped").inc()
            self._skipped = True
            return
        self._skipped = False
        heard_s, self._heard_s = self._heard_s, speech.end_s
        window = interim_window(speech, heard_s, self.settings.interim_stable_margin_s,
                                self.settings.interim_context_s)
        self.task = asyncio.create_task(self._call(window, language))

    async def _call(self, speech: Segment, language: str | None) -> None:
        """One call, and its event when it found new stable spans."""
        try:
            try:
                result = await self.pool.moderate(speech.audio, language, True, Priority.INTERIM,
                                                  fit=self.settings.interim_encoder_fit)
            finally:
                self.gate.release()
        except Exception as exc:  # noqa: BLE001 - interim results are optional; the final will come
            logger.info("interim call failed: %s", exc)
            self.metrics.interim_calls.labels("failed").inc()
            return
        starts = [speech.start_s + word.start for word in result.words]
        spans = self.spans.new_stable(lexicon_spans(result, speech.start_s, speech.end_s), speech.end_s, starts)
        self.metrics.interim_calls.labels("sent" if spans else "silent").inc()
        if not spans:
            return
        self.metrics.interim_spans.labels("sent").inc(len(spans))
        await self._send(InterimEvent(start_s=round(speech.start_s, 3), end_s=round(speech.end_s, 3),
                                      text=result.transcript, harmful_spans=spans,
                                      latency_ms=round((time.perf_counter() - speech.closed_at) * 1000, 1)))

    def resolve(self, end_s: float, final: SegmentEvent | None) -> None:
        """A final result (``None``: an error) for the segment ending at ``end_s`` is about to be
        sent: it lists the interim spans it does not confirm."""
        unconfirmed = self.spans.resolve(end_s, None if final is None else final.harmful_spans)
        if final is not None:
            final.unconfirmed_interim = unconfirmed
            self.metrics.interim_spans.labels("unconfirmed").inc(len(unconfirmed))

    async def finish(self) -> None:
        """Wait for the call in flight (its spans are resolved by then: it sends nothing more)."""
        if self.task is not None:
            await self.task

    def cancel(self) -> None:
        if self.task is not None:
            self.task.cancel()
