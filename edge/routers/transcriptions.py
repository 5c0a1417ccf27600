"""``POST /v1/audio/transcriptions``: OpenAI's transcription API (docs/JOBS.md, OpenAI-compatible
transcription), answered in OpenAI's shapes with this service's moderation fields added to
``verbose_json`` segments. A request is a batch job (the same workers, models and verdicts as
``/v1/jobs``) that the edge waits for; a recording longer than ``JOBS_SYNC_MAX_DURATION_S`` gets
413 and a pointer to ``/v1/jobs``. Errors have OpenAI's body: ``{"error": {"message", "type",
"param", "code"}}``."""

from __future__ import annotations

import logging
import time
from enum import StrEnum

from fastapi import APIRouter, HTTPException, Request, Response
from fastapi.responses import JSONResponse
from starlette.datastructures import UploadFile

from edge.dependencies import HttpPrincipalDep
from edge.routers.jobs import JobsDep, read_form, submit_job
from jobs.models import FINAL_EVENTS, MAX_PROMPT_CHARS, JobError, JobErrorCode, JobEvent, JobInfo, JobOptions
from jobs.service import JobService
from jobs.transcripts import TranscriptFormat, render, spoken
from moderation.events import SegmentEvent
from moderation.protocol import WHISPER_LANGUAGES

logger = logging.getLogger(__name__)

router = APIRouter(prefix="/v1/audio", tags=["openai"])

TOO_LONG_ADVICE = " at once here: upload it to POST /v1/jobs instead, which takes recordings up to hours long"
"""What a 413 for a recording over JOBS_SYNC_MAX_DURATION_S adds to the job API's message."""
WAIT_BLOCK_MS = 5000
"""One wait for the job's next events; the deadline is looked at between waits."""


class ResponseFormat(StrEnum):
    JSON = "json"
    TEXT = "text"
    SRT = "srt"
    VTT = "vtt"
    VERBOSE_JSON = "verbose_json"


GRANULARITIES = frozenset({"segment", "word"})
INVALID_REQUEST = "invalid_request_error"
CLIENT_ERRORS = {JobErrorCode.EMPTY_FILE, JobErrorCode.NOT_AUDIO, JobErrorCode.CORRUPT_AUDIO,
                 JobErrorCode.NO_AUDIO_DATA, JobErrorCode.TOO_LONG}
"""Job errors that are the file's fault (400), not the service's (500)."""


class OpenAIError(Exception):
    def __init__(self, status_code: int, message: str, param: str | None = None, code: str | None = None,
                 kind: str = INVALID_REQUEST):
        super().__init__(message)
        self.status_code, self.message, self.param, self.code, self.kind = status_code, message, param, code, kind

    def response(self) -> JSONResponse:
        return JSONResponse({"error": {"message": self.message, "type": self.kind, "param": self.param,
                                       "code": self.code}}, status_code=self.status_code)


def from_problem(exc: HTTPException) -> OpenAIError:
    """The job API's typed error (413 too large, 400 bad form, 503 queue down) in OpenAI's shape."""
    detail = exc.detail if isinstance(exc.detail, dict) else {"code": None, "message": str(exc.detail)}
    kind = INVALID_REQUEST if exc.status_code < 500 else "server_error"
    return OpenAIError(exc.status_code, detail.get("message", ""), code=detail.get("code"), kind=kind)


def parse_request(form) -> tuple[UploadFile, JobOptions, ResponseFormat, set[str]]:
    """The form's file, the job options it asks for, the response format and the granularities."""
    upload = form.get("file")
    if not isinstance(upload, UploadFile):
        raise OpenAIError(400, "send the recording as the form field 'file'", param="file")
    if not (form.get("model") or "").strip():
        raise OpenAIError(400, "the form field 'model' is required (any name: the served Whisper answers)",
                          param="model")
    fmt = form.get("response_format") or ResponseFormat.JSON.value
    if fmt not in ResponseFormat.__members__.values():
        raise OpenAIError(400, f"response_format {fmt!r} is not one of {', '.join(ResponseFormat)}",
                          param="response_format")
    granularities = set(form.getlist("timestamp_granularities[]")) or {"segment"}
    if not granularities <= GRANULARITIES:
        raise OpenAIError(400, "timestamp_granularities[] takes 'segment' and 'word'", param="timestamp_granularities")
    if "word" in granularities and fmt != ResponseFormat.VERBOSE_JSON:
        raise OpenAIError(400, "word timestamps need response_format verbose_json", param="timestamp_granularities")
    language = form.get("language") or None
    if language is not None and language not in WHISPER_LANGUAGES:
        raise OpenAIError(400, f"{language!r} is not an ISO-639-1 code Whisper knows", param="language")
    prompt = form.get("prompt") or None
    if prompt is not None and len(prompt) > MAX_PROMPT_CHARS:
        raise OpenAIError(400, f"prompt is {len(prompt)} characters long; the most is {MAX_PROMPT_CHARS}",
                          param="prompt")
    options = JobOptions(language=language, word_timestamps="word" in granularities, prompt=prompt)
    return upload, options, ResponseFormat(fmt), granularities


async def finished_segments(jobs: JobService, job_id: str, deadline: float) -> list[SegmentEvent]:
    """Wait for the job's last event; its segments, or OpenAIError for a failed job."""
    segments, after = [], "0"
    while time.monotonic() < deadline:
        for event in await jobs.store.events(job_id, after, block_ms=WAIT_BLOCK_MS):
            after = event.id
            if event.event == JobEvent.TRANSCRIPT_SEGMENT:
                segments.append(SegmentEvent.model_validate_json(event.data))
            elif event.event in FINAL_EVENTS:
                if event.event == JobEvent.ERROR:
                    raise job_failed(JobError.model_validate_json(event.data))
                return segments
    raise OpenAIError(504, f"the transcription did not finish within {jobs.settings.sync_timeout_s:.0f} s; "
                      f"it goes on as job {job_id} (GET /v1/jobs/{job_id})", code="timeout", kind="server_error")


def job_failed(error: JobError) -> OpenAIError:
    if error.code in CLIENT_ERRORS:
        return OpenAIError(400, error.message, param="file", code=str(error.code))
    return OpenAIError(500, error.message, code=str(error.code), kind="server_error")


@router.post("/transcriptions")
async def transcriptions(request: Request, jobs: JobsDep, principal: HttpPrincipalDep) -> Response:
    """Multipart: ``file``, ``model``, optional ``language``, ``prompt`` (conditions each window),
    ``response_format`` (json, text, srt, vtt, verbose_json), ``timestamp_granularities[]``
    (segment, word), ``temperature`` (accepted; decoding is greedy)."""
    try:
        form = await read_form(request, jobs)
        upload, options, fmt, granularities = parse_request(form)
        info = await submit_job(jobs, principal, upload, options, jobs.settings.sync_max_duration_s, TOO_LONG_ADVICE,
                                must_decode=True)
        segments = await finished_segments(jobs, info.id, time.monotonic() + jobs.settings.sync_timeout_s)
    except HTTPException as exc:
        return from_problem(exc).response()
    except OpenAIError as exc:
        return exc.response()
    info = await jobs.store.get(info.id) or info
    return answer(fmt, segments, info, "word" in granularities)


def answer(fmt: ResponseFormat, segments: list[SegmentEvent], info: JobInfo, words: bool) -> Response:
    headers = {"X-Job-Id": info.id}
    text = " ".join(s.text.strip() for s in spoken(segments))
    if fmt is ResponseFormat.JSON:
        return JSONResponse({"text": text}, headers=headers)
    if fmt is ResponseFormat.TEXT:
        return Response(text + "\n", media_type="text/plain; charset=utf-8", headers=headers)
    if fmt is ResponseFormat.VERBOSE_JSON:
        return JSONResponse(verbose(segments, info, text, words), headers=headers)
    body, media_type = render(TranscriptFormat(fmt.value), segments, info)
    return Response(body, media_type=media_type, headers=headers)


def verbose(segments: list[SegmentEvent], info: JobInfo, text: str, words: bool) -> dict:
    """OpenAI's ``verbose_json``; each segment also carries this service's verdict (``is_harmful``,
    ``harmful_prob``, ``severity``, ``categories``, ``reasons``, ``harmful_spans``)."""
    said = spoken(segments)
    document = {
        "task": "transcribe", "language": info.language, "duration": info.duration_s, "text": text,
        "segments": [{
            "id": i, "seek": 0, "start": s.start_s, "end": s.end_s, "text": s.text, "tokens": [],
            "temperature": 0.0, "avg_logprob": None, "compression_ratio": None, "no_speech_prob": s.no_speech_prob,
            "is_harmful": s.is_harmful, "harmful_prob": s.harmful_prob, "severity": s.severity,
            "categories": s.categories, "reasons": [str(r) for r in s.reasons],
            "harmful_spans": [h.model_dump(mode="json") for h in s.harmful_spans],
        } for i, s in enumerate(said)],
    }
    if words:
        document["words"] = [{"word": w.word.strip(), "start": w.start_s, "end": w.end_s}
                             for s in said for w in s.words or []]
    return document
