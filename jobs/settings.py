"""Typed settings of batch jobs, read from ``JOBS_*`` environment variables (and ``REDIS_URL``,
``SUMMARY_LLM_*``). The Triton, VAD and verdict settings are the shared core's, read from the
edge's ``EDGE_*`` variables (moderation/settings.py), so a recording gets the same verdicts as
the live stream."""

from __future__ import annotations

from pathlib import Path

from pydantic import AliasChoices, Field
from pydantic_settings import SettingsConfigDict

from moderation.settings import ModerationSettings


class JobSettings(ModerationSettings):
    model_config = SettingsConfigDict(env_prefix="JOBS_", alias_generator=None)

    redis_url: str = Field("redis://127.0.0.1:6379/0", validation_alias=AliasChoices("REDIS_URL", "JOBS_REDIS_URL"))
    """Redis that holds the Celery queue, job state and each job's event stream."""
    data_dir: Path = Path("data/jobs")
    """Where uploaded files live, one folder per job; shared by the API and every worker."""
    max_upload_bytes: int = Field(512 << 20, gt=0)
    """Largest upload accepted; a bigger one gets 413."""
    max_duration_s: float = Field(4 * 3600.0, gt=0)
    """Longest recording accepted; a longer one gets 413 at upload (or fails ``too_long`` when its
    container does not say its duration)."""
    sync_max_duration_s: float = Field(600.0, gt=0)
    """Longest recording ``POST /v1/audio/transcriptions`` (the OpenAI-compatible endpoint, which
    answers when the transcript is done) takes; a longer one gets 413 and a pointer to ``/v1/jobs``."""
    sync_timeout_s: float = Field(600.0, gt=0)
    """How long that endpoint waits for its job before it answers 504 (the job goes on and its
    result stays at ``/v1/jobs/{id}``): OpenAI's Python client gives up after 600 s by default."""
    retention_s: int = Field(7 * 24 * 3600, gt=0)
    """A finished job (its state, events and file) is removed this long after it ended."""
    concurrency: int = Field(4, gt=0)
    """Windows (or segments) of one job in flight to Triton at once; Triton batches them with other
    jobs' and live streams' requests."""
    long_form: bool = True
    """Send a recording's speech to Whisper in long-form windows of up to ``window_s`` (several
    utterances each, decoded with timestamps into Whisper's own segments) when the served whisper
    model can (its CTranslate2 engine); false, or a torch-engine export: one request per speech
    segment, as a live stream sends."""
    window_s: float = Field(28.0, ge=5.0, le=30.0)
    """Most audio in one long-form window (speech plus short pauses). 2 s short of Whisper's 30 s:
    speech that runs to the end of a full window is often left out (Whisper takes it for speech
    cut off by the window) and costs a second call; with 28 s no window of the benchmark's
    English and Korean recordings stopped early, against 1 in 7, 3 in 18 and 2 in 4 with 30 s
    (docs/PERFORMANCE.md)."""
    per_segment_languages: tuple[str, ...] = ()
    """Languages whose recordings keep one request per speech segment even with ``long_form``
    (a JSON list, e.g. ``["ko"]``), where long-form measured worse (docs/PERFORMANCE.md)."""
    visibility_timeout_s: int = Field(3600, gt=0)
    """Celery/Redis visibility timeout: a job whose worker vanished without a trace is handed to
    another worker after this long (workers that start also take over jobs whose lease expired)."""
    worker_concurrency: int = Field(2, gt=0)
    """Jobs one worker process (``python -m jobs.worker``) runs at once, each in a thread of it
    with its own event loop (the work is Triton's; the worker mostly waits)."""
    lease_s: float = Field(15.0, gt=0)
    """A worker holds a job's lease while it runs it, renewed every third of this; another worker
    takes the job over once the lease has expired."""
    triton_wait_s: float = Field(120.0, ge=0)
    """How long a segment keeps being tried while Triton is unavailable or too busy (a replica
    restarting, a Triton crash the supervisor repairs) before the job fails."""
    callback_timeout_s: float = Field(10.0, gt=0)
    """Deadline of the POST of the final summary to a job's callback URL."""
    metrics_port: int = Field(9102, ge=0, le=65535)
    """Port of a worker's Prometheus ``/metrics`` (``jobs_*``); 0 turns it off. Workers on one host
    need one port each."""
    page_size_max: int = Field(100, gt=0)
    """Most jobs one ``GET /v1/jobs`` page returns."""
    summary_llm_url: str | None = Field(None, validation_alias=AliasChoices("SUMMARY_LLM_URL", "JOBS_SUMMARY_LLM_URL"))
    """Base URL of an OpenAI-compatible chat endpoint (Ollama, vLLM, Triton's OpenAI frontend),
    e.g. ``http://localhost:11434/v1``; unset: no LLM summary (the default)."""
    summary_llm_model: str | None = Field(None, validation_alias=AliasChoices("SUMMARY_LLM_MODEL",
                                                                              "JOBS_SUMMARY_LLM_MODEL"))
    """Model name sent to that endpoint."""
    summary_llm_api_key: str | None = Field(None, validation_alias=AliasChoices("SUMMARY_LLM_API_KEY",
                                                                                "JOBS_SUMMARY_LLM_API_KEY"))
    """Bearer token for that endpoint, if it needs one."""
    summary_llm_timeout_s: float = Field(60.0, gt=0)
    """Deadline of the LLM call; past it the report arrives with the failure noted."""
