"""Encode test audio into the formats users upload, with PyAV's bundled FFmpeg.

Tests only (unit and integration); production code never imports this. Each format is written
by the encoder real files of that kind usually come from (LAME, FFmpeg's AAC, libopus, FLAC), so
the decoder meets realistic encoder delay and padding.
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import numpy as np


@dataclass(frozen=True)
class AudioFormat:
    container: str
    """FFmpeg muxer name."""
    codec: str
    """FFmpeg audio encoder name."""
    video: bool = False
    """Also write a tiny video stream (first, as in a camera's file): the audio is not stream 0."""


FORMATS: dict[str, AudioFormat] = {
    "wav": AudioFormat("wav", "pcm_s16le"),
    "mp3": AudioFormat("mp3", "libmp3lame"),
    "m4a": AudioFormat("ipod", "aac"),
    "ogg": AudioFormat("ogg", "libopus"),
    "webm": AudioFormat("webm", "libopus"),
    "flac": AudioFormat("flac", "flac"),
    "mp4": AudioFormat("mp4", "aac", video=True),
    "aac": AudioFormat("adts", "aac"),
}
"""Formats by file extension ("aac": raw ADTS, whose duration FFmpeg can only estimate)."""

VIDEO_CODEC = "libx264"
"""Encoder of the video stream of "mp4" (the wheel's FFmpeg has it; `unavailable` checks)."""
VIDEO_SIZE = 16
"""Width and height of the video frames: tiny, since the video is there only to be skipped."""
VIDEO_FPS = 10
BLOCK_SAMPLES = 4096
"""Samples per frame handed to the encoder (PyAV re-frames them to the codec's frame size)."""


def unavailable(fmt: str) -> str | None:
    """Why `fmt` cannot be written with this PyAV wheel, or None when it can (a pytest.skip reason)."""
    spec = FORMATS[fmt]
    needed = [spec.codec] + ([VIDEO_CODEC] if spec.video else [])
    missing = [name for name in needed if name not in av.codecs_available]
    if missing:
        return f"this PyAV wheel's FFmpeg has no {', '.join(missing)} encoder"
    if spec.container not in av.formats_available:
        return f"this PyAV wheel's FFmpeg has no {spec.container} muxer"
    return None


def encode(samples: np.ndarray, rate: int, path: Path, fmt: str, channels: int = 1,
           options: dict[str, str] | None = None) -> Path:
    """Write float32 mono `samples` (-1..1) at `rate` Hz to `path` as `fmt` (a key of FORMATS).

    With ``channels=2`` both channels carry the signal (a stereo file whose mono downmix is the
    reference, up to a gain). A rate the encoder does not take (Opus: 8/12/16/24/48 kHz) is
    written at the next one up. `options` go to the muxer (e.g. ``{"write_xing": "0"}`` for an
    mp3 without its Xing/Info header).
    """
    spec = FORMATS[fmt]
    planar = np.ascontiguousarray(np.tile(np.asarray(samples, dtype=np.float32), (channels, 1)))
    layout = "mono" if channels == 1 else "stereo"
    with av.open(str(path), "w", format=spec.container, options=options or {}) as out:
        video = _add_video(out) if spec.video else None
        audio = out.add_stream(spec.codec, rate=encoder_rate(spec.codec, rate))
        audio.codec_context.layout = layout
        out.start_encoding()  # the header, even with no samples at all
        for start in range(0, planar.shape[1], BLOCK_SAMPLES):
            frame = av.AudioFrame.from_ndarray(planar[:, start:start + BLOCK_SAMPLES], format="fltp", layout=layout)
            frame.sample_rate, frame.pts, frame.time_base = rate, start, Fraction(1, rate)
            out.mux(audio.encode(frame))  # PyAV resamples to the stream's rate when it differs
        out.mux(audio.encode(None))
        if video is not None:
            _write_video(out, video, len(samples) / rate)
    return path


def video_only(path: Path, duration_s: float = 1.0) -> Path:
    """An mp4 with a video stream and no audio."""
    with av.open(str(path), "w", format="mp4") as out:
        _write_video(out, _add_video(out), duration_s)
    return path


def encoder_rate(codec: str, rate: int) -> int:
    """`rate` if the encoder takes it, else the lowest higher rate it takes (else its highest)."""
    rates = av.Codec(codec, "w").audio_rates
    if not rates or rate in rates:
        return rate
    return min((r for r in rates if r > rate), default=max(rates))


def _add_video(out: av.container.OutputContainer) -> av.VideoStream:
    video = out.add_stream(VIDEO_CODEC, rate=VIDEO_FPS, width=VIDEO_SIZE, height=VIDEO_SIZE)
    video.options = {"preset": "ultrafast"}
    return video


def _write_video(out: av.container.OutputContainer, video: av.VideoStream, duration_s: float) -> None:
    """Grey frames covering the audio's duration."""
    image = np.full((VIDEO_SIZE, VIDEO_SIZE, 3), 128, dtype=np.uint8)
    for i in range(max(1, round(duration_s * VIDEO_FPS))):
        frame = av.VideoFrame.from_ndarray(image, format="rgb24")
        frame.pts = i
        out.mux(video.encode(frame))
    out.mux(video.encode(None))


def reference_signal(duration_s: float, rate: int, seed: int = 0) -> np.ndarray:
    """Float32 mono at 0.5 peak: a tone per half second (random pitch) over a rising chirp, each
    half second ending in a short gap. It changes along time, so a decoded copy correlates with
    it only when aligned (a wrong length or offset shows)."""
    t = np.arange(int(duration_s * rate)) / rate
    part = np.floor(t / 0.5).astype(int)
    freqs = np.random.default_rng(seed).uniform(200.0, 3000.0, part.max(initial=0) + 1)[part]
    signal = np.sin(2 * np.pi * freqs * t) + 0.5 * np.sin(2 * np.pi * (300.0 + 400.0 * t) * t)
    signal[(t % 0.5) > 0.42] = 0.0
    peak = np.abs(signal).max(initial=0.0)
    return (0.5 * signal / peak if peak else signal).astype(np.float32)
