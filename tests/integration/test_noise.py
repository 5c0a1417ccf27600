"""Loud non-speech that passes the VAD, through the real edge and tritonserver: a minute of white
noise at two levels, modulated pink noise and mains hum gives no text in a Korean session nor in
an English one (an invented transcript could become a false accusation)."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from edge.client import stream
from moderation.protocol import ErrorEvent, InterimEvent, SegmentEvent
from scripts.speech import NOISES, SAMPLE_RATE, noise, write_wav
from tests.integration.test_edge_bad_input import metric

NOISE_S = 15.0
"""Seconds of each noise: a minute in all."""


@pytest.fixture(scope="module")
def noise_wav(tmp_path_factory):
    gap = np.zeros(SAMPLE_RATE, np.float32)
    parts = [p for i, kind in enumerate(NOISES) for p in (noise(kind, NOISE_S, seed=100 + i), gap)]
    return write_wav(tmp_path_factory.mktemp("noise") / "noise.wav", np.concatenate(parts))


@pytest.mark.parametrize("language", ["ko", "en"])
def test_loud_noise_gives_no_text(edge, noise_wav, language):
    result = asyncio.run(stream(noise_wav, f"ws://{edge}/ws/audio", language=language))
    assert not result.of_type(ErrorEvent), result.of_type(ErrorEvent)
    segments = result.of_type(SegmentEvent)
    assert segments, "the noise should pass the VAD (else this test tests nothing)"
    texts = [(s.start_s, s.text, s.no_speech_prob) for s in segments if s.text.strip()]
    assert not texts, texts
    assert not any(s.is_harmful for s in segments)


def test_loud_noise_streamed_live_gives_no_interim_flag(edge, noise_wav):
    # In real time, so that interim calls run (a session ahead of real time gets none), on the
    # cheaper short encoder context they use.
    heard_before = metric(edge, "edge_interim_calls_total", '{outcome="silent"}')
    result = asyncio.run(stream(noise_wav, f"ws://{edge}/ws/audio", realtime=True, language="ko", interim=True))
    assert metric(edge, "edge_interim_calls_total", '{outcome="silent"}') > heard_before  # they ran, found nothing
    assert not result.of_type(ErrorEvent), result.of_type(ErrorEvent)
    assert not result.of_type(InterimEvent), result.of_type(InterimEvent)
    assert not any(s.text.strip() or s.is_harmful for s in result.of_type(SegmentEvent))
