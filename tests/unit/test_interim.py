"""Interim results: which spans are stable and new, which finals confirm them, and the edge-wide
gate that skips interim calls while finals are in flight; then a session end to end on a fake pool."""

from __future__ import annotations

import asyncio
import contextlib
import json

import numpy as np
import pytest

from edge.fairness import FairShare
from edge.interim import InterimGate, InterimSpans, interim_window
from edge.metrics import EdgeMetrics
from edge.session import Session
from edge.settings import EdgeSettings
from moderation.events import HarmfulSpan
from moderation.protocol import ConfigEvent, ErrorEvent, InterimEvent, SegmentEvent
from moderation.triton import Priority
from moderation.vad import Segment
from moderation.verdict import LexiconMatch, ModelFacts, ModelWord, Moderation
from scripts.speech import DIALOGUE_WAV, pcm16, read_wav
from tests.unit.fakes import FakePool
from tests.unit.test_app import FRAME_BYTES, REALTIME_LEAD_S, client, end, next_event, ready, send_audio


def span(start: float, end: float, source: str = "lexicon", text: str = "fuck") -> HarmfulSpan:
    return HarmfulSpan(start_s=start, end_s=end, text=text, category="profanity", source=source)


def test_only_lexicon_spans_a_margin_before_the_end_of_the_audio_are_stable():
    spans = InterimSpans(stable_margin_s=0.3)
    heard = [span(1.0, 1.4), span(1.6, 1.9), span(0.0, 2.0, source="classifier")]
    words = [1.0, 1.45, 1.6]
    # 1.9 is within 0.3 s of the end; the first is widened to the next word's start
    assert spans.new_stable(heard, audio_end_s=2.0, word_starts_s=words) == [span(1.0, 1.45)]
    # heard again: only the new one, which no word follows before the end of the audio
    assert spans.new_stable(heard, audio_end_s=2.5, word_starts_s=words[:3]) == [span(1.6, 2.5)]


def test_a_span_with_a_word_heard_after_it_is_stable_within_the_margin():
    spans = InterimSpans(stable_margin_s=0.3)
    heard = [span(1.0, 1.4), span(1.5, 1.6)]
    assert spans.new_stable(heard, audio_end_s=1.6) == []  # both within 0.3 s of the end
    # the first is followed by a word starting at 1.5: heard whole; the last word is not
    assert spans.new_stable(heard, audio_end_s=1.6, word_starts_s=[1.0, 1.5]) == [span(1.0, 1.5)]
    assert spans.new_stable(heard, audio_end_s=1.6, word_starts_s=[1.0, 1.5]) == []


def test_a_span_heard_again_with_other_times_is_the_same_word():
    spans = InterimSpans(stable_margin_s=0.0)
    assert spans.new_stable([span(1.0, 1.4)], audio_end_s=3.0, word_starts_s=[1.0, 1.4]) == [span(1.0, 1.4)]
    assert spans.new_stable([span(1.1, 1.5, text="fucking")], audio_end_s=4.0) == []
    assert spans.pending == [span(1.0, 1.4)]


def test_a_final_confirms_what_its_spans_overlap_and_lists_the_rest():
    spans = InterimSpans(stable_margin_s=0.0)
    spans.new_stable([span(1.0, 1.4), span(2.0, 2.3), span(5.2, 5.5)], audio_end_s=6.0,
                     word_starts_s=[1.0, 1.4, 2.0, 2.3, 5.2, 5.5])
    unconfirmed = spans.resolve(end_s=5.0, final_spans=[span(0.95, 1.35)])
    assert unconfirmed == [span(2.0, 2.3)]
    assert spans.pending == [span(5.2, 5.5)]  # after the cut: the next segment's
    # A late interim result for audio whose final was delivered is dropped.
    assert spans.new_stable([span(3.0, 3.3)], audio_end_s=6.0) == []
    assert spans.resolve(end_s=7.0, final_spans=None) == [span(5.2, 5.5)]  # an error confirms nothing
    assert spans.pending == []


def test_the_gate_gives_way_to_finals_and_to_interims_already_running():
    gate = InterimGate(max_calls=2)
    gate.final_started()
    assert gate.try_acquire()
    assert not gate.try_acquire()  # one final + one interim: the edge has its two calls
    gate.release()
    gate.final_started()
    assert not gate.try_acquire()
    gate.final_done()
    gate.final_done()
    assert gate.try_acquire() and gate.try_acquire() and not gate.try_acquire()


def test_an_interim_call_hears_the_open_segment_from_a_little_before_what_the_last_one_could_judge():
    speech = Segment(audio=np.arange(5 * 16000, dtype=np.float32), start_s=10.0, end_s=15.0, closed_at=1.0)
    first = interim_window(speech, heard_s=9.0, stable_margin_s=0.3, context_s=1.0)  # heard in another segment
    assert (first.start_s, len(first.audio)) == (10.0, 5 * 16000)
    later = interim_window(speech, heard_s=14.0, stable_margin_s=0.3, context_s=1.0)
    assert later.start_s == pytest.approx(12.7) and later.end_s == 15.0 and later.closed_at == 1.0
    assert later.audio[0] == speech.audio[int(2.7 * 16000)] and len(later.audio) == int(2.3 * 16000)


WORDS = (("what", 0.1, 0.3), (" the", 0.3, 0.45), (" fuck", 0.45, 0.7))


def swearing(pool: FakePool, final_says_it: bool):
    """Every call hears "what the fuck" at the start of its audio; a final one only when
    ``final_says_it``."""
    def respond(index, audio) -> Moderation:
        if pool.calls[index].priority is not Priority.INTERIM and not final_says_it:
            return Moderation("what the duck", 0.1, 0.01)
        return Moderation("what the fuck", 0.1, 0.01, [ModelWord(word=w, start=a, end=b, probability=0.9)
                                                        for w, a, b in WORDS],
                          [LexiconMatch(start=9, end=13, text="fuck", term="fuck", category="profanity",
                                        sources=["better_profanity"])])
    return respond


def stream(pool: FakePool, interim) -> list:
    # Every call hears the whole open segment (the fake's words are at the start of what it hears).
    with client(pool, bulk_lead_s=REALTIME_LEAD_S, interim_interval_s=0.5, interim_context_s=60) as app, \
            app.websocket_connect("/ws/audio") as ws:
        ready(ws)
        ws.send_text(json.dumps({"type": "config", "interim": interim}))
        ack = next_event(ws)
        assert isinstance(ack, ConfigEvent) and ack.interim is interim
        send_audio(ws)
        events, _ = end(ws)
    return events


@pytest.mark.parametrize("final_says_it", [True, False])
def test_an_interim_span_comes_once_before_its_final_which_says_whether_it_confirms_it(final_says_it):
    pool = FakePool(ModelFacts("ko", ("lexicon",)))
    pool.respond = swearing(pool, final_says_it)
    events = stream(pool, interim=True)
    segments = [e for e in events if isinstance(e, SegmentEvent)]
    interims = [e for e in events if isinstance(e, InterimEvent)]
    assert len(segments) == 3 and len(interims) == 3  # one per sentence, however often heard
    for interim, segment in zip(interims, segments, strict=True):
        assert events.index(interim) < events.index(segment)
        assert interim.start_s == segment.start_s and interim.end_s > segment.start_s + 0.7
        (flag,) = interim.harmful_spans
        # the last word heard: widened to the end of the audio heard (Whisper may end it early)
        assert (flag.start_s, flag.end_s, flag.text) == (round(segment.start_s + 0.45, 3), interim.end_s, "fuck")
        assert segment.unconfirmed_interim == ([] if final_says_it else [flag])
    interim_calls = [c for c in pool.calls if c.priority is Priority.INTERIM]
    assert len(interim_calls) > len(interims) and all(c.word_timestamps and c.fit for c in interim_calls)
    assert not any(c.fit for c in pool.calls if c.priority is Priority.REALTIME)


def test_without_interim_in_the_config_no_interim_call_is_made_and_finals_carry_no_such_field():
    pool = FakePool(ModelFacts("ko", ("lexicon",)))
    pool.respond = swearing(pool, final_says_it=True)
    events = stream(pool, interim=False)
    assert not any(isinstance(e, InterimEvent) for e in events)
    assert all(c.priority is Priority.REALTIME for c in pool.calls)
    assert all(e.unconfirmed_interim is None and "unconfirmed_interim" not in e.wire()
               for e in events if isinstance(e, SegmentEvent))


@pytest.mark.parametrize("value", ["yes", 1, None, "true"])
def test_interim_that_is_not_a_boolean_is_bad_config(value):
    with client(FakePool()) as app, app.websocket_connect("/ws/audio") as ws:
        ready(ws)
        ws.send_text(json.dumps({"type": "config", "interim": value}))
        error = next_event(ws)
        assert isinstance(error, ErrorEvent) and error.code == "bad_config" and "interim" in error.message


class UnreadSocket:
    """A client that never reads: the edge's first ``sends_ok`` frames go out, every later send
    waits forever (a full TCP window). Audio frames are served as fast as they are read."""

    def __init__(self, pcm: bytes, sends_ok: int):
        self.frames = [pcm[i:i + FRAME_BYTES] for i in range(0, len(pcm), FRAME_BYTES)]
        self.sends_ok, self.sent, self.blocked, self.read = sends_ok, 0, 0, 0

    async def receive(self) -> dict:
        if self.read == 0:
            self.read += 1
            return {"type": "websocket.receive", "text": json.dumps({"type": "config", "interim": True})}
        if self.read > len(self.frames):
            await asyncio.Event().wait()
        self.read += 1
        return {"type": "websocket.receive", "bytes": self.frames[self.read - 2]}

    async def send_text(self, text: str) -> None:
        if self.sent >= self.sends_ok:
            self.blocked += 1
            await asyncio.Event().wait()
        self.sent += 1

    async def close(self, code: int = 1000) -> None:
        pass


async def settle() -> None:
    """Let every task that can run, run (the fake pool answers at once): no wall-clock wait."""
    for _ in range(2000):
        await asyncio.sleep(0)


@pytest.mark.parametrize("dialogues", [3, 6])
def test_a_client_that_never_reads_holds_the_edge_to_its_pending_limit_with_interim_on(dialogues):
    pool = FakePool(ModelFacts("ko", ("lexicon",)))
    pool.respond = swearing(pool, final_says_it=True)
    socket = UnreadSocket(pcm16(read_wav(DIALOGUE_WAV)) * dialogues, sends_ok=2)  # ready, config

    async def scenario():
        settings = EdgeSettings(max_pending_segments=2, bulk_lead_s=REALTIME_LEAD_S, interim_interval_s=0.5)
        session = Session(socket, settings, pool, EdgeMetrics(), FairShare(2, 1))
        task = asyncio.create_task(session.run())
        await settle()
        interim_waiting = session.interim.task is not None and not session.interim.task.done()
        state = (socket.read, len(pool.calls), socket.blocked, session.pending.qsize(), interim_waiting)
        task.cancel()  # the client goes away
        with contextlib.suppress(asyncio.CancelledError):
            await task
        return state, session

    (read, calls, blocked, queued, interim_waiting), session = asyncio.run(scenario())
    assert read < len(socket.frames) // dialogues  # it stopped reading in the first dialogue, however long the stream
    assert blocked == 1 and interim_waiting  # one send waits for the client; the interim event behind it
    assert queued <= 2  # finals: the pending limit (and the one the receive loop waits to submit)
    heard_s = read * FRAME_BYTES / 2 / 16000
    assert calls <= 3 + heard_s / 0.5  # interims: at most one per interval of the audio read
    assert not session.in_flight and session.interim.task.done()  # all let go once the client left
