"""A job's run without Redis or Triton: which calls the pipeline makes (fake pool, in-memory store)."""

from __future__ import annotations

import asyncio

import pytest

from jobs.models import JobEvent, JobInfo, JobOptions, JobState
from jobs.pipeline import JobRun, Resume
from jobs.settings import JobSettings
from moderation.triton import Priority
from moderation.verdict import ModelFacts
from scripts.speech import DIALOGUE_WAV
from tests.unit.fakes import FakePool


class MemoryStore:
    """The part of JobStore a run writes to: its events, in order."""

    def __init__(self) -> None:
        self.events: list[tuple[JobEvent, object]] = []

    async def append(self, job_id: str, worker: str, event: JobEvent, payload, info=None) -> str:
        return await self.append_many(job_id, worker, [(event, payload)], info)

    async def append_many(self, job_id: str, worker: str, events: list, info=None) -> str:
        self.events += events
        return f"{len(self.events)}-0"


def run_job(pool: FakePool, word_timestamps: bool = False, span_word_times: bool = True) -> MemoryStore:
    info = JobInfo(id="job", state=JobState.RUNNING, filename=DIALOGUE_WAV.name, size_bytes=1,
                   options=JobOptions(language="en", word_timestamps=word_timestamps), created_at=0.0)
    store = MemoryStore()
    settings = JobSettings(span_word_times=span_word_times)
    asyncio.run(JobRun(info, DIALOGUE_WAV, "worker", store, pool, settings, Resume()).run())
    return store


@pytest.mark.parametrize(("signals", "word_timestamps", "span_word_times", "aligned"), [
    ((), False, True, False),  # no lexicon: nothing needs word times
    (("classifier",), False, True, False),
    (("lexicon",), False, True, True),  # lexicon spans cover just their words
    (("lexicon",), False, False, False),  # ... unless spans may cover their segment
    ((), True, True, True),  # the job asked for its words
])
def test_a_job_asks_for_word_times_only_when_a_lexicon_or_the_caller_needs_them(signals, word_timestamps,
                                                                                 span_word_times, aligned):
    pool = FakePool(ModelFacts("ko", signals))
    store = run_job(pool, word_timestamps, span_word_times)
    segments = [payload for event, payload in store.events if event is JobEvent.TRANSCRIPT_SEGMENT]
    assert len(pool.calls) >= 2 and len(segments) == len(pool.calls)
    assert {call.word_timestamps for call in pool.calls} == {aligned}
    assert {call.priority for call in pool.calls} == {Priority.BULK}
