"""How a worker process handles one job: its lease, its run, its final event, state and callback."""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from dataclasses import dataclass, field

import httpx
from redis.exceptions import RedisError

from jobs import files
from jobs.decode import DecodeError
from jobs.llm import summarize
from jobs.metrics import JobMetrics
from jobs.models import (
    TERMINAL_STATES,
    FinalSummary,
    JobError,
    JobErrorCode,
    JobErrorEvent,
    JobEvent,
    JobInfo,
    JobState,
)
from jobs.pipeline import Handover, JobFailed, JobRun, Resume, started
from jobs.report import build_report, llm_prompt
from jobs.settings import JobSettings
from jobs.store import JobStore, LeaseLost, now, with_state
from moderation.incidents import Incidents
from moderation.triton import ModerationPool

logger = logging.getLogger(__name__)

LastEvent = tuple[JobInfo, "FinalSummary | JobErrorEvent"]
"""A finished job and its last event: what its callback URL receives."""
LEASE_RETRY_MARGIN_S = 1.0
"""A job whose lease another worker holds is tried again this long after the lease would expire."""
LEASE_RENEWALS_PER_LEASE = 3
"""The lease is renewed this many times per lease period, so one late renewal does not lose it."""


@dataclass
class JobHandler:
    """Runs one job for a worker process (``jobs/worker.py``), with what the process shares
    between its jobs: its settings, store, Triton pool, stop signal and metrics."""

    id: str
    """The worker's id (host, process and a random part): the holder of the jobs' leases."""
    settings: JobSettings
    store: JobStore
    pool: ModerationPool
    stopping: threading.Event = field(default_factory=threading.Event)
    """Set when the worker process shuts down: running jobs are handed over (docs/JOBS.md)."""
    metrics: JobMetrics = field(default_factory=JobMetrics)

    async def handle(self, job_id: str) -> float | None:
        """Runs the job if it is due; None when nothing is left to do, else the seconds after which
        to try again: another worker holds its lease (it may die), this worker is stopping and
        hands the job over (0), or this run lost the lease without the job ending (Redis failed)."""
        info = await self.store.get(job_id)
        if info is None or info.state in TERMINAL_STATES:
            return None
        try:
            if not await self.store.take_lease(job_id, self.id, self.settings.lease_s):
                _holder, ttl_s = await self.store.lease_holder(job_id)
                return ttl_s + LEASE_RETRY_MARGIN_S
        except LeaseLost:
            return None
        self.metrics.running.inc()
        try:
            last_event = await self._run_leased(info)
        except Handover as exc:
            logger.info("%s; handing it over", exc)
            self.metrics.handovers.inc()
            return 0.0
        finally:
            self.metrics.running.dec()
            await self.store.release_lease(job_id, self.id)
        if last_event is not None:
            await self._callback(*last_event)
        return await self._unfinished_retry(job_id)

    async def _unfinished_retry(self, job_id: str) -> float | None:
        """A job this run left unfinished (its lease was lost) is looked at again later."""
        info = await self.store.get(job_id)
        if info is None or info.state in TERMINAL_STATES:
            return None
        logger.warning("job %s: left unfinished; trying it again in %.0f s", job_id, self.settings.lease_s)
        return self.settings.lease_s + LEASE_RETRY_MARGIN_S

    async def _run_leased(self, info: JobInfo) -> LastEvent | None:
        """The job's run, with its lease renewed meanwhile. A lost lease stops the run at its next
        segment; nothing is cancelled mid-call (tritonserver 2.51 can crash on it)."""
        lost = threading.Event()
        renewer = asyncio.create_task(self._renew(info.id, lost))
        try:
            return await self._execute(info, lost)
        except LeaseLost as exc:
            logger.info("job %s: %s; stopped", info.id, exc)
            return None
        finally:
            renewer.cancel()  # only a Redis call or a sleep to interrupt

    async def _renew(self, job_id: str, lost: threading.Event) -> None:
        """Sets ``lost`` when the lease is lost: another worker took it, the job ended or was
        deleted, or Redis could not renew it before it ran out."""
        expires = time.monotonic() + self.settings.lease_s
        try:
            while True:
                await asyncio.sleep(self.settings.lease_s / LEASE_RENEWALS_PER_LEASE)  # the renewal period
                try:
                    if not await self.store.take_lease(job_id, self.id, self.settings.lease_s):
                        return
                    expires = time.monotonic() + self.settings.lease_s
                except RedisError as exc:
                    if time.monotonic() >= expires:
                        return
                    logger.warning("job %s: renewing the lease failed (%s); trying again", job_id, exc)
        except LeaseLost:
            return
        finally:
            lost.set()

    async def _execute(self, info: JobInfo, lost: threading.Event) -> LastEvent | None:
        resume = Resume.from_events(await self.store.all_events(info.id))
        info = started(info)
        await self.store.set_state(info, self.id)
        if resume.finished:  # an earlier run wrote the last event but not the state
            await self._settle(info, resume)
            return None
        path = files.find_upload(self.settings.data_dir, info.id)
        if path is None:
            return await self.fail(info, JobErrorCode.INTERNAL, "the uploaded file is missing from the data directory")
        incidents = Incidents.from_settings(self.settings, self.metrics.incidents.labels("dropped").inc,
                                            self.metrics.incidents.labels("written").inc)
        run = JobRun(info, path, self.id, self.store, self.pool, self.settings, resume, self.stopping, self.metrics,
                     lost, incidents=incidents)
        if incidents is not None:
            await incidents.start()
        try:
            await run.progress_event(resume.segments[-1].end_s if resume.segments else 0.0)
            segments = await run.run()
        except (DecodeError, JobFailed) as exc:
            return await self.fail(run.info, exc.code, str(exc))
        except (LeaseLost, Handover, RedisError):
            raise
        except Exception:  # noqa: BLE001 - the job fails with a typed error; the worker serves the next
            logger.exception("job %s failed", info.id)
            return await self.fail(run.info, JobErrorCode.INTERNAL, "the job failed (server error)")
        finally:
            if incidents is not None:
                await incidents.close()  # writes what is queued (a bounded wait)
        return await self._complete(run, segments)

    async def _complete(self, run: JobRun, segments) -> LastEvent:
        duration = round(run.position_s, 3)
        info = run.info.model_copy(update={"duration_s": duration, "position_s": duration, "progress": 1.0,
                                           "language": run.language})
        run.info = info
        await run.progress_event(duration)
        processing_s = round(now() - (info.started_at or now()), 3)
        report = build_report(info, segments, duration, processing_s, run.language)
        report.llm_summary = await summarize(self.settings, llm_prompt(report, segments))
        await self.store.finish(with_state(info, JobState.COMPLETED, finished_at=now()), self.id,
                                JobEvent.FINAL_SUMMARY, report)
        self._count_completed(report)
        logger.info("job %s completed: %d segments, %d harmful, %.1f s of audio in %.1f s", info.id,
                    report.segments, report.harmful_segments, duration, processing_s)
        return info, report

    def _count_completed(self, report: FinalSummary) -> None:
        self.metrics.finished.labels("completed", "").inc()
        self.metrics.audio_seconds.inc(report.duration_s)
        self.metrics.processing.observe(report.processing_s)
        if report.real_time_factor is not None:
            self.metrics.real_time_factor.observe(report.real_time_factor)

    async def fail(self, info: JobInfo, code: JobErrorCode, message: str) -> LastEvent:
        logger.warning("job %s failed: %s (%s)", info.id, message, code.value)
        event = JobErrorEvent(code=code, message=message)
        failed = with_state(info, JobState.FAILED, finished_at=now(), error=JobError(code=code, message=message))
        await self.store.finish(failed, self.id, JobEvent.ERROR, event)
        self.metrics.finished.labels("failed", code.value).inc()
        return info, event

    async def _settle(self, info: JobInfo, resume: Resume) -> None:
        events = await self.store.all_events(info.id)
        last = events[-1]
        if last.event == JobEvent.ERROR:
            error = JobErrorEvent.model_validate_json(last.data)
            info = with_state(info, JobState.FAILED, error=JobError(code=error.code, message=error.message))
        else:
            info = with_state(info, JobState.COMPLETED, progress=1.0)
        await self.store.set_state(info.model_copy(update={"finished_at": now()}), self.id)

    async def _callback(self, info: JobInfo, payload: FinalSummary | JobErrorEvent) -> None:
        """POSTs the job's last event to its callback URL; a failure is logged, never retried."""
        url = info.options.callback_url
        if not url:
            return
        body = {"job_id": info.id, "event": payload.type, "data": payload.model_dump(mode="json")}
        try:
            async with httpx.AsyncClient(timeout=self.settings.callback_timeout_s) as client:
                response = await client.post(url, json=body)
            response.raise_for_status()
        except (httpx.HTTPError, httpx.InvalidURL) as exc:
            logger.warning("job %s: callback to %s failed: %s", info.id, url, exc)
