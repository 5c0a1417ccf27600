"""Typed job records and the events of a job's stream (Server-Sent Events, docs/JOBS.md).

A job's ``transcript_segment`` events carry the WebSocket ``segment`` event's fields
(``moderation.events.SegmentEvent``), so a recording and a live stream read the same.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from moderation.events import HarmfulSpan, Signal, error_codes
from moderation.protocol import Who


class JobState(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"


TERMINAL_STATES = frozenset({JobState.COMPLETED, JobState.FAILED, JobState.CANCELLED})


JobErrorCode = error_codes("JobErrorCode", {
    "EMPTY_FILE": "empty_file",  # the upload has no bytes
    "NOT_AUDIO": "not_audio",  # FFmpeg finds no audio stream in it (a text file, an image, ...)
    # its audio cannot be decoded, or ends before its container says it does (truncated)
    "CORRUPT_AUDIO": "corrupt_audio",
    "NO_AUDIO_DATA": "no_audio_data",  # an audio stream with no samples
    "TOO_LONG": "too_long",  # longer than JOBS_MAX_DURATION_S (found while decoding)
    "INTERNAL": "internal_error",
}, "Codes of a failed job's ``error`` event: its own, and the Triton ones (moderation.events.TritonErrorCode).",
    __name__)


class JobEvent(StrEnum):
    """Names of a job's events (the SSE ``event:`` field); ``data:`` is the JSON of the models
    below (and of ``moderation.events.SegmentEvent`` for ``transcript_segment``)."""

    PROGRESS = "progress"
    TRANSCRIPT_SEGMENT = "transcript_segment"
    FINAL_SUMMARY = "final_summary"
    ERROR = "error"


FINAL_EVENTS = frozenset({JobEvent.FINAL_SUMMARY, JobEvent.ERROR})
"""The events that end a job's stream: one of them is its last event."""


MAX_PROMPT_CHARS = 1000
"""Longest ``prompt`` accepted: Whisper reads at most its last 223 tokens anyway."""


class JobOptions(Who):
    """Options of ``POST /v1/jobs`` (form fields; ``metadata`` as a JSON object). ``speaker_id``,
    ``channel_id`` and ``metadata`` (moderation.protocol.Who) are kept with the job's incidents."""

    model_config = ConfigDict(extra="forbid")

    language: str | None = None
    """A Whisper code, ``auto`` (detected from the first 30 s of speech), or None for the model's default."""
    word_timestamps: bool = False
    """Each transcript segment carries its words with their times."""
    callback_url: str | None = None
    """Receives the final summary as a JSON POST when the job ends."""
    prompt: str | None = Field(None, max_length=MAX_PROMPT_CHARS)
    """Text Whisper is conditioned on before each long-form window (names, spelling, style: the
    OpenAI endpoint's ``prompt``); only the end of a long one counts (223 tokens)."""


class JobError(BaseModel):
    code: JobErrorCode
    message: str


class JobInfo(BaseModel):
    """What ``GET /v1/jobs/{id}`` returns (without the result)."""

    id: str
    state: JobState
    filename: str
    size_bytes: int
    options: JobOptions
    created_at: float
    """Unix time."""
    started_at: float | None = None
    finished_at: float | None = None
    duration_s: float | None = None
    """The recording's length, when its container says it (else once decoded)."""
    position_s: float = 0.0
    """Audio decoded and segmented so far."""
    progress: float = 0.0
    """Fraction of the recording done, 0..1."""
    segments_done: int = 0
    language: str | None = None
    """The language transcribed (the detected one with ``auto``)."""
    error: JobError | None = None
    owner: str | None = None
    """The authenticated client that created it (jobs are visible to their owner only)."""


class ProgressEvent(BaseModel):
    type: Literal["progress"] = "progress"
    fraction: float | None
    """Share of the recording processed, 0..1; null when its duration is unknown."""
    position_s: float
    duration_s: float | None


class JobErrorEvent(BaseModel):
    """The job failed (the last event of a failed job)."""

    type: Literal["error"] = "error"
    code: JobErrorCode
    message: str


class HarmfulSegment(BaseModel):
    """One harmful segment of the recording."""

    seq: int
    start_s: float
    end_s: float
    text: str
    reasons: list[Signal]
    categories: list[str]
    confidence: float | None
    spans: list[HarmfulSpan]


class WorstMoment(BaseModel):
    """A harmful moment, ranked by severity (spans and confidence)."""

    start_s: float
    end_s: float
    text: str
    categories: list[str]
    severity: float
    """Higher is worse: the segment's confidence (1.0 for a lexicon match) times its harmful spans."""


class LlmSummary(BaseModel):
    model: str
    text: str | None = None
    error: str | None = None
    """Why no summary came back; the report is complete without it."""


class FinalSummary(BaseModel):
    """The moderation report, the last event of a completed job."""

    type: Literal["final_summary"] = "final_summary"
    job_id: str
    filename: str
    duration_s: float
    speech_s: float
    """Total length of the speech segments."""
    language: str | None
    segments: int
    harmful_segments: int
    categories: dict[str, int] = Field(default_factory=dict)
    """Harmful spans per category."""
    harmful: list[HarmfulSegment]
    worst_moments: list[WorstMoment]
    processing_s: float
    real_time_factor: float | None
    """processing_s / duration_s: below 1 is faster than real time."""
    llm_summary: LlmSummary | None = None
    """Only with ``SUMMARY_LLM_URL`` set."""
