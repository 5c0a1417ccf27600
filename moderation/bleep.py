"""Bleep or duck the harmful spans of a recording (what a desktop client does to its playback).

Only the samples inside a span change; everything else is written back bit for bit.
"""

from __future__ import annotations

import wave
from pathlib import Path

import numpy as np

BLEEP_HZ = 1000.0
"""The classic censor tone."""
BLEEP_LEVEL = 0.3
"""Bleep amplitude relative to full scale: clearly audible, never clipping."""
WAVE_FORMAT_IEEE_FLOAT = 3


def _samples(data: bytes, encoding: str, channels: int) -> np.ndarray:
    dtype = np.dtype("<i2") if encoding == "pcm_s16le" else np.dtype("<f4")
    return np.frombuffer(data, dtype=dtype).reshape(-1, channels).copy()


def _frames(span: tuple[float, float], rate: int, total: int) -> slice:
    start, end = (min(total, max(0, round(t * rate))) for t in span)
    return slice(start, max(start, end))


def censor(data: bytes, encoding: str, channels: int, rate: int, spans: list[tuple[float, float]],
           duck_db: float | None = None) -> bytes:
    """PCM ``data`` with a 1 kHz tone over each (start_s, end_s) span, or with the volume lowered
    by ``duck_db`` decibels there."""
    samples = _samples(data, encoding, channels)
    full_scale = 32767.0 if samples.dtype.kind == "i" else 1.0
    for span in spans:
        region = _frames(span, rate, len(samples))
        if region.stop <= region.start:
            continue
        if duck_db is not None:
            quieter = samples[region].astype(np.float64) * 10 ** (-duck_db / 20)
            samples[region] = quieter.astype(samples.dtype)
        else:
            t = np.arange(region.start, region.stop) / rate
            tone = BLEEP_LEVEL * full_scale * np.sin(2 * np.pi * BLEEP_HZ * t)
            samples[region] = tone[:, None].astype(samples.dtype)
    return samples.tobytes()


def write_wav(path: Path, data: bytes, encoding: str, channels: int, rate: int) -> Path:
    """A WAV in the same format as the input: 16-bit PCM, or 32-bit IEEE float."""
    if encoding == "pcm_s16le":
        with wave.open(str(path), "wb") as w:
            w.setnchannels(channels)
            w.setsampwidth(2)
            w.setframerate(rate)
            w.writeframes(data)
        return path
    block = 4 * channels
    fmt = (WAVE_FORMAT_IEEE_FLOAT.to_bytes(2, "little") + channels.to_bytes(2, "little") + rate.to_bytes(4, "little")
           + (rate * block).to_bytes(4, "little") + block.to_bytes(2, "little") + (32).to_bytes(2, "little"))
    body = b"WAVE" + b"fmt " + len(fmt).to_bytes(4, "little") + fmt + b"data" + len(data).to_bytes(4, "little") + data
    path.write_bytes(b"RIFF" + len(body).to_bytes(4, "little") + body)
    return path
