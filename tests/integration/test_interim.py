"""Interim results through the real edge and tritonserver: a profane word early in a long
utterance, streamed in real time, is flagged by an interim event while its segment is still open,
at the word's own time; the final confirms it. Without ``interim`` no such event comes."""

from __future__ import annotations

import asyncio

import pytest

from edge.client import stream
from moderation.protocol import ErrorEvent, InterimEvent, SegmentEvent
from scripts.speech import PAUSE_S, join_words, write_wav

PIECES = ["fuck", "this map is way too big for a team of four players and nobody ever comes back to defend"]
GAP_S = 0.08
SPAN_TOLERANCE_S = 0.3
"""Whisper's word times against the synthesised word's true times."""


@pytest.fixture(scope="module")
def utterance(tmp_path_factory) -> tuple:
    samples, times = join_words(PIECES, [GAP_S, PAUSE_S])
    return write_wav(tmp_path_factory.mktemp("interim") / "utterance.wav", samples), times[0]


@pytest.mark.parametrize("interim", [True, False])
def test_a_word_early_in_a_long_utterance_is_flagged_before_its_segment_closes(edge, utterance, interim):
    wav, (word_start, word_end) = utterance
    result = asyncio.run(stream(wav, f"ws://{edge}/ws/audio", realtime=True, language="en", interim=interim))
    assert not result.of_type(ErrorEvent), result.events
    finals = result.of_type(SegmentEvent)
    flagged = [s for s in finals if any(abs(h.end_s - word_end) < SPAN_TOLERANCE_S for h in s.harmful_spans)]
    assert flagged, [(s.text, s.harmful_spans) for s in finals]  # the final hears it either way
    interims = result.of_type(InterimEvent)
    if not interim:
        assert not interims and all(s.unconfirmed_interim is None for s in finals)
        return
    assert interims, [s.text for s in finals]
    first = interims[0]
    (span,) = first.harmful_spans
    # It covers the word, to bleep all of it (widened to the next word, or the audio's end).
    assert abs(span.start_s - word_start) < SPAN_TOLERANCE_S and span.end_s > word_end - SPAN_TOLERANCE_S
    assert span.end_s <= first.end_s
    # Sent while the segment was open: it heard less than the final, and came before it.
    assert first.end_s < flagged[0].end_s and result.events.index(first) < result.events.index(flagged[0])
    assert first.end_s >= span.end_s + 0.3  # the stable margin (EDGE_INTERIM_STABLE_MARGIN_S)
    assert sum(len(e.harmful_spans) for e in interims) == 1  # once per span, however often heard
    assert flagged[0].unconfirmed_interim == []
