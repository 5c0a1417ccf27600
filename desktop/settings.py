"""The desktop client's settings: typed, validated, and remembered between runs in a JSON file
in the user's config folder (the credential is never written there)."""

from __future__ import annotations

import json
import logging
from enum import StrEnum
from pathlib import Path

import platformdirs
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from moderation.protocol import WHISPER_LANGUAGES

logger = logging.getLogger(__name__)

APP_NAME = "speech-moderation"
SETTINGS_FILE = "desktop.json"


class Mode(StrEnum):
    """What the client does when it learns of a harmful span."""

    OFF = "off"
    """Show it; change no sound."""
    BEEP = "beep"
    """Play a tone over the output at once, as long as the span."""
    DUCK = "duck"
    """Lower the playing sound by ``duck_db`` for the span plus ``duck_margin_s``, then restore it."""
    BLEEP = "bleep"
    """Play what is captured on to the output ``bleep_delay_s`` late, muted or toned over each span."""


class Source(StrEnum):
    LOOPBACK = "loopback"
    """What an output device plays (PulseAudio's monitor, WASAPI loopback on Windows)."""
    MICROPHONE = "microphone"


class BleepSound(StrEnum):
    TONE = "tone"
    MUTE = "mute"


class DesktopSettings(BaseModel):
    """Everything the window shows as a control; ``python -m desktop --help`` names the flags."""

    model_config = ConfigDict(extra="ignore", validate_assignment=True)

    url: str = "ws://localhost:8000/ws/audio"
    """The edge's WebSocket (``wss://`` for TLS)."""
    language: str = "ko"
    """The Whisper language code of the speech (ko, en, …)."""
    interim: bool = True
    """Ask for interim results: a harmful word is known about 0.6-1.5 s after it ends instead of
    2-5 s (docs/PROTOCOL.md). Needed for bleeping with a delay of about 2.5 s."""
    source: Source = Source.LOOPBACK
    device: str | None = None
    """The capture device's id or name: for ``loopback`` an output device (its monitor), for
    ``microphone`` an input; none: the system's default one."""
    output: str | None = None
    """Where beeps and the bleep delay line play, and (duck, Linux) where the captured sound is
    played on; none: the system's default output."""
    mode: Mode = Mode.BEEP
    duck_db: float = Field(20.0, gt=0, le=60)
    """How far ``duck`` lowers the volume, in dB."""
    duck_margin_s: float = Field(0.3, ge=0, le=5)
    """``duck`` holds the volume down this much longer than the span lasts."""
    duck_target: str = "loopback"
    """What ``duck`` lowers: ``loopback`` (Linux: the client plays the captured device's sound on
    to ``output`` itself and lowers only that, so the speech it sends is never ducked),
    ``device`` (the output device's volume) or ``app:NAME`` (the playing application's volume;
    PulseAudio's application name, or the process name on Windows)."""
    bleep_delay_s: float = Field(2.5, ge=0.5, le=10)
    """``bleep``: how late the captured sound plays; a flag that comes later than this is counted
    and warned of. About the p95 flag lag plus a margin (docs/PROTOCOL.md)."""
    bleep_sound: BleepSound = BleepSound.TONE
    bleep_pad_s: float = Field(0.1, ge=0, le=1)
    """``bleep``: how far before and after a span the sound is toned or muted as well (Whisper's
    word times are good to about 0.1 s)."""

    @field_validator("language")
    @classmethod
    def _whisper_language(cls, value: str) -> str:
        if value not in WHISPER_LANGUAGES:
            raise ValueError(f"{value!r} is not a Whisper language code (ko, en, ja, …)")
        return value

    @field_validator("duck_target")
    @classmethod
    def _duck_target(cls, value: str) -> str:
        if value not in ("loopback", "device") and not (value.startswith("app:") and len(value) > 4):
            raise ValueError("duck_target is 'loopback', 'device' or 'app:NAME'")
        return value

    @field_validator("url")
    @classmethod
    def _websocket_url(cls, value: str) -> str:
        if not value.startswith(("ws://", "wss://")):
            raise ValueError("the edge's URL starts with ws:// or wss://")
        return value


def default_path() -> Path:
    """The settings file in the user's config folder (``~/.config``, ``%APPDATA%``, ``~/Library``)."""
    return Path(platformdirs.user_config_dir(APP_NAME)) / SETTINGS_FILE


def load(path: Path) -> DesktopSettings:
    """The remembered settings; the defaults when there are none, or when the file is unreadable
    (said in the log: a broken file never keeps the client from starting)."""
    try:
        return DesktopSettings(**json.loads(path.read_text()))
    except FileNotFoundError:
        return DesktopSettings()
    except (OSError, ValueError, ValidationError) as exc:
        logger.warning("ignoring the settings in %s: %s", path, exc)
        return DesktopSettings()


def save(settings: DesktopSettings, path: Path) -> None:
    """Write the settings atomically (a crash mid-write leaves the old file)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(".tmp")
    partial.write_text(settings.model_dump_json(indent=2))
    partial.replace(path)
