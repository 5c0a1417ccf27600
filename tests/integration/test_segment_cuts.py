"""Utterances longer than the maximum segment, through the real edge and tritonserver: the cut
falls in a pause and the audio after it opens the next segment, so the segments tile the speech
and their joined transcripts are about as good as each utterance transcribed whole (on these
four; docs/PERFORMANCE.md measures eight, where a compound word's inner pause can still be cut)."""

from __future__ import annotations

import asyncio

import pytest

from edge.client import stream
from moderation.protocol import ErrorEvent, SegmentEvent
from scripts.service.launch import free_port, running_edge
from scripts.speech import LONG_UTTERANCES, synthesize, wer

MAX_SEGMENT_S = 5.0
"""The edge fixture's maximum segment (the default)."""
WER_MARGIN = 0.02
UTTERANCES = 4


@pytest.fixture(scope="module")
def whole_edge(triton, tmp_path_factory) -> str:
    """An edge whose maximum segment (30 s) hears each long utterance whole."""
    log_path = tmp_path_factory.mktemp("whole_edge") / "edge.log"
    with open(log_path, "wb") as log, running_edge(free_port(), triton, log, max_segment_s=30,
                                                   triton_timeout_s=60) as running:
        yield running.address


def test_long_utterances_are_cut_in_pauses_and_lose_no_audio(edge, whole_edge, tmp_path):
    cut_wer, whole_wer = [], []
    for index, text in enumerate(LONG_UTTERANCES[:UTTERANCES]):
        wav = synthesize(text, tmp_path / f"long{index}.wav")
        cut = asyncio.run(stream(wav, f"ws://{edge}/ws/audio", language="en"))
        whole = asyncio.run(stream(wav, f"ws://{whole_edge}/ws/audio", language="en"))
        assert not cut.of_type(ErrorEvent) and not whole.of_type(ErrorEvent)
        segments = cut.of_type(SegmentEvent)
        assert all(s.end_s - s.start_s <= MAX_SEGMENT_S + 1e-6 for s in segments), segments
        # every cut was at the maximum, and the audio after it opened the next segment: they touch
        assert len(segments) >= 2, segments
        assert all(abs(b.start_s - a.end_s) < 1e-6 for a, b in zip(segments, segments[1:], strict=False)), segments
        cut_wer.append(wer(text, " ".join(s.text for s in segments)))
        whole_wer.append(wer(text, " ".join(s.text for s in whole.of_type(SegmentEvent))))
    assert sum(cut_wer) / UTTERANCES <= sum(whole_wer) / UTTERANCES + WER_MARGIN, (cut_wer, whole_wer)
