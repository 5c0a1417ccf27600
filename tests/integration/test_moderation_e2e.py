"""Moderation end to end on the real tritonserver and edge: a profane word is flagged by the
lexicon, its span lands on the word's true time, and the reference client bleeps just there."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from edge.client import main as client_main
from edge.client import read_wav, stream
from moderation.protocol import ReadyEvent, SegmentEvent
from scripts.speech import write_words

SPAN_TOLERANCE_S = 0.3
PROFANE = ["this", "game", "is", "shit"]
CLEAN = ["this", "game", "is", "great"]


@pytest.fixture(scope="module")
def spoken(tmp_path_factory):
    """(wav, true word times) of the profane sentence and of its clean twin."""
    directory = tmp_path_factory.mktemp("words")
    return {name: (directory / f"{name}.wav", write_words(words, directory / f"{name}.wav"))
            for name, words in (("profane", PROFANE), ("clean", CLEAN))}


def moderate(edge: str, wav, words: bool = False):
    return asyncio.run(stream(wav, f"ws://{edge}/ws/audio", language="en", word_timestamps=words))


def test_a_profane_word_is_flagged_by_the_lexicon_at_its_true_time(edge, spoken, served_signals):
    wav, times = spoken["profane"]
    result = moderate(edge, wav, words=True)
    assert isinstance(result.events[0], ReadyEvent) and result.events[0].signals == served_signals
    segments = result.of_type(SegmentEvent)
    assert len(segments) == 1, segments
    segment = segments[0]
    assert segment.is_harmful and segment.reasons[0] == "lexicon", segment
    (span,) = [s for s in segment.harmful_spans if s.source == "lexicon"]
    start, end = times[PROFANE.index("shit")]
    assert span.text.lower().startswith("shit") and span.source == "lexicon"
    assert abs(span.start_s - start) <= SPAN_TOLERANCE_S and abs(span.end_s - end) <= SPAN_TOLERANCE_S, (span, times)
    assert [w.word.strip(".,!?").lower() for w in segment.words] == PROFANE


def test_its_clean_twin_is_not_harmful(edge, spoken):
    wav, _ = spoken["clean"]
    (segment,) = moderate(edge, wav).of_type(SegmentEvent)
    assert segment.text and "lexicon" not in segment.reasons
    assert [s for s in segment.harmful_spans if s.source == "lexicon"] == []
    assert segment.words is None


def test_the_reference_client_bleeps_inside_the_spans_only(edge, spoken, tmp_path):
    wav, times = spoken["profane"]
    out = tmp_path / "bleeped.wav"
    assert client_main([str(wav), "--url", f"ws://{edge}/ws/audio", "--language", "en", "--bleep", str(out)]) == 0
    before, after = (np.frombuffer(read_wav(path).data, "<i2") for path in (wav, out))
    changed = np.flatnonzero(before != after)
    start, end = times[PROFANE.index("shit")]
    assert changed.size > 0
    assert changed[0] / 16000 <= start + SPAN_TOLERANCE_S and changed[-1] / 16000 >= end - SPAN_TOLERANCE_S
    # A trained classifier that also flags the segment marks all of it (its span is the segment's);
    # the same deterministic models give this second request the verdict the client got.
    (segment,) = moderate(edge, wav).of_type(SegmentEvent)
    if any(span.source == "classifier" for span in segment.harmful_spans):
        start, end = segment.start_s, segment.end_s
    assert changed[0] / 16000 >= start - SPAN_TOLERANCE_S and changed[-1] / 16000 <= end + SPAN_TOLERANCE_S
