"""Edge logic without servers: PCM decoding, resampling and VAD segmentation (on the committed dialogue)."""

from __future__ import annotations

import numpy as np
import pytest

from edge.audio import PcmDecoder
from moderation.protocol import ClientConfig
from moderation.vad import Segmenter, SegmenterLimits
from scripts.speech import DIALOGUE_WAV, SAMPLE_RATE, read_wav, speech_times, trim_silence


def tone(seconds: float, rate: int = SAMPLE_RATE, freq: float = 440.0) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    return (0.3 * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def test_partial_samples_carry_over_between_frames():
    data = (tone(0.5) * 32767).astype("<i2").tobytes()
    whole = PcmDecoder(ClientConfig()).feed(data)
    decoder = PcmDecoder(ClientConfig())
    pieces = [decoder.feed(data[i:i + 333]) for i in range(0, len(data), 333)]  # odd sizes split samples
    assert decoder.pending_bytes == 0
    np.testing.assert_array_equal(np.concatenate(pieces), whole)


def test_stereo_float_44k_is_resampled_to_16k_mono():
    left = tone(1.0, 44100)
    stereo = np.stack([left, left], axis=1).astype("<f4").tobytes()
    decoder = PcmDecoder(ClientConfig(sample_rate=44100, channels=2, encoding="pcm_f32le"))
    out = np.concatenate([decoder.feed(stereo[i:i + 3528]) for i in range(0, len(stereo), 3528)]
                         + [decoder.flush()])
    assert abs(len(out) - SAMPLE_RATE) <= 32
    spectrum = np.abs(np.fft.rfft(out[1000:15000]))
    peak_hz = np.argmax(spectrum) * SAMPLE_RATE / 14000
    assert abs(peak_hz - 440) < 5
    assert decoder.input_seconds == pytest.approx(1.0)


def segment_all(samples: np.ndarray, limits: SegmenterLimits | None = None):
    segmenter = Segmenter(limits or SegmenterLimits())
    out = []
    for i in range(0, len(samples), 320):  # 20 ms frames, as desktop clients send
        out += segmenter.feed(samples[i:i + 320], received_at=0.0)
    return out + segmenter.flush(received_at=0.0)


def test_speech_separated_by_pauses_becomes_one_segment_each():
    segments = segment_all(read_wav(DIALOGUE_WAV))
    times = speech_times(DIALOGUE_WAV)
    assert len(segments) == len(times)
    for segment, (start, end) in zip(segments, times, strict=True):
        # espeak-ng's files carry a little leading/trailing silence, which the VAD rightly trims
        assert start - 0.3 <= segment.start_s <= start + 0.3
        assert end - 0.4 <= segment.end_s <= end + 0.3
        assert len(segment.audio) == round((segment.end_s - segment.start_s) * SAMPLE_RATE)


def test_long_speech_is_cut_at_the_maximum_without_losing_audio():
    speech = read_wav(DIALOGUE_WAV)
    limits = SegmenterLimits(max_segment_s=1.0)
    segments = segment_all(speech, limits)
    assert all(s.end_s - s.start_s <= 1.0 + 1e-9 for s in segments)
    # consecutive cuts of one utterance are contiguous: no gap, no overlap
    touching = [b.start_s - a.end_s for a, b in zip(segments, segments[1:], strict=False) if b.start_s - a.end_s < 0.3]
    assert touching and all(abs(gap) < 1e-9 for gap in touching)


PIECE_S, GAP_S = 0.6, 0.15
"""Speech in pieces of 0.6 s with 150 ms pauses: a pause in every second, none long enough (400 ms)
to end a segment."""


def paused_utterance() -> tuple[np.ndarray, list[tuple[float, float]]]:
    """The committed dialogue's speech, cut into PIECE_S pieces with GAP_S of silence between them:
    one utterance of about 12 s, and the (start, end) of each pause."""
    audio = read_wav(DIALOGUE_WAV)
    speech = np.concatenate([trim_silence(audio[int(a * SAMPLE_RATE):int(b * SAMPLE_RATE)])
                             for a, b in speech_times(DIALOGUE_WAV)])
    piece, gap = int(PIECE_S * SAMPLE_RATE), np.zeros(int(GAP_S * SAMPLE_RATE), np.float32)
    parts, pauses, cursor = [np.zeros(SAMPLE_RATE // 2, np.float32)], [], 0.5
    for start in range(0, len(speech) - piece, piece):
        parts += [speech[start:start + piece], gap]
        pauses.append((cursor + PIECE_S, cursor + PIECE_S + GAP_S))
        cursor += PIECE_S + GAP_S
    return np.concatenate([*parts, np.zeros(SAMPLE_RATE, np.float32)]), pauses


@pytest.mark.parametrize("search_ms", [1000, 0])
def test_long_speech_is_cut_in_a_pause_and_the_rest_carried_into_the_next_segment(search_ms):
    audio, pauses = paused_utterance()
    segments = segment_all(audio, SegmenterLimits(max_segment_s=2.0, cut_search_ms=search_ms))
    assert len(segments) >= 5 and all(s.end_s - s.start_s <= 2.0 + 1e-9 for s in segments)
    # nothing lost: the segments tile the utterance, sample for sample
    for a, b in zip(segments, segments[1:], strict=False):
        assert b.start_s == pytest.approx(a.end_s, abs=1e-9)
    joined = np.concatenate([s.audio for s in segments])
    start = round(segments[0].start_s * SAMPLE_RATE)
    np.testing.assert_array_equal(joined, audio[start:start + len(joined)])
    in_pause = [any(a < s.end_s < b for a, b in pauses) for s in segments[:-1]]
    if search_ms:
        assert all(in_pause), in_pause  # a pause lies in every last second: every cut falls in one
    else:
        assert not all(in_pause)  # at the exact limit, cuts fall inside speech


def test_short_blips_and_silence_give_no_segment():
    silence = np.zeros(SAMPLE_RATE, np.float32)
    rng = np.random.default_rng(0)
    blip = (rng.standard_normal(int(0.06 * SAMPLE_RATE)) * 0.5).astype(np.float32)
    assert segment_all(np.concatenate([silence, blip, silence])) == []
    assert segment_all(silence) == []
