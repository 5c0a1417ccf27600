"""Sound in and out: the capture (an output device's loopback or a microphone) and the output
that beeps and the delay line play on, through ``soundcard`` (PulseAudio on Linux, WASAPI on
Windows, CoreAudio on macOS), and the conversion of what is captured to the edge's format."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import soxr

from desktop.settings import Source
from moderation.protocol import SAMPLE_RATE

logger = logging.getLogger(__name__)

CAPTURE_RATE = 48000
"""The capture's and the output's rate: what sound servers mix at, so neither resamples."""
CHANNELS = 2
BLOCK_FRAMES = 960
"""20 ms a block: what the capture hands on at once, and the grain of the delay line."""
OUTPUT_BUFFER_FRAMES = 4800
"""What the output device holds ahead (100 ms): a 20 ms buffer underruns whenever the client's
threads wait for the CPU, and each underrun shifts the delay line's sound a little later."""
OUTPUT_LATENCY_S = 0.04
"""How late the output plays what it is given, with that buffer: 40-45 ms measured from a
PulseAudio sink's monitor to another's (tests/integration/test_desktop.py); the delay line holds
the sound back by its delay less this, so the delay heard is the one chosen."""


class DeviceLost(Exception):
    """The audio device is gone (unplugged, its virtual sink unloaded) or cannot be opened."""


class Capture(Protocol):
    def read(self) -> np.ndarray:
        """The next block: BLOCK_FRAMES × CHANNELS float32 in -1..1. Blocks until captured;
        DeviceLost when the device went away."""

    def close(self) -> None: ...


class Output(Protocol):
    def play(self, samples: np.ndarray) -> None:
        """Queue frames × CHANNELS float32 to play; blocks while the device's buffer is full."""

    def close(self) -> None: ...


class AudioSystem(Protocol):
    """Opens devices: soundcard's in the client, fakes in the unit tests."""

    def capture(self, source: Source, device: str | None) -> Capture: ...

    def output(self, device: str | None) -> Output: ...

    def devices(self) -> DeviceList: ...


@dataclass(frozen=True)
class DeviceList:
    outputs: list[tuple[str, str]]
    """(id, name) of each output device: a loopback source, and where sound can play."""
    microphones: list[tuple[str, str]]


class ToEdge:
    """Captured blocks as the edge's default format: 16 kHz mono pcm_s16le (soxr's streaming
    resampler keeps the output aligned with the input: sample k is at k / 16000 s)."""

    def __init__(self) -> None:
        self._resampler = soxr.ResampleStream(CAPTURE_RATE, SAMPLE_RATE, 1, dtype="float32")

    def convert(self, block: np.ndarray) -> bytes:
        mono = block.mean(axis=1, dtype=np.float32) if block.ndim == 2 else block.astype(np.float32)
        out = self._resampler.resample_chunk(mono)
        return (np.clip(out, -1.0, 1.0) * 32767.0).astype("<i2").tobytes()


def level_dbfs(block: np.ndarray) -> float:
    """The block's RMS level in dBFS (the meter); -90 for silence."""
    rms = float(np.sqrt(np.mean(np.square(block, dtype=np.float64)))) if block.size else 0.0
    return max(-90.0, 20 * np.log10(rms)) if rms > 0 else -90.0


def _opened(make, name: str):
    """A soundcard recorder or player, entered (they are context managers); DeviceLost if it cannot open."""
    try:
        stream = make()
        stream.__enter__()
    except Exception as exc:  # soundcard raises RuntimeError, or its backend's own errors
        raise DeviceLost(f"cannot open {name!r}: {exc}") from exc
    return stream


def _close(stream, name: str) -> None:
    try:
        stream.__exit__(None, None, None)
    except Exception as exc:  # a device already gone cannot be closed cleanly: nothing left to do
        logger.debug("closing %s: %s", name, exc)


DEVICE_CHECK_BLOCKS = 50
"""The capture checks every 50 blocks (1 s) that its device still exists: a PulseAudio recorder
whose source was removed goes on returning silence instead of failing."""


class SoundcardCapture:
    """A soundcard recorder, opened once and kept open (it loses about its first second)."""

    def __init__(self, microphone, present=None):
        self.name, self.id, self._present, self._blocks = microphone.name, microphone.id, present, 0
        self._recorder = _opened(lambda: microphone.recorder(samplerate=CAPTURE_RATE, channels=CHANNELS,
                                                             blocksize=BLOCK_FRAMES), self.name)

    def read(self) -> np.ndarray:
        try:
            block = self._recorder.record(numframes=BLOCK_FRAMES)
        except Exception as exc:
            raise DeviceLost(f"{self.name!r} stopped: {exc}") from exc
        self._blocks += 1
        if self._present is not None and self._blocks % DEVICE_CHECK_BLOCKS == 0 and not self._present(self.id):
            raise DeviceLost(f"{self.name!r} is gone")
        return np.ascontiguousarray(block, dtype=np.float32).reshape(-1, CHANNELS)

    def close(self) -> None:
        _close(self._recorder, self.name)


class SoundcardOutput:
    def __init__(self, speaker):
        self.name = speaker.name
        self._player = _opened(lambda: speaker.player(samplerate=CAPTURE_RATE, channels=CHANNELS,
                                                      blocksize=OUTPUT_BUFFER_FRAMES), self.name)

    def play(self, samples: np.ndarray) -> None:
        try:
            self._player.play(samples)
        except Exception as exc:
            raise DeviceLost(f"{self.name!r} stopped: {exc}") from exc

    def close(self) -> None:
        _close(self._player, self.name)


class SoundcardSystem:
    """The machine's devices through soundcard. A device is named by its id or its name."""

    def __init__(self) -> None:
        import soundcard  # connects to the sound server on import: only when a client starts

        self.sc = soundcard

    def capture(self, source: Source, device: str | None) -> Capture:
        try:
            if source is Source.MICROPHONE:
                microphone = self.sc.get_microphone(device) if device else self.sc.default_microphone()
            else:
                speaker = device or self.sc.default_speaker().id
                microphone = self._loopback_of(speaker)
        except Exception as exc:  # IndexError, RuntimeError: no such device, no sound server
            raise DeviceLost(f"no {source.value} device {device or '(default)'}: {exc}") from exc
        return SoundcardCapture(microphone, self._present)

    def _present(self, device_id: str) -> bool:
        try:
            return any(m.id == device_id for m in self.sc.all_microphones(include_loopback=True))
        except Exception:  # the sound server itself went away
            return False

    def _loopback_of(self, speaker: str):
        """The loopback of an output device named by id or name (``game`` or ``game.monitor``)."""
        wanted = {speaker, f"{speaker}.monitor"}
        for microphone in self.sc.all_microphones(include_loopback=True):
            if microphone.isloopback and (microphone.id in wanted or microphone.name == speaker):
                return microphone
        return self.sc.get_microphone(speaker, include_loopback=True)

    def output(self, device: str | None) -> Output:
        try:
            speaker = self.sc.get_speaker(device) if device else self.sc.default_speaker()
        except Exception as exc:
            raise DeviceLost(f"no output device {device or '(default)'}: {exc}") from exc
        return SoundcardOutput(speaker)

    def devices(self) -> DeviceList:
        return DeviceList(outputs=[(s.id, s.name) for s in self.sc.all_speakers()],
                          microphones=[(m.id, m.name) for m in self.sc.all_microphones()])


def open_system() -> SoundcardSystem:
    """soundcard's devices; DeviceLost when there is no sound server to connect to."""
    try:
        return SoundcardSystem()
    except Exception as exc:  # soundcard raises RuntimeError (or its backend's errors) on import
        raise DeviceLost(f"no sound server: {exc}") from exc
