"""WebSocket protocol messages (see docs/PROTOCOL.md): client messages in, server events out.

Every frame the server sends is one of the ``*Event`` models below, serialised by ``wire()``; the
``segment`` event and its parts are the shared core's (moderation/events.py), since batch jobs
emit them too.
"""

from __future__ import annotations

import json
import re
from typing import Annotated, ClassVar, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    StrictFloat,
    StrictInt,
    StrictStr,
    TypeAdapter,
    field_validator,
)

from moderation.events import SAMPLE_RATE, HarmfulSpan, SegmentEvent, ServerEvent, Signal, error_codes

Encoding = Literal["pcm_s16le", "pcm_f32le"]

WHISPER_LANGUAGES = frozenset((
    "af am ar as az ba be bg bn bo br bs ca cs cy da de el en es et eu fa fi fo fr gl gu ha haw he hi hr ht "
    "hu hy id is it ja jw ka kk km kn ko la lb ln lo lt lv mg mi mk ml mn mr ms mt my ne nl nn no oc pa pl ps "
    "pt ro ru sa sd si sk sl sn so sq sr su sv sw ta te tg th tk tl tr tt uk ur uz vi yi yo yue zh"
).split())
"""Whisper's language codes (openai-whisper's ``LANGUAGES``; a unit test keeps the two equal).
Kept here so the edge validates a client's language without importing Whisper or torch."""


MAX_TEXT_FRAME_BYTES = 8192
"""Largest text frame the edge parses as JSON (a config frame is under 200 bytes); a larger one
gets ``bad_json`` unparsed. Binary frames have their own limit, ``EDGE_MAX_FRAME_BYTES``."""
MAX_JSON_DEPTH = 8
"""Deepest nesting of JSON arrays and objects the edge parses (a config frame has depth 1); a
deeper text frame gets ``bad_json`` unparsed, so no frame can exhaust the parser's recursion."""


_JSON_STRING = re.compile(r'"(?:[^"\\]|\\.)*"', re.S)
"""A JSON string literal, escapes included: brackets inside strings do not nest."""


class BadJson(ValueError):
    """A text frame the edge will not parse; its message is meant for the client."""


def json_depth(text: str) -> int:
    """How deeply the arrays and objects of a JSON text nest, counted without parsing it."""
    depth = deepest = 0
    for char in _JSON_STRING.sub("", text):
        if char in "[{":
            depth += 1
            deepest = max(deepest, depth)
        elif char in "]}":
            depth -= 1
    return deepest


def parse_text_frame(text: str) -> object:
    """A client text frame as JSON, within MAX_TEXT_FRAME_BYTES and MAX_JSON_DEPTH; BadJson otherwise."""
    try:
        size = len(text.encode("utf-8"))
    except UnicodeEncodeError as exc:
        raise BadJson(f"text frames must be valid UTF-8 JSON: {exc.reason} at character {exc.start}") from None
    if size > MAX_TEXT_FRAME_BYTES:
        raise BadJson(f"text frame of {size} bytes exceeds {MAX_TEXT_FRAME_BYTES}; it was not parsed")
    if json_depth(text) > MAX_JSON_DEPTH:
        raise BadJson(f"text frames must be JSON nested at most {MAX_JSON_DEPTH} levels deep; it was not parsed")
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise BadJson(f"text frames must be JSON: {exc.msg}") from None
    except (ValueError, RecursionError) as exc:  # e.g. an integer longer than Python converts
        raise BadJson(f"text frames must be JSON: {exc}") from None


def sample_bytes(encoding: str) -> int:
    """Bytes of one sample of one channel."""
    return 2 if encoding == "pcm_s16le" else 4


ErrorCode = error_codes("ErrorCode", {
    "BAD_JSON": "bad_json",
    "BAD_CONFIG": "bad_config",
    "CONFIG_AFTER_AUDIO": "config_after_audio",
    "UNKNOWN_MESSAGE": "unknown_message",
    "FRAME_TOO_LARGE": "frame_too_large",
    "SERVER_BUSY": "server_busy",
    "SERVER_DRAINING": "server_draining",
    "FIRST_FRAME_TIMEOUT": "first_frame_timeout",
    "IDLE_TIMEOUT": "idle_timeout",
    "MAX_DURATION": "max_duration",
    "SERVER_SHUTDOWN": "server_shutdown",
}, "Codes of ``error`` events: the WebSocket's own, and the Triton ones (moderation.events.TritonErrorCode).",
    __name__)


MAX_ID_CHARS = 64
"""Longest ``speaker_id``, ``channel_id`` and metadata key."""
MAX_METADATA_KEYS = 16
MAX_METADATA_BYTES = 2048
"""A session's ``metadata`` is copied into each of its incidents: kept small."""


def short_id(value: str) -> bool:
    """1-MAX_ID_CHARS printable characters, none of them whitespace."""
    return 0 < len(value) <= MAX_ID_CHARS and value.isprintable() and not any(c.isspace() for c in value)


class Who(BaseModel):
    """Who speaks and where, kept with each incident (docs/INCIDENTS.md): the config frame's and a
    job's optional fields, validated and bounded alike."""

    model_config = ConfigDict(extra="forbid")

    speaker_id: str | None = None
    """Who speaks (the platform's user id), kept with its incidents: at most
    MAX_ID_CHARS printable characters, no spaces."""
    channel_id: str | None = None
    """Where (the voice channel, match or room), kept with its incidents; as ``speaker_id``."""
    metadata: dict[str, StrictStr | StrictInt | StrictFloat | StrictBool] = Field(default_factory=dict)
    """Anything else the platform wants kept with the incidents (game, region, ...): at most
    MAX_METADATA_KEYS keys of MAX_ID_CHARS characters, MAX_METADATA_BYTES of JSON in all."""

    @field_validator("speaker_id", "channel_id")
    @classmethod
    def _short_printable(cls, value: str | None) -> str | None:
        if value is not None and not short_id(value):
            raise ValueError(f"must be 1-{MAX_ID_CHARS} printable characters without spaces")
        return value

    @field_validator("metadata")
    @classmethod
    def _bounded(cls, value: dict) -> dict:
        if len(value) > MAX_METADATA_KEYS or any(not short_id(key) for key in value):
            raise ValueError(f"at most {MAX_METADATA_KEYS} keys of 1-{MAX_ID_CHARS} printable characters")
        if len(json.dumps(value, ensure_ascii=False).encode()) > MAX_METADATA_BYTES:
            raise ValueError(f"at most {MAX_METADATA_BYTES} bytes of JSON")
        return value


class ClientConfig(Who):
    """Optional first text frame. Defaults match a raw 16 kHz mono s16le client (wscat -b)."""

    model_config = ConfigDict(extra="forbid")

    type: Literal["config"] = "config"
    sample_rate: int = Field(SAMPLE_RATE, ge=8000, le=48000)
    encoding: Encoding = "pcm_s16le"
    channels: Literal[1, 2] = 1
    language: str | None = None
    """A Whisper language code; None leaves the choice to the model's exported default."""
    word_timestamps: bool = False
    """Send each segment's words with their times (``words`` in segment events)."""
    interim: StrictBool = False
    """Send ``interim`` events: harmful words flagged while their segment is still open
    (edge/interim.py). Only ``true`` or ``false``: anything else is ``bad_config``."""

    @field_validator("language")
    @classmethod
    def _whisper_code(cls, value: str | None) -> str | None:
        if value is not None and value not in WHISPER_LANGUAGES:
            raise ValueError(f"{value!r} is not a Whisper language code; use one such as 'ko', 'en' or 'ja'")
        return value

    @property
    def bytes_per_frame(self) -> int:
        """Bytes of one sample across all channels."""
        return sample_bytes(self.encoding) * self.channels


class ReadyEvent(ServerEvent):
    """First frame of every session."""

    type: Literal["ready"] = "ready"
    session_id: str
    sample_rate: int
    encoding: Encoding
    channels: int
    language: str | None
    """The model's default language, or null while no Triton server has reported it."""
    max_frame_bytes: int
    signals: list[Signal]
    """The harmful-speech signals that decide verdicts; empty while no Triton server has reported them."""


class ConfigEvent(ServerEvent):
    """Acknowledges an accepted config frame with the effective values."""

    type: Literal["config"] = "config"
    sample_rate: int
    encoding: Encoding
    channels: int
    language: str | None
    word_timestamps: bool
    interim: bool
    speaker_id: str | None = None
    channel_id: str | None = None
    metadata: dict = Field(default_factory=dict)


class InterimEvent(ServerEvent):
    """Harmful words found in a segment that is still open (only for clients that asked for
    ``interim``): the spans are new, each sent once; the segment's final event follows and lists
    those it does not confirm (``unconfirmed_interim``)."""

    type: Literal["interim"] = "interim"
    start_s: float
    """The start of the audio this result heard, in the stream: the open segment's start, or a
    little before what the previous interim result could judge."""
    end_s: float
    """The end of the audio this result heard."""
    text: str
    """The transcript of that audio (the final's may differ)."""
    harmful_spans: list[HarmfulSpan]
    latency_ms: float = 0.0
    """From the arrival of the audio that ends at ``end_s`` to this event being sent."""


class ErrorEvent(ServerEvent):
    """A problem; with ``seq`` (and the segment's times and latency) when it replaces a segment result."""

    optional_fields: ClassVar[frozenset[str]] = frozenset({"seq", "start_s", "end_s", "latency_ms"})

    type: Literal["error"] = "error"
    code: ErrorCode
    message: str
    seq: int | None = None
    start_s: float | None = None
    end_s: float | None = None
    latency_ms: float | None = None


class SummaryEvent(ServerEvent):
    """Last frame of a session that ended with ``{"type": "end"}`` or a timeout; only a
    ``server_shutdown`` error follows it, when the edge ends the session to shut down."""

    type: Literal["summary"] = "summary"
    session_id: str
    segments: int
    harmful_segments: int
    failed_segments: int
    audio_seconds: float
    p50_latency_ms: float | None
    p95_latency_ms: float | None


AnyServerEvent = Annotated[ReadyEvent | ConfigEvent | SegmentEvent | InterimEvent | ErrorEvent | SummaryEvent,
                           Field(discriminator="type")]
SERVER_EVENTS: TypeAdapter[AnyServerEvent] = TypeAdapter(AnyServerEvent)
"""Parses any server frame into its event model (clients and tests use it)."""
