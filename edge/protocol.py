"""WebSocket protocol messages (see docs/PROTOCOL.md)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

SAMPLE_RATE = 16000
"""Rate the pipeline works at; client audio at other rates is resampled to it."""


def sample_bytes(encoding: str) -> int:
    """Bytes of one sample of one channel."""
    return 2 if encoding == "pcm_s16le" else 4


class ClientConfig(BaseModel):
    """Optional first text frame. Defaults match a raw 16 kHz mono s16le client (wscat -b)."""

    model_config = ConfigDict(extra="forbid")

    type: Literal["config"] = "config"
    sample_rate: int = Field(SAMPLE_RATE, ge=8000, le=48000)
    encoding: Literal["pcm_s16le", "pcm_f32le"] = "pcm_s16le"
    channels: Literal[1, 2] = 1
    language: str | None = Field(None, pattern=r"^[a-z]{2,3}$")

    @property
    def bytes_per_frame(self) -> int:
        """Bytes of one sample across all channels."""
        return sample_bytes(self.encoding) * self.channels


class ErrorCode:
    """Codes of ``error`` events."""

    BAD_JSON = "bad_json"
    BAD_CONFIG = "bad_config"
    CONFIG_AFTER_AUDIO = "config_after_audio"
    UNKNOWN_MESSAGE = "unknown_message"
    FRAME_TOO_LARGE = "frame_too_large"
    SERVER_BUSY = "server_busy"
    TRITON_TIMEOUT = "triton_timeout"
    TRITON_UNAVAILABLE = "triton_unavailable"
    TRITON_ERROR = "triton_error"


def error_event(code: str, message: str, seq: int | None = None) -> dict:
    event = {"type": "error", "code": code, "message": message}
    if seq is not None:
        event["seq"] = seq
    return event
