"""Bleeping and ducking change a recording inside its harmful spans and nowhere else."""

from __future__ import annotations

import numpy as np
import pytest

from edge.client import read_wav
from moderation.bleep import censor, write_wav

RATE = 16000


def tone(seconds: float, channels: int, dtype: str) -> bytes:
    t = np.arange(int(seconds * RATE)) / RATE
    wave = 0.2 * np.sin(2 * np.pi * 220 * t)
    samples = np.repeat(wave[:, None], channels, axis=1)
    return (samples * 32767).astype("<i2").tobytes() if dtype == "pcm_s16le" else samples.astype("<f4").tobytes()


def frames(data: bytes, encoding: str, channels: int) -> np.ndarray:
    return np.frombuffer(data, "<i2" if encoding == "pcm_s16le" else "<f4").reshape(-1, channels)


@pytest.mark.parametrize(("encoding", "channels"), [("pcm_s16le", 1), ("pcm_f32le", 2)])
def test_bleep_replaces_only_the_spans_with_a_1khz_tone(encoding, channels):
    data = tone(3.0, channels, encoding)
    spans = [(0.5, 0.75), (2.0, 2.5)]
    before, after = frames(data, encoding, channels), frames(censor(data, encoding, channels, RATE, spans), encoding,
                                                             channels)
    changed = np.flatnonzero((before != after).any(axis=1))
    inside = np.zeros(len(before), bool)
    for start, end in spans:
        inside[int(start * RATE):int(end * RATE)] = True
    assert inside[changed].all() and changed.size > 0.95 * inside.sum()
    region = after[int(2.0 * RATE):int(2.5 * RATE), 0].astype(np.float64)
    peak_hz = np.argmax(np.abs(np.fft.rfft(region))) * RATE / len(region)
    assert abs(peak_hz - 1000) < 5


def test_duck_lowers_the_volume_inside_the_spans_by_the_given_decibels():
    data = tone(2.0, 1, "pcm_s16le")
    after = frames(censor(data, "pcm_s16le", 1, RATE, [(1.0, 1.5)], duck_db=20), "pcm_s16le", 1)[:, 0]
    before = frames(data, "pcm_s16le", 1)[:, 0]
    inside = slice(int(1.0 * RATE), int(1.5 * RATE))
    ratio = np.abs(after[inside]).max() / np.abs(before[inside]).max()
    assert ratio == pytest.approx(0.1, abs=0.01)
    assert np.array_equal(after[: inside.start], before[: inside.start])
    assert np.array_equal(after[inside.stop:], before[inside.stop:])


def test_spans_outside_the_recording_are_clipped_and_the_wav_round_trips(tmp_path):
    data = tone(1.0, 2, "pcm_f32le")
    censored = censor(data, "pcm_f32le", 2, RATE, [(0.9, 5.0), (7.0, 8.0)])
    audio = read_wav(write_wav(tmp_path / "out.wav", censored, "pcm_f32le", 2, RATE))
    assert (audio.data, audio.encoding, audio.channels, audio.sample_rate) == (censored, "pcm_f32le", 2, RATE)
