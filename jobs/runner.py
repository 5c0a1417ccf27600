"""A worker's handling of one job: its lease, its run, its final event, state and callback."""

from __future__ import annotations

import asyncio
import logging
import threading
from dataclasses import dataclass, field

import httpx

from edge.settings import EdgeSettings
from edge.triton import ModerationPool
from jobs import files
from jobs.decode import DecodeError
from jobs.llm import summarize
from jobs.metrics import JobMetrics
from jobs.models import TERMINAL_STATES, FinalSummary, JobError, JobErrorCode, JobErrorEvent, JobInfo, JobState
from jobs.pipeline import Handover, JobFailed, JobRun, Resume, started
from jobs.report import build_report, llm_prompt
from jobs.settings import JobSettings
from jobs.store import JobStore, LeaseLost, now, with_state

logger = logging.getLogger(__name__)

LEASE_RETRY_MARGIN_S = 1.0
"""A job whose lease another worker holds is tried again this long after the lease would expire."""
LEASE_RENEWALS_PER_LEASE = 3
"""The lease is renewed this many times per lease period, so one late renewal does not lose it."""


@dataclass
class Worker:
    """What a worker process shares between its jobs."""

    id: str
    settings: JobSettings
    edge: EdgeSettings
    store: JobStore
    pool: ModerationPool
    stopping: threading.Event = field(default_factory=threading.Event)
    """Set when the worker process shuts down: running jobs are handed over (docs/JOBS.md)."""
    metrics: JobMetrics = field(default_factory=JobMetrics)

    async def handle(self, job_id: str) -> float | None:
        """Runs the job if it is due; None when nothing is left to do, else the seconds after which
        to try again (another worker holds its lease: it may die; or this worker is stopping and
        hands the job over: 0)."""
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
            await self._run_leased(info)
        except Handover as exc:
            logger.info("%s; handing it over", exc)
            self.metrics.handovers.inc()
            return 0.0
        finally:
            self.metrics.running.dec()
            await self.store.release_lease(job_id, self.id)
        return None

    async def _run_leased(self, info: JobInfo) -> None:
        work = asyncio.create_task(self._execute(info))
        renewer = asyncio.create_task(self._renew(info.id))
        try:
            await asyncio.wait({work, renewer}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (work, renewer):
                task.cancel()
        if work.done() and not work.cancelled() and isinstance(work.exception(), LeaseLost):
            logger.info("job %s: %s; stopped", info.id, work.exception())
        elif work.done() and not work.cancelled() and work.exception() is not None:
            raise work.exception()
        elif not work.done():
            logger.warning("job %s: lost its lease; stopped", info.id)

    async def _renew(self, job_id: str) -> None:
        """Returns when the lease is lost (another worker took it, or the job ended or was deleted)."""
        while True:
            await asyncio.sleep(self.settings.lease_s / LEASE_RENEWALS_PER_LEASE)  # the renewal period
            try:
                if not await self.store.take_lease(job_id, self.id, self.settings.lease_s):
                    return
            except LeaseLost:
                return

    async def _execute(self, info: JobInfo) -> None:
        resume = Resume.from_events(await self.store.all_events(info.id))
        info = started(info)
        await self.store.set_state(info, self.id)
        if resume.finished:  # an earlier run wrote the last event but not the state
            await self._settle(info, resume)
            return
        path = files.find_upload(self.settings.data_dir, info.id)
        if path is None:
            await self.fail(info, JobErrorCode.INTERNAL, "the uploaded file is missing from the data directory")
            return
        run = JobRun(info, path, self.id, self.store, self.pool, self.settings, self.edge, resume, self.stopping,
                     self.metrics)
        try:
            await run.progress_event(resume.segments[-1].end_s if resume.segments else 0.0)
            segments = await run.run()
        except (DecodeError, JobFailed) as exc:
            await self.fail(run.info, exc.code, str(exc))
            return
        except (LeaseLost, Handover):
            raise
        except Exception:  # noqa: BLE001 - the job fails with a typed error; the worker serves the next
            logger.exception("job %s failed", info.id)
            await self.fail(run.info, JobErrorCode.INTERNAL, "the job failed (server error)")
            return
        await self._complete(run, segments)

    async def _complete(self, run: JobRun, segments) -> None:
        duration = round(run.position_s, 3)
        info = run.info.model_copy(update={"duration_s": duration, "position_s": duration, "progress": 1.0,
                                           "language": run.language})
        run.info = info
        await run.progress_event(duration)
        processing_s = round(now() - (info.started_at or now()), 3)
        report = build_report(info, segments, duration, processing_s, run.language)
        report.llm_summary = await summarize(self.settings, llm_prompt(report, segments))
        await self.store.finish(with_state(info, JobState.COMPLETED, finished_at=now()), self.id, "final_summary",
                                report)
        self._count_completed(report)
        logger.info("job %s completed: %d segments, %d harmful, %.1f s of audio in %.1f s", info.id,
                    report.segments, report.harmful_segments, duration, processing_s)
        await self._callback(info, report)

    def _count_completed(self, report: FinalSummary) -> None:
        self.metrics.finished.labels("completed", "").inc()
        self.metrics.audio_seconds.inc(report.duration_s)
        self.metrics.processing.observe(report.processing_s)
        if report.real_time_factor is not None:
            self.metrics.real_time_factor.observe(report.real_time_factor)

    async def fail(self, info: JobInfo, code: JobErrorCode, message: str) -> None:
        logger.warning("job %s failed: %s (%s)", info.id, message, code.value)
        event = JobErrorEvent(code=code, message=message)
        failed = with_state(info, JobState.FAILED, finished_at=now(), error=JobError(code=code, message=message))
        await self.store.finish(failed, self.id, "error", event)
        self.metrics.finished.labels("failed", code.value).inc()
        await self._callback(info, event)

    async def _settle(self, info: JobInfo, resume: Resume) -> None:
        events = await self.store.all_events(info.id)
        last = events[-1]
        if last.event == "error":
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
        except httpx.HTTPError as exc:
            logger.warning("job %s: callback to %s failed: %s", info.id, url, exc)
