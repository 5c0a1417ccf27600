"""The console's resampler (console/static/resampler.js, imported by its AudioWorklet) in Node:
48 kHz, 44.1 kHz and other capture rates, mono and stereo downmixed, fed in irregular chunks,
must give the analytic 16 kHz signal within 1 LSB RMS of PCM16."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

CHECK_SCRIPT = Path(__file__).parent / "node" / "resampler_check.mjs"
OUTPUT_RATE = 16000
FULL_SCALE = 32767
"""console/static/resampler.js's PCM16_FULL_SCALE."""
MAX_RMS_ERROR_LSB = 1.0
SECONDS = 1.5
TONES_BELOW_7K = [(220.0, 0.18, 0.3), (1000.0, 0.18, 1.1), (2500.0, 0.18, 2.0), (4400.0, 0.18, 0.5),
                  (6900.0, 0.18, 2.9)]
"""Frequency (Hz), amplitude, phase (rad): peaks near 0.9 of full scale, all in the passband."""
TONES_BELOW_3K5 = [(180.0, 0.22, 0.3), (700.0, 0.22, 1.1), (1900.0, 0.22, 2.0), (3400.0, 0.22, 0.5)]
"""For 8 kHz input, whose own Nyquist frequency (4 kHz) bounds the band."""

NODE = shutil.which("node")
pytestmark = pytest.mark.skipif(NODE is None, reason="node (Node.js 20) is not installed: the console's "
                                "resampler is an ES module and is tested in Node")


def resample_in_node(rate: int, channels: int, tones: list[tuple[float, float, float]]) -> dict:
    spec = {"rate": rate, "channels": channels, "seconds": SECONDS, "tones": tones}
    done = subprocess.run([NODE, str(CHECK_SCRIPT), json.dumps(spec)], capture_output=True, text=True,
                          timeout=120, check=True)
    return json.loads(done.stdout)


def analytic_pcm16(tones: list[tuple[float, float, float]], count: int) -> np.ndarray:
    t = np.arange(count) / OUTPUT_RATE
    signal = sum(a * np.sin(2 * np.pi * f * t + p) for f, a, p in tones)
    return np.clip(np.round(signal * FULL_SCALE), -32768, 32767)


def rms_error_lsb(result: dict, tones: list[tuple[float, float, float]]) -> float:
    """RMS difference to the analytic signal, aligned by the documented delay, leaving out the
    onset (warm-up) and the outputs flushed against trailing silence."""
    samples = np.array(result["samples"], dtype=np.float64)
    delay, warmup = result["delay_samples"], result["warmup_samples"]
    steady = samples[delay + warmup: len(samples) - result["held_back_until_flush"]]
    reference = analytic_pcm16(tones, len(samples))[warmup: warmup + len(steady)]
    assert len(steady) > OUTPUT_RATE, "too little steady-state output to judge"
    return float(np.sqrt(np.mean((steady - reference) ** 2)))


@pytest.mark.parametrize("rate, channels, tones", [
    (48000, 1, TONES_BELOW_7K),
    (48000, 2, TONES_BELOW_7K),
    (44100, 1, TONES_BELOW_7K),
    (44100, 2, TONES_BELOW_7K),
    (32000, 1, TONES_BELOW_7K),
    (22050, 1, TONES_BELOW_7K),
    (16000, 1, TONES_BELOW_7K),
    (8000, 1, TONES_BELOW_3K5),
    (47999, 1, TONES_BELOW_7K),  # a ratio with more sub-sample phases than tabulated: interpolated
])
def test_the_worklets_resampler_matches_the_analytic_16_khz_signal_within_one_lsb(rate, channels, tones):
    result = resample_in_node(rate, channels, tones)
    error = rms_error_lsb(result, tones)
    assert error <= MAX_RMS_ERROR_LSB, f"{rate} Hz x{channels}: RMS error {error:.3f} LSB"


def test_the_output_length_follows_the_input_duration_and_the_warm_up_is_a_few_milliseconds():
    result = resample_in_node(48000, 1, TONES_BELOW_7K)
    assert len(result["samples"]) == round(SECONDS * OUTPUT_RATE)
    assert result["delay_samples"] == 0
    assert result["warmup_samples"] * 1000 / OUTPUT_RATE < 5.0
    assert result["held_back_until_flush"] * 1000 / OUTPUT_RATE < 5.0


def test_out_of_band_input_is_attenuated_not_aliased():
    """A 10 kHz tone at 48 kHz would alias to 6 kHz at 16 kHz; the filter must remove it."""
    result = resample_in_node(48000, 1, [(10000.0, 0.9, 0.0)])
    samples = np.array(result["samples"][result["warmup_samples"]:-result["held_back_until_flush"]])
    assert np.sqrt(np.mean(samples.astype(np.float64) ** 2)) < 1.0


WORKLET_SCRIPT = Path(__file__).parent / "node" / "worklet_check.mjs"
FRAME_SAMPLES = 320
"""20 ms at 16 kHz, the frames the worklet posts (docs/PROTOCOL.md takes any size)."""


def test_the_worklet_posts_20_ms_little_endian_pcm16_frames_of_the_downmixed_resampled_capture():
    spec = {"rate": 48000, "seconds": 1.0, "tones": TONES_BELOW_7K}
    done = subprocess.run([NODE, str(WORKLET_SCRIPT), json.dumps(spec)], capture_output=True, text=True,
                          timeout=60, check=True)
    result = json.loads(done.stdout)
    started, *frames = result["messages"]
    assert result["name"] == "pcm16-capture" and result["alive"] and not result["after_flush"]
    assert started == {"type": "started", "contextTime": 1.25, "inputRate": 48000,
                       "warmupSamples": started["warmupSamples"]}
    assert [f["index"] for f in frames] == list(range(len(frames)))
    assert all(len(f["pcm"]) == FRAME_SAMPLES and not f["final"] for f in frames[:-1])
    assert frames[-1]["final"] and len(frames[-1]["pcm"]) < FRAME_SAMPLES
    samples = np.concatenate([f["pcm"] for f in frames]).astype(np.float64)
    assert len(samples) == OUTPUT_RATE * spec["seconds"]  # every input sample's time, the tail flushed
    warmup = started["warmupSamples"]
    steady = samples[warmup:-FRAME_SAMPLES]  # the left/right offsets cancel in the downmix
    reference = analytic_pcm16(TONES_BELOW_7K, len(samples))[warmup:-FRAME_SAMPLES]
    assert np.sqrt(np.mean((steady - reference) ** 2)) <= MAX_RMS_ERROR_LSB
