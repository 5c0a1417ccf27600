"""Batch moderation of recorded files (docs/JOBS.md): upload, status, live events (SSE),
transcripts, cancel, list. The work is done by ``jobs.worker`` processes."""

from __future__ import annotations

import json
import logging
import re
import uuid
from typing import Annotated

import anyio
import httpx
from fastapi import APIRouter, Depends, Header, HTTPException, Query, Request, Response, status
from pydantic import BaseModel, ValidationError
from redis.exceptions import RedisError
from sse_starlette import EventSourceResponse, ServerSentEvent
from starlette.datastructures import UploadFile
from starlette.formparsers import MultiPartException

from edge.auth import Principal
from edge.dependencies import HttpPrincipalDep, ServicesDep
from edge.problems import problem
from jobs import files
from jobs.models import FINAL_EVENTS, TERMINAL_STATES, FinalSummary, JobEvent, JobInfo, JobOptions, JobState
from jobs.service import JobService
from jobs.store import now
from jobs.transcripts import TranscriptFormat, render
from moderation.events import SegmentEvent
from moderation.protocol import WHISPER_LANGUAGES

logger = logging.getLogger(__name__)

router = APIRouter(prefix="/v1/jobs", tags=["jobs"])

MULTIPART_OVERHEAD_BYTES = 64 << 10
"""Room for the multipart envelope and form fields above the file's own size limit."""
COPY_CHUNK_BYTES = 1 << 20
SSE_BLOCK_MS = 5000
"""How long one wait for new events blocks before the job's state is looked at again."""
SSE_PING_S = 15
"""Comment lines that keep idle SSE connections open through proxies."""
EVENT_ID = re.compile(r"^\d+-\d+$")


class JobLinks(BaseModel):
    self: str
    events: str
    transcript: dict[str, str]


class JobView(JobInfo):
    links: JobLinks
    result: FinalSummary | None = None
    """The moderation report, once the job completed."""


class JobPage(BaseModel):
    jobs: list[JobView]
    offset: int
    limit: int
    total: int
    """The caller's jobs Redis holds."""


class BodyTooLarge(Exception):
    pass


def job_service(services: ServicesDep) -> JobService:
    if services.jobs is None:
        raise problem(status.HTTP_503_SERVICE_UNAVAILABLE, "jobs_disabled",
                      "batch jobs are not enabled on this edge (EDGE_JOBS=true, with Redis and workers)")
    return services.jobs


JobsDep = Annotated[JobService, Depends(job_service)]


def links(job_id: str) -> JobLinks:
    base = f"{router.prefix}/{job_id}"
    return JobLinks(self=base, events=f"{base}/events",
                    transcript={fmt.value: f"{base}/transcript.{fmt.value}" for fmt in TranscriptFormat})


def owner(principal: Principal | None) -> str | None:
    return principal.key if principal else None


async def owned_job(jobs: JobService, job_id: str, principal: Principal | None) -> JobInfo:
    """The job, if it exists and the caller may see it (404 otherwise: no hint that it exists)."""
    info = await jobs.store.get(job_id) if len(job_id) <= 64 else None
    if info is None or info.owner != owner(principal):
        raise problem(status.HTTP_404_NOT_FOUND, "job_not_found", f"no job {job_id!r}")
    return info


def limited_receive(request: Request, limit: int):
    """The request's receive, raising BodyTooLarge once more than ``limit`` bytes came in (a
    chunked upload has no Content-Length to check up front)."""
    received = 0

    async def receive():
        nonlocal received
        message = await request.receive()
        received += len(message.get("body", b""))
        if received > limit:
            raise BodyTooLarge()
        return message

    return receive


def too_large(jobs: JobService) -> HTTPException:
    return problem(status.HTTP_413_CONTENT_TOO_LARGE, "upload_too_large",
                   f"the upload is larger than the limit of {jobs.settings.max_upload_bytes} bytes")


async def read_form(request: Request, jobs: JobService):
    limit = jobs.settings.max_upload_bytes + MULTIPART_OVERHEAD_BYTES
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise too_large(jobs)
    try:
        return await Request(request.scope, limited_receive(request, limit)).form(max_files=1, max_fields=16)
    except BodyTooLarge as exc:
        raise too_large(jobs) from exc
    except MultiPartException as exc:
        raise problem(status.HTTP_400_BAD_REQUEST, "bad_form", f"the upload is not a valid multipart form: {exc}") \
            from exc


def valid_callback(url: str) -> bool:
    try:
        parsed = httpx.URL(url)
    except httpx.InvalidURL:
        return False
    return parsed.scheme in ("http", "https") and bool(parsed.host)


OPTION_FIELDS = ("language", "word_timestamps", "callback_url", "prompt", "speaker_id", "channel_id", "metadata")


def parse_options(form) -> JobOptions:
    fields = {key: form.get(key) for key in OPTION_FIELDS if form.get(key)}
    if "metadata" in fields:
        try:
            fields["metadata"] = json.loads(fields["metadata"])
        except json.JSONDecodeError as exc:
            raise problem(status.HTTP_422_UNPROCESSABLE_CONTENT, "bad_options",
                          "metadata must be a JSON object") from exc
    language = fields.get("language")
    if language is not None and language != "auto" and language not in WHISPER_LANGUAGES:
        raise problem(status.HTTP_422_UNPROCESSABLE_CONTENT, "bad_language",
                      f"{language!r} is not a Whisper language code; use one such as 'ko' or 'en', or 'auto'")
    url = fields.get("callback_url")
    if url is not None and not valid_callback(url):
        raise problem(status.HTTP_422_UNPROCESSABLE_CONTENT, "bad_callback_url",
                      "callback_url must be an http:// or https:// URL")
    try:
        return JobOptions.model_validate(fields)
    except ValidationError as exc:
        raise problem(status.HTTP_422_UNPROCESSABLE_CONTENT, "bad_options", str(exc.errors()[0]["msg"])) from exc


async def store_upload(upload: UploadFile, jobs: JobService, job_id: str) -> tuple[str, int]:
    """Copies the uploaded file into the job's folder; returns its path and size."""
    path = files.upload_path(jobs.settings.data_dir, job_id, upload.filename or "")
    await anyio.Path(path.parent).mkdir(parents=True, exist_ok=True)
    size = 0
    async with await anyio.open_file(path, "wb") as out:
        while chunk := await upload.read(COPY_CHUNK_BYTES):
            size += len(chunk)
            if size > jobs.settings.max_upload_bytes:
                raise too_large(jobs)
            await out.write(chunk)
    return str(path), size


async def declared_duration(path: str, limit_s: float, advice: str = "", must_decode: bool = False) -> float | None:
    """The recording's duration from its header (else FFmpeg's estimate, for progress only); 413
    (with ``advice`` after its message) when a header that counts the frames says it is over
    ``limit_s``. A file
    FFmpeg cannot read is accepted here and fails in the worker with a typed error event, unless
    ``must_decode`` (400 ``not_audio`` at once)."""
    # PyAV (FFmpeg) is loaded with the first upload, not with the edge: most edges serve no jobs.
    from jobs.decode import DecodeError, probe

    try:
        found = await anyio.to_thread.run_sync(probe, path)
    except DecodeError as exc:
        if must_decode:
            raise problem(status.HTTP_400_BAD_REQUEST, "not_audio", f"the file is not audio FFmpeg decodes: {exc}") \
                from exc
        return None
    duration = found.declared_duration_s  # FFmpeg's own figure can be a (wild) bitrate estimate
    if duration is not None and duration > limit_s:
        raise problem(status.HTTP_413_CONTENT_TOO_LARGE, "recording_too_long",
                      f"the recording lasts {duration:.0f} s; the limit is {limit_s:.0f} s{advice}")
    return duration if duration is not None else found.duration_s


async def submit_job(jobs: JobService, principal: Principal | None, upload: UploadFile, options: JobOptions,
                     max_duration_s: float | None = None, advice: str = "", must_decode: bool = False) -> JobInfo:
    """Store the upload, check its duration against ``max_duration_s`` (the job limit by
    default) and queue it; the queued job. Typed HTTPExceptions for what is refused."""
    job_id = uuid.uuid4().hex
    try:
        path, size = await store_upload(upload, jobs, job_id)
        duration = await declared_duration(path, max_duration_s or jobs.settings.max_duration_s, advice, must_decode)
    except HTTPException:
        files.remove(jobs.settings.data_dir, job_id)
        raise
    info = JobInfo(id=job_id, state=JobState.QUEUED, filename=upload.filename or "upload", size_bytes=size,
                   options=options, created_at=now(), duration_s=duration, owner=owner(principal))
    await jobs.store.create(info)
    try:
        await jobs.enqueue(job_id)
    except Exception as exc:  # noqa: BLE001 - whatever the broker raised, the job must not stay queued
        logger.exception("job %s: queueing it failed", job_id)
        await jobs.store.delete(job_id, info.owner)
        files.remove(jobs.settings.data_dir, job_id)
        raise problem(status.HTTP_503_SERVICE_UNAVAILABLE, "queue_unavailable",
                      "the job queue is unreachable; try again later") from exc
    logger.info("job %s queued: %s, %d bytes", job_id, info.filename, size)
    return info


@router.post("", status_code=status.HTTP_202_ACCEPTED, response_model=JobView)
async def create_job(request: Request, jobs: JobsDep, principal: HttpPrincipalDep) -> JobView:
    """Multipart form: ``file`` (any audio or video FFmpeg decodes), optional ``language`` (a
    Whisper code or ``auto``), ``word_timestamps`` (true/false), ``callback_url``, ``prompt``."""
    form = await read_form(request, jobs)
    upload = form.get("file")
    if not isinstance(upload, UploadFile):
        raise problem(status.HTTP_422_UNPROCESSABLE_CONTENT, "no_file", "send the recording as the form field 'file'")
    info = await submit_job(jobs, principal, upload, parse_options(form))
    return JobView(**info.model_dump(), links=links(info.id))


async def final_result(jobs: JobService, info: JobInfo) -> FinalSummary | None:
    if info.state is not JobState.COMPLETED:
        return None
    events = await jobs.store.all_events(info.id)
    final = next((e for e in reversed(events) if e.event == JobEvent.FINAL_SUMMARY), None)
    return FinalSummary.model_validate_json(final.data) if final else None


@router.get("/{job_id}", response_model=JobView)
async def get_job(job_id: str, jobs: JobsDep, principal: HttpPrincipalDep) -> JobView:
    info = await owned_job(jobs, job_id, principal)
    return JobView(**info.model_dump(), links=links(job_id), result=await final_result(jobs, info))


@router.get("", response_model=JobPage)
async def list_jobs(jobs: JobsDep, principal: HttpPrincipalDep, offset: Annotated[int, Query(ge=0)] = 0,
                    limit: Annotated[int, Query(ge=1)] = 20) -> JobPage:
    """Newest first."""
    limit = min(limit, jobs.settings.page_size_max)
    page, total = await jobs.store.page(owner(principal), offset, limit)
    return JobPage(jobs=[JobView(**job.model_dump(), links=links(job.id)) for job in page], offset=offset,
                   limit=limit, total=total)


@router.delete("/{job_id}", status_code=status.HTTP_204_NO_CONTENT)
async def delete_job(job_id: str, jobs: JobsDep, principal: HttpPrincipalDep) -> Response:
    """Cancels the job (its worker stops at its next segment) and removes its events and file."""
    await owned_job(jobs, job_id, principal)
    await jobs.store.delete(job_id, owner(principal))
    await anyio.to_thread.run_sync(files.remove, jobs.settings.data_dir, job_id)
    logger.info("job %s deleted", job_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.get("/{job_id}/transcript.{fmt}")
async def transcript(job_id: str, fmt: TranscriptFormat, jobs: JobsDep, principal: HttpPrincipalDep) -> Response:
    """The segments transcribed so far (all of them once the job completed)."""
    info = await owned_job(jobs, job_id, principal)
    segments = [SegmentEvent.model_validate_json(e.data) for e in await jobs.store.all_events(job_id)
                if e.event == JobEvent.TRANSCRIPT_SEGMENT]
    body, media_type = render(fmt, segments, info)
    return Response(body, media_type=media_type)


async def event_stream(jobs: JobService, job_id: str, after: str):
    """The job's events after ``after``, live, until its last event (or until it is deleted). Redis
    out of reach ends the stream: the client reconnects with ``Last-Event-ID``."""
    try:
        async for event in _events(jobs, job_id, after):
            yield event
    except RedisError as exc:
        logger.warning("job %s: event stream ended: Redis failed (%s)", job_id, exc)


async def _events(jobs: JobService, job_id: str, after: str):
    block_ms = None  # the first read does not wait: a finished job's stream ends at once
    while True:
        batch = await jobs.store.events(job_id, after, block_ms=block_ms)
        block_ms = SSE_BLOCK_MS
        for event in batch:
            yield ServerSentEvent(data=event.data, event=event.event, id=event.id)
            after = event.id
            if event.event in FINAL_EVENTS:
                return
        if not batch:
            info = await jobs.store.get(job_id)
            if info is None or (info.state in TERMINAL_STATES and not await jobs.store.events(job_id, after)):
                return


@router.get("/{job_id}/events")
async def job_events(job_id: str, jobs: JobsDep, principal: HttpPrincipalDep,
                     last_event_id: Annotated[str | None, Header()] = None) -> EventSourceResponse:
    """Server-Sent Events: ``progress``, ``transcript_segment``, then ``final_summary`` or ``error``.
    With ``Last-Event-ID`` (a reconnecting EventSource sends it) only the events after that one."""
    await owned_job(jobs, job_id, principal)
    if last_event_id is not None and not EVENT_ID.match(last_event_id):
        raise problem(status.HTTP_400_BAD_REQUEST, "bad_last_event_id",
                      "Last-Event-ID must be an event id this stream sent (such as 1700000000000-0)")
    return EventSourceResponse(event_stream(jobs, job_id, last_event_id or "0"), ping=SSE_PING_S)
