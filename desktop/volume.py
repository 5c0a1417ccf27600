"""Volumes the ``duck`` mode lowers: PulseAudio's (Linux, with pulsectl) and Windows' per-
application ones (pycaw). Each is a ``Volume``; the rest of the client sees nothing else."""

from __future__ import annotations

import logging
import sys
from typing import Protocol

logger = logging.getLogger(__name__)

LOOPBACK_LATENCY_MS = 30
"""The PulseAudio loopback that plays the captured device on to the speakers (duck target
``loopback``): low enough to be unheard as a delay, high enough not to underrun on a busy CPU."""


class VolumeError(Exception):
    """The volume to duck cannot be found or set (the application is not playing, no sound server)."""


class Volume(Protocol):
    def get(self) -> float:
        """The volume now, in the backend's own scale."""

    def set(self, value: float) -> None:
        """Set it, in the scale ``get`` returns."""

    def lowered(self, value: float, db: float) -> float:
        """``value`` (as ``get`` returns it) lowered by ``db`` decibels."""

    def close(self) -> None:
        """Give back what the volume holds (a loaded loopback, a connection)."""


class PulseVolume:
    """A PulseAudio volume (pulsectl): a sink, every sink input of an application, or the sink
    input of a loopback this object loads. PulseAudio's volume is cubic: -N dB is ``10**(-N/60)``."""

    def __init__(self, target: str, source: str | None, output: str | None, client_name: str = "speech-moderation"):
        import pulsectl  # Linux only: imported where it is used

        self._errors = (pulsectl.PulseError, pulsectl.PulseOperationFailed)
        self.pulse = pulsectl.Pulse(client_name)
        self.target, self.output, self.module = target, output, None
        try:
            if target == "loopback":
                self.module = self._load_loopback(source, output)
        except self._errors as exc:
            self.pulse.close()
            raise VolumeError(f"cannot set up the loopback of {source!r} to {output!r}: {exc}") from exc

    def _load_loopback(self, source: str | None, output: str | None) -> int:
        """Play the captured device on to the output through a loopback, whose volume is ducked."""
        info = self.pulse.server_info()
        source = source or f"{info.default_sink_name}.monitor"
        if not source.endswith(".monitor") and any(s.name == source for s in self.pulse.sink_list()):
            source = f"{source}.monitor"
        sink = output or info.default_sink_name
        if source == f"{sink}.monitor":
            raise VolumeError(f"the loopback would play {sink!r} into itself: capture another device (a virtual "
                              f"sink the applications play to) or duck 'device' or 'app:NAME'")
        args = (f"source={source} sink={sink} latency_msec={LOOPBACK_LATENCY_MS} "
                "source_dont_move=true sink_dont_move=true")
        logger.info("loading module-loopback %s", args)
        return self.pulse.module_load("module-loopback", args)

    def _objects(self) -> list:
        if self.target == "loopback":
            found = [s for s in self.pulse.sink_input_list() if s.owner_module == self.module]
        elif self.target == "device":
            found = [self.pulse.get_sink_by_name(self.output or self.pulse.server_info().default_sink_name)]
        else:
            name = self.target.removeprefix("app:")
            found = [s for s in self.pulse.sink_input_list() if s.proplist.get("application.name") == name]
        if not found:
            raise VolumeError(f"nothing plays as {self.target!r} now")
        return found

    def get(self) -> float:
        try:
            return self.pulse.volume_get_all_chans(self._objects()[0])
        except self._errors as exc:
            raise VolumeError(str(exc)) from exc

    def set(self, value: float) -> None:
        try:
            for obj in self._objects():
                self.pulse.volume_set_all_chans(obj, value)
        except self._errors as exc:
            raise VolumeError(str(exc)) from exc

    def lowered(self, value: float, db: float) -> float:
        return value * 10 ** (-db / 60)

    def close(self) -> None:
        try:
            if self.module is not None:
                self.pulse.module_unload(self.module)
        except self._errors as exc:
            logger.warning("could not unload the loopback: %s", exc)
        finally:
            self.pulse.close()


class WindowsAppVolume:
    """Windows: the volume of every audio session of a process (pycaw's ISimpleAudioVolume, a
    linear amplitude: -N dB is ``10**(-N/20)``), or the default output's (``device``: its level in
    dB, within the endpoint's range)."""

    def __init__(self, target: str, audio_utilities=None):
        if audio_utilities is None:
            from pycaw.pycaw import AudioUtilities  # Windows only
            audio_utilities = AudioUtilities
        self.utilities, self.target = audio_utilities, target

    def _volumes(self) -> list:
        if self.target == "device":
            return [self.utilities.GetSpeakers().EndpointVolume]
        name = self.target.removeprefix("app:").lower()
        found = [s.SimpleAudioVolume for s in self.utilities.GetAllSessions()
                 if s.Process is not None and s.Process.name().lower() in (name, f"{name}.exe")]
        if not found:
            raise VolumeError(f"no audio session of {self.target!r} now")
        return found

    def get(self) -> float:
        volume = self._volumes()[0]
        return volume.GetMasterVolumeLevel() if self.target == "device" else volume.GetMasterVolume()

    def set(self, value: float) -> None:
        for volume in self._volumes():
            if self.target == "device":
                volume.SetMasterVolumeLevel(value, None)
            else:
                volume.SetMasterVolume(value, None)

    def lowered(self, value: float, db: float) -> float:
        if self.target == "device":
            floor = self._volumes()[0].GetVolumeRange()[0]
            return max(floor, value - db)
        return value * 10 ** (-db / 20)

    def close(self) -> None:
        pass


def open_volume(target: str, source: str | None, output: str | None) -> Volume:
    """The duck target on this platform; VolumeError when it cannot be had."""
    if sys.platform == "darwin":
        raise VolumeError("macOS has no per-application volume to duck: use beep or bleep")
    if sys.platform == "win32":
        if target == "loopback":
            raise VolumeError("duck target 'loopback' is PulseAudio's: on Windows duck 'app:NAME' or 'device'")
        return WindowsAppVolume(target)
    try:
        return PulseVolume(target, source, output)
    except ImportError as exc:
        raise VolumeError(f"ducking needs pulsectl on Linux: {exc}") from exc
    except Exception as exc:  # pulsectl.PulseError before pulsectl is importable here: no sound server
        if type(exc).__module__.startswith("pulsectl"):
            raise VolumeError(f"no PulseAudio server to duck with: {exc}") from exc
        raise
