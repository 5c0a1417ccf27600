"""16 kHz mono samples written as a compressed file through PyAV's FFmpeg (incidents' clips, the
benchmarks' recordings)."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import numpy as np

from moderation.events import SAMPLE_RATE

BLOCK = 4096
"""Samples handed to the encoder at a time (PyAV re-frames them to the codec's frame size)."""


def encode_mono(samples: np.ndarray, path: Path, container: str, codec: str, bit_rate: int) -> Path:
    """``samples`` (16 kHz mono float32) encoded with ``codec`` in ``container`` to ``path``."""
    import av  # only the parts that write files load PyAV

    with av.open(str(path), "w", format=container) as out:
        stream = out.add_stream(codec, rate=SAMPLE_RATE)
        stream.codec_context.layout = "mono"
        stream.bit_rate = bit_rate
        samples = np.asarray(samples, dtype=np.float32)
        for start in range(0, len(samples), BLOCK):
            block = np.ascontiguousarray(samples[None, start:start + BLOCK])
            frame = av.AudioFrame.from_ndarray(block, format="flt", layout="mono")
            frame.sample_rate, frame.pts, frame.time_base = SAMPLE_RATE, start, Fraction(1, SAMPLE_RATE)
            out.mux(stream.encode(frame))
        out.mux(stream.encode(None))
    return path
