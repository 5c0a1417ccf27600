"""Typed edge settings, read from ``EDGE_*`` environment variables (and ``TRITON_URL``)."""

from __future__ import annotations

from pydantic import AliasChoices, Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class EdgeSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="EDGE_", use_attribute_docstrings=True, extra="ignore")

    host: str = "0.0.0.0"
    """Interface uvicorn binds to."""
    port: int = 8000
    """Port of the HTTP/WebSocket server."""
    triton_url: str = Field("localhost:8011", validation_alias=AliasChoices("EDGE_TRITON_URL", "TRITON_URL"))
    """Triton gRPC address, or a comma-separated list; segments are spread over the ready ones."""
    triton_model: str = "ensemble"
    """Triton model that takes AUDIO (+LANGUAGE) and returns TRANSCRIPT, HARMFUL_PROB, NO_SPEECH_PROB.
    Its ``default_language`` parameter is the language of clients that name none."""
    triton_timeout_s: float = Field(15.0, gt=0)
    """Deadline of one segment's Triton call; past it the segment gets an error event."""
    triton_health_interval_s: float = Field(2.0, gt=0)
    """How often each Triton server's model readiness is re-checked."""
    harmful_threshold: float = Field(0.5, ge=0, le=1)
    """With a trained classifier, a segment is harmful when its HARMFUL_PROB is at least this."""
    span_word_times: bool = True
    """Ask Whisper for word times on every segment, so a lexicon span covers just its words (costs
    an alignment pass, see docs/PERFORMANCE.md); off: spans cover their whole segment, and word
    times are computed only for clients that ask for them."""
    vad_aggressiveness: int = Field(2, ge=0, le=3)
    """WebRTC VAD mode: 0 keeps the most audio as speech, 3 filters non-speech hardest."""
    vad_frame_ms: int = 30
    """VAD frame length; WebRTC VAD accepts 10, 20 or 30 ms."""
    min_silence_ms: int = Field(400, ge=0)
    """Silence that ends a segment."""
    max_segment_s: float = Field(5.0, gt=0, le=30)
    """Longer speech is cut here so detection latency stays bounded (Whisper's limit is 30 s)."""
    min_speech_ms: int = Field(200, ge=0)
    """Segments with less speech than this are dropped as blips."""
    pre_roll_ms: int = Field(200, ge=0)
    """Audio kept before the first speech frame of a segment."""
    post_roll_ms: int = Field(200, ge=0)
    """Trailing silence kept after the last speech frame of a segment."""
    max_frame_bytes: int = Field(1 << 20, gt=0)
    """Largest binary frame accepted; bigger frames get a ``frame_too_large`` error."""
    max_pending_segments: int = Field(16, gt=0)
    """Segments in flight per session; beyond it the edge stops reading the socket (backpressure)."""
    max_sessions: int = Field(500, gt=0)
    """Concurrent WebSocket sessions per process; more are refused with close code 1013."""
    log_level: str = "info"
    """uvicorn and application log level."""

    default_language: None = None
    """Removed: the language of clients that name none is the whisper model's (export it with
    ``--language``). Setting EDGE_DEFAULT_LANGUAGE stops the edge rather than being ignored."""

    @field_validator("default_language", mode="before")
    @classmethod
    def _removed(cls, value: object) -> None:
        if value is not None:
            raise ValueError("EDGE_DEFAULT_LANGUAGE was removed: export whisper with --language instead "
                             "(python -m scripts.export.export_whisper --language …, then export_ensemble)")
        return None

    def triton_urls(self) -> list[str]:
        """The Triton addresses of ``triton_url``."""
        return [url.strip() for url in self.triton_url.split(",") if url.strip()]
