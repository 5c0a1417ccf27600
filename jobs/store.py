"""Job state and events in Redis.

Keys of job ``ID`` (all expire ``retention_s`` after the job ends):

- ``job:ID`` hash: ``info`` (JobInfo JSON, without the state) and ``state``;
- ``job:ID:events`` stream: one entry per event (``event`` name, ``data`` JSON); its entry ids are
  the SSE event ids, so a client that reconnects with ``Last-Event-ID`` reads on from there;
- ``job:ID:lease`` the id of the worker running it, with a TTL the worker renews.

``jobs:index`` is a sorted set of job ids by creation time, for paging. Writes a worker makes
after it lost the lease, or after the job was deleted or cancelled, are refused atomically (Lua),
so an event is never written twice and a deleted job never comes back.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass

import redis.asyncio as aioredis
from pydantic import BaseModel

from jobs.models import TERMINAL_STATES, JobEvent, JobInfo, JobState

logger = logging.getLogger(__name__)

INDEX_KEY = "jobs:index"
WORKER_READY_KEY = "jobs:worker-ready:{pid}"
"""Set by a worker process once it consumes the queue (launchers wait for it), removed at its exit."""
SOCKET_TIMEOUT_S = 30.0
"""Redis reply deadline; longer than any blocking read (the SSE endpoint blocks a few seconds)."""
MAX_CONNECTIONS = 200
"""Redis connections of one process; past it a call waits (up to SOCKET_TIMEOUT_S) for a free one.
Each open SSE stream holds one while it waits for events."""
STREAM_MAX_READ = 500
"""Events one XREAD returns at most."""

# KEYS: job hash, events stream, lease; ARGV: worker id, info JSON or "", new state or "",
# retention ms, then an event name and its data JSON for each event. Appends only while the job
# exists, is not finished and the caller holds the lease; the events, the info, and a job's final
# state and expiry are written in one step (a window's segments are all written or none).
_APPEND = """
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
local state = redis.call('HGET', KEYS[1], 'state')
if state == 'completed' or state == 'failed' or state == 'cancelled' then return 0 end
if redis.call('GET', KEYS[3]) ~= ARGV[1] then return -1 end
local id = ''
for i = 5, #ARGV, 2 do id = redis.call('XADD', KEYS[2], '*', 'event', ARGV[i], 'data', ARGV[i + 1]) end
if ARGV[2] ~= '' then redis.call('HSET', KEYS[1], 'info', ARGV[2]) end
if ARGV[3] ~= '' then
  redis.call('HSET', KEYS[1], 'state', ARGV[3])
  redis.call('PEXPIRE', KEYS[1], ARGV[4])
  redis.call('PEXPIRE', KEYS[2], ARGV[4])
  redis.call('DEL', KEYS[3])
end
return id
"""
# KEYS: job hash, lease; ARGV: worker id, lease ms. Takes or renews the lease of an unfinished job.
_LEASE = """
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
local state = redis.call('HGET', KEYS[1], 'state')
if state == 'completed' or state == 'failed' or state == 'cancelled' then return 0 end
local holder = redis.call('GET', KEYS[2])
if holder and holder ~= ARGV[1] then return -1 end
redis.call('SET', KEYS[2], ARGV[1], 'PX', ARGV[2])
return 1
"""
# KEYS: lease; ARGV: worker id. Deletes the lease only if the caller still holds it.
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""
# KEYS: job hash, lease; ARGV: worker id, new state, info JSON. Sets the state while the caller
# holds the lease (or, with worker id "", unconditionally) unless the job already ended.
_STATE = """
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
local state = redis.call('HGET', KEYS[1], 'state')
if state == 'completed' or state == 'failed' or state == 'cancelled' then return 0 end
if ARGV[1] ~= '' and redis.call('GET', KEYS[2]) ~= ARGV[1] then return -1 end
redis.call('HSET', KEYS[1], 'state', ARGV[2], 'info', ARGV[3])
return 1
"""


class LeaseLost(Exception):
    """Another worker holds the job's lease, or the job ended or was deleted meanwhile."""


def owner_index(owner: str | None) -> str:
    """One index per owner (the authenticated client; ``-`` with authentication off)."""
    return f"jobs:index:owner:{owner or '-'}"


def job_key(job_id: str) -> str:
    return f"job:{job_id}"


def events_key(job_id: str) -> str:
    return f"job:{job_id}:events"


def lease_key(job_id: str) -> str:
    return f"job:{job_id}:lease"


@dataclass(frozen=True)
class StoredEvent:
    id: str
    """The stream entry id: the SSE event id."""
    event: str
    data: str


def _info_json(info: JobInfo) -> str:
    return info.model_dump_json(exclude={"state"})


class JobStore:
    def __init__(self, client: aioredis.Redis, retention_s: int):
        self.redis = client
        self.retention_s = retention_s
        self._append = client.register_script(_APPEND)
        self._lease = client.register_script(_LEASE)
        self._state = client.register_script(_STATE)
        self._release = client.register_script(_RELEASE)

    @classmethod
    def from_url(cls, url: str, retention_s: int, max_connections: int = MAX_CONNECTIONS) -> JobStore:
        pool = aioredis.BlockingConnectionPool.from_url(
            url, decode_responses=True, socket_timeout=SOCKET_TIMEOUT_S, socket_connect_timeout=SOCKET_TIMEOUT_S,
            max_connections=max_connections, timeout=SOCKET_TIMEOUT_S)
        return cls(aioredis.Redis(connection_pool=pool), retention_s)

    async def close(self) -> None:
        await self.redis.aclose()
        await self.redis.connection_pool.disconnect()

    async def create(self, info: JobInfo) -> None:
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.hset(job_key(info.id), mapping={"state": info.state.value, "info": _info_json(info)})
            pipe.zadd(INDEX_KEY, {info.id: info.created_at})
            pipe.zadd(owner_index(info.owner), {info.id: info.created_at})
            await pipe.execute()

    async def get(self, job_id: str) -> JobInfo | None:
        raw = await self.redis.hgetall(job_key(job_id))
        if not raw:
            return None
        return JobInfo.model_validate({**json.loads(raw["info"]), "state": raw["state"]})

    async def page(self, owner: str | None, offset: int, limit: int) -> tuple[list[JobInfo], int]:
        """An owner's jobs newest first, and how many its index holds; expired ones are pruned."""
        index = owner_index(owner)
        ids = await self.redis.zrevrange(index, offset, offset + limit - 1)
        jobs = [await self.get(job_id) for job_id in ids]
        gone = [job_id for job_id, job in zip(ids, jobs, strict=True) if job is None]
        if gone:
            await self.redis.zrem(index, *gone)
        return [job for job in jobs if job is not None], await self.redis.zcard(index)

    async def all_ids(self) -> list[str]:
        return await self.redis.zrange(INDEX_KEY, 0, -1)

    async def live_ids(self) -> list[str]:
        """The ids of jobs Redis still holds; those that expired are dropped from the index."""
        ids = await self.all_ids()
        async with self.redis.pipeline(transaction=False) as pipe:
            for job_id in ids:
                pipe.exists(job_key(job_id))
            exists = await pipe.execute()
        gone = [job_id for job_id, found in zip(ids, exists, strict=True) if not found]
        if gone:
            await self.redis.zrem(INDEX_KEY, *gone)
        return [job_id for job_id, found in zip(ids, exists, strict=True) if found]

    async def take_lease(self, job_id: str, worker: str, lease_s: float) -> bool:
        """Takes or renews the lease; False when another worker holds it. LeaseLost when the job
        ended or is gone."""
        result = await self._lease(keys=[job_key(job_id), lease_key(job_id)], args=[worker, int(lease_s * 1000)])
        if result == 0:
            raise LeaseLost(f"job {job_id} ended or was deleted")
        return result == 1

    async def release_lease(self, job_id: str, worker: str) -> None:
        await self._release(keys=[lease_key(job_id)], args=[worker])

    async def lease_holder(self, job_id: str) -> tuple[str | None, float]:
        """The worker holding the lease and the seconds it still has."""
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.get(lease_key(job_id))
            pipe.pttl(lease_key(job_id))
            holder, ttl_ms = await pipe.execute()
        return holder, max(0, ttl_ms) / 1000

    async def append(self, job_id: str, worker: str, event: JobEvent, payload: BaseModel,
                     info: JobInfo | None = None) -> str:
        """Appends an event (and updates the info with it, atomically); returns its id.
        LeaseLost when this worker may no longer write to the job."""
        return await self._write(job_id, worker, [(event, payload)], info, "")

    async def append_many(self, job_id: str, worker: str, events: list[tuple[JobEvent, BaseModel]],
                          info: JobInfo | None = None) -> str:
        """Appends ``events`` in order, all or none (and updates the info with them); returns the
        last one's id ("" for no events). LeaseLost as for append."""
        return await self._write(job_id, worker, events, info, "")

    async def finish(self, info: JobInfo, worker: str, event: JobEvent, payload: BaseModel) -> str:
        """Appends the job's last event and sets its final state ``info.state`` in one step, then
        starts the retention clock. LeaseLost as for append."""
        return await self._write(info.id, worker, [(event, payload)], info, info.state.value)

    async def _write(self, job_id: str, worker: str, events: list[tuple[JobEvent, BaseModel]],
                     info: JobInfo | None, state: str) -> str:
        pairs = [item for event, payload in events for item in (event, payload.model_dump_json(exclude_none=False))]
        result = await self._append(keys=[job_key(job_id), events_key(job_id), lease_key(job_id)],
                                    args=[worker, _info_json(info) if info else "", state, self.retention_s * 1000,
                                          *pairs])
        if result in (0, -1):
            raise LeaseLost(f"job {job_id}: {'lease held by another worker' if result == -1 else 'ended or deleted'}")
        return result

    async def set_state(self, info: JobInfo, worker: str = "") -> bool:
        """Moves an unfinished job to ``info.state``; a finished one keeps its state (False). With
        ``worker``, only while it holds the lease (LeaseLost otherwise). A final state starts the
        retention clock."""
        result = await self._state(keys=[job_key(info.id), lease_key(info.id)],
                                   args=[worker, info.state.value, _info_json(info)])
        if result == -1:
            raise LeaseLost(f"job {info.id}: lease held by another worker")
        if result == 1 and info.state in TERMINAL_STATES:
            await self.expire(info.id)
        return result == 1

    async def expire(self, job_id: str) -> None:
        async with self.redis.pipeline(transaction=True) as pipe:
            for key in (job_key(job_id), events_key(job_id)):
                pipe.expire(key, self.retention_s)
            pipe.delete(lease_key(job_id))
            await pipe.execute()

    async def delete(self, job_id: str, owner: str | None = None) -> bool:
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.delete(job_key(job_id), events_key(job_id), lease_key(job_id))
            pipe.zrem(INDEX_KEY, job_id)
            pipe.zrem(owner_index(owner), job_id)
            deleted, *_ = await pipe.execute()
        return bool(deleted)

    async def events(self, job_id: str, after: str = "0", block_ms: int | None = None) -> list[StoredEvent]:
        """Events after id ``after`` (``0``: from the start), waiting up to ``block_ms`` for one."""
        reply = await self.redis.xread({events_key(job_id): after}, count=STREAM_MAX_READ, block=block_ms)
        if not reply:
            return []
        _key, entries = reply[0]
        return [StoredEvent(entry_id, fields["event"], fields["data"]) for entry_id, fields in entries]

    async def all_events(self, job_id: str) -> list[StoredEvent]:
        out: list[StoredEvent] = []
        after = "0"
        while batch := await self.events(job_id, after):
            out.extend(batch)
            after = batch[-1].id
        return out


def now() -> float:
    return round(time.time(), 3)


def with_state(info: JobInfo, state: JobState, **changes) -> JobInfo:
    return info.model_copy(update={"state": state, **changes})
