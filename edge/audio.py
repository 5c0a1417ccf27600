"""Client PCM bytes -> 16 kHz mono float32, in a streaming fashion.

Frames may end mid-sample: the partial sample is carried into the next frame. Other rates and
channel counts go through FFmpeg's resampler (PyAV), which keeps its filter state across
frames and is drained on flush. PyAV is loaded by the first session that needs the resampler:
an edge whose clients send 16 kHz mono never loads FFmpeg.
"""

from __future__ import annotations

import numpy as np

from moderation.protocol import SAMPLE_RATE, ClientConfig

_EMPTY = np.zeros(0, dtype=np.float32)


class PcmDecoder:
    """Turns a stream of raw PCM chunks into 16 kHz mono float32 samples."""

    def __init__(self, config: ClientConfig):
        self.config = config
        self._carry = b""
        self._dtype = np.dtype("<i2") if config.encoding == "pcm_s16le" else np.dtype("<f4")
        self._passthrough = config.sample_rate == SAMPLE_RATE and config.channels == 1
        self._resampler = self._frame = None
        if not self._passthrough:
            import av  # by the first session that resamples (see the module's docstring)

            self._resampler = av.AudioResampler(format="flt", layout="mono", rate=SAMPLE_RATE)
            self._frame = av.AudioFrame
        self.input_seconds = 0.0
        """Duration of the client audio decoded so far, at the client's own rate."""

    def feed(self, data: bytes) -> np.ndarray:
        """Decode one chunk; returns whatever 16 kHz samples are ready (possibly none)."""
        data = self._carry + data
        usable = len(data) - len(data) % self.config.bytes_per_frame
        self._carry = data[usable:]
        if usable == 0:
            return _EMPTY
        samples = np.frombuffer(data[:usable], dtype=self._dtype)
        self.input_seconds += len(samples) / self.config.channels / self.config.sample_rate
        if self._passthrough:
            return self._to_float(samples)
        return self._resample(samples)

    def flush(self) -> np.ndarray:
        """Drain the resampler at end of stream. A dangling partial sample cannot be decoded."""
        self._carry = b""
        if self._resampler is None:
            return _EMPTY
        return self._collect(self._resampler.resample(None))

    @property
    def pending_bytes(self) -> int:
        """Bytes of an incomplete sample waiting for the next frame."""
        return len(self._carry)

    def _to_float(self, samples: np.ndarray) -> np.ndarray:
        if samples.dtype == np.float32:
            return samples.astype(np.float32, copy=True)
        return samples.astype(np.float32) / 32768.0

    def _resample(self, samples: np.ndarray) -> np.ndarray:
        layout = "mono" if self.config.channels == 1 else "stereo"
        fmt = "s16" if self._dtype.kind == "i" else "flt"
        frame = self._frame.from_ndarray(samples.reshape(1, -1), format=fmt, layout=layout)
        frame.sample_rate = self.config.sample_rate
        return self._collect(self._resampler.resample(frame))

    @staticmethod
    def _collect(frames) -> np.ndarray:
        if not frames:
            return _EMPTY
        return np.concatenate([f.to_ndarray().reshape(-1) for f in frames]).astype(np.float32, copy=False)
