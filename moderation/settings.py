"""The settings that the edge and the batch workers both read: the Triton connection, the VAD's
limits and the verdict's thresholds, so that a recording gets the same verdicts as a live stream.

They keep their ``EDGE_*`` environment variables (and ``TRITON_URL``) in every part that extends
them: a worker, whose own settings are ``JOBS_*``, reads the same variables as the edge it
serves with, so no deployment file changes meaning.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated

from pydantic import AliasChoices, AliasGenerator, Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from moderation.verdict import DEFAULT_MIN_SCORE, VerdictPolicy

ENV_PREFIX = "EDGE_"
"""Prefix of the shared settings' environment variables (the edge's, where they started)."""


WEBHOOK_SECRET = re.compile(r"whsec_[A-Za-z0-9+/]{32,}={0,2}")
"""A Standard Webhooks secret: the prefix and the base64 of 24 or more random bytes."""


def shared_variable(name: str) -> AliasChoices:
    """The environment variable of a shared field, whatever the prefix of the part reading it."""
    return AliasChoices(ENV_PREFIX + name.upper())


class ModerationSettings(BaseSettings):
    """Base of EdgeSettings and JobSettings: what moderating a segment depends on.

    Its fields are named ``EDGE_<FIELD>`` by an alias generator; a subclass with another prefix
    sets ``alias_generator=None`` so that its own fields take its prefix again (the inherited
    fields keep the aliases they were given here)."""

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, use_attribute_docstrings=True, extra="ignore",
                                      populate_by_name=True,
                                      alias_generator=AliasGenerator(validation_alias=shared_variable))

    triton_url: str = Field("localhost:8011", validation_alias=AliasChoices("EDGE_TRITON_URL", "TRITON_URL"))
    """Triton gRPC address (``host:port``), or a comma-separated list. A host name stands for every
    address it resolves to (IPv4 ones if it has any, else IPv6), re-resolved every
    ``triton_discovery_interval_s``: a Kubernetes headless Service or a compose service name
    lists every replica. Segments go to the ready replica with the fewest calls in flight."""
    triton_discovery_interval_s: float = Field(10.0, gt=0)
    """How often host names of ``triton_url`` are resolved again (replicas added, vanished ones dropped)."""
    triton_model: str = "ensemble"
    """Triton model that takes AUDIO (+LANGUAGE) and returns TRANSCRIPT, HARMFUL_PROB, NO_SPEECH_PROB.
    Its ``default_language`` parameter is the language of clients that name none."""
    triton_timeout_s: float = Field(15.0, gt=0)
    """Deadline of one segment's Triton call; past it the segment gets an error event."""
    triton_health_interval_s: float = Field(2.0, gt=0)
    """How often each Triton server's model readiness is re-checked."""
    harmful_threshold: float | None = Field(None, ge=0, le=1)
    """With a trained classifier, a segment is harmful when its HARMFUL_PROB is at least this.
    Unset: the threshold the classifier's training calibrated (published by the ensemble), else 0.5."""
    category_weights: dict[str, Annotated[float, Field(ge=0, le=1)]] = Field(default_factory=dict)
    """Weight (0-1) of each category in a segment's ``severity``, as JSON, e.g.
    ``{"politics": 0, "profanity": 0.5}``: the classifier's categories (origin, physical,
    politics, profanity, age, gender, race, religion), ``harmful``, and the lexicon's (profanity,
    insult, parent_insult, sexual, slur, gesture). 0 ignores one; an unnamed category weighs 1."""
    severity_min_score: float = Field(DEFAULT_MIN_SCORE, ge=0, le=1)
    """The least classifier score that counts towards severity."""
    span_word_times: bool = True
    """While a lexicon runs, ask Whisper for word times on every segment, so a lexicon span covers
    just its words (costs an alignment pass, see docs/PERFORMANCE.md); off: spans cover their
    whole segment, and word times are computed only for callers that ask for them."""
    vad_aggressiveness: int = Field(2, ge=0, le=3)
    """WebRTC VAD mode: 0 keeps the most audio as speech, 3 filters non-speech hardest."""
    vad_frame_ms: int = 30
    """VAD frame length; WebRTC VAD accepts 10, 20 or 30 ms."""
    min_silence_ms: int = Field(400, ge=0)
    """Silence that ends a segment."""
    max_segment_s: float = Field(5.0, gt=0, le=30)
    """Longer speech is cut here so detection latency stays bounded (Whisper's limit is 30 s)."""
    cut_search_ms: int = Field(1000, ge=0)
    """Speech that reaches max_segment_s is cut at the quietest point of its last this many ms (a
    pause between words), and the audio after the cut opens the next segment; 0 cuts at the limit."""
    min_speech_ms: int = Field(200, ge=0)
    """Segments with less speech than this are dropped as blips."""
    pre_roll_ms: int = Field(200, ge=0)
    """Audio kept before the first speech frame of a segment."""
    post_roll_ms: int = Field(200, ge=0)
    """Trailing silence kept after the last speech frame of a segment."""

    database_url: str | None = Field(None, validation_alias=AliasChoices("DATABASE_URL", "EDGE_DATABASE_URL"))
    """PostgreSQL that keeps incidents for moderators (``postgresql://user@host:5432/db``); unset:
    no incidents are kept and ``/v1/incidents`` answers 503. ``make run`` starts an embedded one."""
    clips_dir: Path = Path("data/clips")
    """Where incidents' evidence clips (Ogg Opus) are written; shared by the edge and the workers."""
    incident_retention_days: int = Field(90, ge=1)
    """Incidents and their clips are erased this many days after they were kept (the edge checks hourly)."""
    incident_queue_max: int = Field(1000, gt=0)
    """Incidents waiting to be written (while PostgreSQL is slow or down); past it new ones are
    dropped and counted (``incidents_dropped_total``): a segment event never waits for one."""
    incident_webhook_url: str | None = None
    """Receives a signed JSON POST for each incident at or above incident_webhook_min_severity
    (docs/INCIDENTS.md), retried until it answers 2xx; unset: none is sent. The edge and the
    workers must share it (both mark incidents for delivery; the edge delivers)."""
    incident_webhook_secret: SecretStr | None = None
    """The webhook's signing secret (Standard Webhooks: ``whsec_`` and base64 of 24-64 random
    bytes); required with incident_webhook_url."""
    incident_webhook_min_severity: float = Field(0.8, ge=0, le=1)
    """Incidents at or above this severity are sent to the webhook."""
    incident_webhook_max_attempts: int = Field(10, ge=1, le=50)
    """Deliveries of one incident before it is marked ``failed`` (waits between them double from
    1 s up to 5 min: 10 attempts span about 9 minutes)."""

    @field_validator("incident_webhook_url")
    @classmethod
    def _http_url(cls, value: str | None) -> str | None:
        if value and not re.match(r"https?://[^/\s]+", value):
            raise ValueError("must be an http:// or https:// URL")
        return value or None

    @model_validator(mode="after")
    def _webhook_signed(self) -> ModerationSettings:
        if self.incident_webhook_url and self.incident_webhook_secret is None:
            raise ValueError("EDGE_INCIDENT_WEBHOOK_URL needs EDGE_INCIDENT_WEBHOOK_SECRET (whsec_...)")
        secret = self.incident_webhook_secret
        if secret is not None and not WEBHOOK_SECRET.fullmatch(secret.get_secret_value()):
            raise ValueError("EDGE_INCIDENT_WEBHOOK_SECRET must be whsec_ and the base64 of at least 24 bytes")
        return self

    def verdict_policy(self) -> VerdictPolicy:
        return VerdictPolicy(self.harmful_threshold, dict(self.category_weights), self.severity_min_score)

    def triton_urls(self) -> list[str]:
        """The Triton addresses of ``triton_url``."""
        return [url.strip() for url in self.triton_url.split(",") if url.strip()]
