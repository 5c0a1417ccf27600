"""Incidents for moderators: each harmful segment kept with its evidence clip, triaged by severity
and decided by a person (docs/INCIDENTS.md). The edge (live sessions) and the batch workers
(recordings) both write them, through an ``IncidentWriter``: a bounded queue and a background
task, so a segment event never waits for PostgreSQL and an outage of it loses nothing that fits
the queue.

PostgreSQL holds the incidents (psycopg 3, plain SQL migrations in ``moderation/migrations``,
applied in order at start under an advisory lock); clips are Ogg Opus files under
``ModerationSettings.clips_dir``.
"""

from __future__ import annotations

import asyncio
import csv
import io
import json
import logging
import uuid
from dataclasses import dataclass, field
from datetime import date, datetime
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import numpy as np
from pydantic import BaseModel

from moderation.encode import encode_mono
from moderation.events import SAMPLE_RATE, HarmfulSpan, SegmentEvent

if TYPE_CHECKING:
    from moderation.webhook import WebhookSender

logger = logging.getLogger(__name__)

MIGRATIONS_DIR = Path(__file__).with_name("migrations")
MIGRATION_LOCK = 0x51DE_0001
"""pg_advisory_xact_lock key: one migrator at a time (the edge and the workers start together)."""
CLIP_BIT_RATE = 24_000
"""Opus bits per second of an evidence clip: clear speech at about 3 kB a second."""
CONNECT_TIMEOUT_S = 5.0
"""How long a store call waits for a connection before it fails (PostgreSQL down or saturated)."""
EXPIRY_INTERVAL_S = 3600.0
"""How often the edge erases incidents past their retention."""
WRITE_BACKOFF_S, WRITE_BACKOFF_MAX_S = 0.5, 10.0
"""Wait before writing an incident again while PostgreSQL fails, doubling up to the maximum."""

Source = Literal["live", "job"]


class IncidentStatus(StrEnum):
    OPEN = "open"
    CONFIRMED = "confirmed"
    DISMISSED = "dismissed"


class Incident(BaseModel):
    """One harmful segment as moderators see it (``GET /v1/incidents/{id}``)."""

    id: str
    created_at: datetime
    source: Source
    session_id: str | None
    job_id: str | None
    seq: int
    start_s: float
    end_s: float
    """Where the segment lies in its stream or recording, in seconds."""
    text: str
    spans: list[HarmfulSpan]
    categories: list[str]
    severity: float
    reasons: list[str]
    speaker_id: str | None
    channel_id: str | None
    metadata: dict
    clip_start_s: float | None
    clip_end_s: float | None
    """What the clip covers, in the same seconds; null when it has none."""
    status: IncidentStatus
    category: str | None
    """The moderator's corrected category, if they gave one."""
    decided_by: str | None
    decided_at: datetime | None
    note: str | None
    webhook_state: Literal["pending", "sent", "failed"] | None = None
    """Its webhook delivery (docs/INCIDENTS.md); null when none is due (below the severity, or no webhook)."""


@dataclass
class IncidentDraft:
    """What a live session or a job hands to the writer: the segment's event, who and where, and
    the audio around it (16 kHz mono float32, starting at ``audio_start_s``)."""

    event: SegmentEvent
    source: Source
    audio: np.ndarray
    audio_start_s: float
    session_id: str | None = None
    job_id: str | None = None
    speaker_id: str | None = None
    channel_id: str | None = None
    metadata: dict = field(default_factory=dict)
    id: str = field(default_factory=lambda: str(uuid.uuid4()))


def encode_clip(audio: np.ndarray, path: Path) -> Path:
    """16 kHz mono float32 samples as Ogg Opus, written to ``path`` atomically."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = encode_mono(audio, path.with_suffix(".partial"), "ogg", "libopus", CLIP_BIT_RATE)
    return partial.replace(path)


def clip_path(clips_dir: Path, incident_id: str) -> Path:
    return clips_dir / f"{incident_id}.ogg"


@dataclass(frozen=True)
class IncidentFilter:
    """``GET /v1/incidents``'s query, validated by the router."""

    status: IncidentStatus | None = None
    min_severity: float | None = None
    category: str | None = None
    speaker_id: str | None = None
    channel_id: str | None = None
    since: datetime | None = None
    until: datetime | None = None
    sort: Literal["severity", "time"] = "severity"
    limit: int = 50
    offset: int = 0

    def where(self) -> tuple[str, list]:
        clauses, params = [], []
        for column, value in (("status", self.status), ("speaker_id", self.speaker_id),
                              ("channel_id", self.channel_id)):
            if value is not None:
                clauses.append(f"{column} = %s")
                params.append(str(value))
        if self.min_severity is not None:
            clauses.append("severity >= %s")
            params.append(self.min_severity)
        if self.category is not None:
            clauses.append("(%s = ANY(categories) OR category = %s)")
            params += [self.category, self.category]
        if self.since is not None:
            clauses.append("created_at >= %s")
            params.append(self.since)
        if self.until is not None:
            clauses.append("created_at < %s")
            params.append(self.until)
        return (" WHERE " + " AND ".join(clauses)) if clauses else "", params

    def order(self) -> str:
        return " ORDER BY severity DESC, created_at DESC" if self.sort == "severity" else " ORDER BY created_at DESC"


SPEAKER_HISTORY_DAYS = 30
"""Days of a speaker's history ``GET /v1/speakers/{id}`` counts day by day."""


class SpeakerDay(BaseModel):
    day: date
    incidents: int
    confirmed: int


class SpeakerHistory(BaseModel):
    """A speaker's incidents over time (``GET /v1/speakers/{id}``): repeat offenders stand out."""

    speaker_id: str
    incidents: int
    open: int
    confirmed: int
    """Confirmed offences."""
    dismissed: int
    first_at: datetime
    last_at: datetime
    by_day: list[SpeakerDay] = []
    """Incidents and confirmed offences per day of the last SPEAKER_HISTORY_DAYS."""


def remove_clips(clips_dir: Path, incident_ids: list[str]) -> None:
    for incident_id in incident_ids:
        clip_path(clips_dir, incident_id).unlink(missing_ok=True)


class DecisionConflict(Exception):
    """The incident was decided already and the new decision does not say it overrides."""


COLUMNS = ("id", "created_at", "source", "session_id", "job_id", "seq", "start_s", "end_s", "text", "spans",
           "categories", "severity", "reasons", "speaker_id", "channel_id", "metadata", "clip_start_s", "clip_end_s",
           "status", "category", "decided_by", "decided_at", "note", "webhook_state")
INSERTED = 18
"""COLUMNS[:INSERTED] are the ones ``add`` writes (``created_at`` as now()); the rest start empty."""


def _incident(row: tuple) -> Incident:
    values = dict(zip(COLUMNS, row, strict=True))
    values["id"] = str(values["id"])
    return Incident.model_validate(values)


class IncidentStore:
    """Incidents in PostgreSQL through a psycopg connection pool."""

    def __init__(self, url: str, max_connections: int = 4):
        from psycopg_pool import AsyncConnectionPool

        self.url = url
        self.pool = AsyncConnectionPool(url, min_size=0, max_size=max_connections, open=False,
                                        kwargs={"autocommit": True}, timeout=CONNECT_TIMEOUT_S,
                                        check=AsyncConnectionPool.check_connection)
        self._migrated = False

    async def open(self) -> None:
        await self.pool.open(wait=False)

    async def close(self) -> None:
        await self.pool.close()

    async def ready(self) -> None:
        """Migrates the database the first time a call reaches it (it may be down at start)."""
        if not self._migrated:
            await self.migrate()
            self._migrated = True

    async def migrate(self) -> list[str]:
        """Applies the migrations not yet applied, in order; the names it applied."""
        applied: list[str] = []
        async with self.pool.connection() as conn, conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock(%s)", (MIGRATION_LOCK,))
            await conn.execute("CREATE TABLE IF NOT EXISTS schema_migrations (name text PRIMARY KEY, "
                               "applied_at timestamptz NOT NULL DEFAULT now())")
            done = {row[0] for row in await (await conn.execute("SELECT name FROM schema_migrations")).fetchall()}
            for path in sorted(MIGRATIONS_DIR.glob("*.sql")):
                if path.stem not in done:
                    await conn.execute(path.read_text())
                    await conn.execute("INSERT INTO schema_migrations (name) VALUES (%s)", (path.stem,))
                    applied.append(path.stem)
        if applied:
            logger.info("database migrated: %s", ", ".join(applied))
        return applied

    async def add(self, draft: IncidentDraft, clip: tuple[float, float] | None, notify: bool = False) -> None:
        """Inserts the incident (once: a retried write of the same draft changes nothing);
        ``notify`` marks it for the webhook, due now."""
        await self.ready()
        e = draft.event
        async with self.pool.connection() as conn:
            await conn.execute(
                f"INSERT INTO incidents ({', '.join(COLUMNS[:INSERTED])}, webhook_state, webhook_due_at) VALUES "  # noqa: S608 - fixed column names
                "(%s, now(), %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, "
                "CASE WHEN %s THEN now() END) ON CONFLICT (id) DO NOTHING",
                (draft.id, draft.source, draft.session_id, draft.job_id, e.seq, e.start_s, e.end_s, e.text,
                 json.dumps([s.model_dump(mode="json") for s in e.harmful_spans], ensure_ascii=False),
                 sorted({s.category for s in e.harmful_spans}), e.severity, [str(r) for r in e.reasons],
                 draft.speaker_id, draft.channel_id, json.dumps(draft.metadata, ensure_ascii=False),
                 clip[0] if clip else None, clip[1] if clip else None, "pending" if notify else None, notify))

    async def claim_webhooks(self, limit: int, lease_s: float) -> list[tuple[Incident, int]]:
        """Up to ``limit`` incidents whose webhook is due, each with its attempts so far, leased for
        ``lease_s`` (another edge skips them meanwhile; if this one dies they fall due again)."""
        await self.ready()
        async with self.pool.connection() as conn:
            rows = await (await conn.execute(
                "UPDATE incidents SET webhook_due_at = now() + make_interval(secs => %s) WHERE id IN "
                "(SELECT id FROM incidents WHERE webhook_state = 'pending' AND webhook_due_at <= now() "
                "ORDER BY webhook_due_at LIMIT %s FOR UPDATE SKIP LOCKED) "
                f"RETURNING {', '.join(COLUMNS)}, webhook_attempts", (lease_s, limit))).fetchall()  # noqa: S608
        return [(_incident(row[:-1]), int(row[-1])) for row in rows]

    async def webhook_sent(self, incident_id: str) -> None:
        await self.ready()
        async with self.pool.connection() as conn:
            await conn.execute("UPDATE incidents SET webhook_state = 'sent', webhook_attempts = webhook_attempts + 1, "
                               "webhook_due_at = NULL WHERE id = %s", (incident_id,))

    async def webhook_missed(self, incident_id: str, retry_in_s: float, give_up: bool) -> None:
        """A failed delivery: due again in ``retry_in_s``, or ``failed`` for good when ``give_up``."""
        await self.ready()
        async with self.pool.connection() as conn:
            await conn.execute(
                "UPDATE incidents SET webhook_attempts = webhook_attempts + 1, webhook_state = CASE WHEN %s "
                "THEN 'failed' ELSE 'pending' END, webhook_due_at = CASE WHEN %s THEN NULL ELSE now() + "
                "make_interval(secs => %s) END WHERE id = %s", (give_up, give_up, retry_in_s, incident_id))

    async def get(self, incident_id: str) -> Incident | None:
        await self.ready()
        async with self.pool.connection() as conn:
            row = await (await conn.execute(f"SELECT {', '.join(COLUMNS)} FROM incidents WHERE id = %s",  # noqa: S608
                                            (incident_id,))).fetchone()
        return _incident(row) if row else None

    async def page(self, query: IncidentFilter) -> tuple[list[Incident], int]:
        await self.ready()
        where, params = query.where()
        async with self.pool.connection() as conn:
            total = (await (await conn.execute(f"SELECT count(*) FROM incidents{where}", params)).fetchone())[0]
            rows = await (await conn.execute(
                f"SELECT {', '.join(COLUMNS)} FROM incidents{where}{query.order()} LIMIT %s OFFSET %s",  # noqa: S608
                [*params, query.limit, query.offset])).fetchall()
        return [_incident(row) for row in rows], int(total)

    async def decide(self, incident_id: str, status: IncidentStatus, moderator: str, category: str | None,
                     note: str | None, override: bool) -> Incident | None:
        """Records a decision; None for an unknown incident, DecisionConflict for a decided one
        unless ``override``."""
        await self.ready()
        async with self.pool.connection() as conn, conn.transaction():
            row = await (await conn.execute("SELECT status FROM incidents WHERE id = %s FOR UPDATE",
                                            (incident_id,))).fetchone()
            if row is None:
                return None
            if row[0] != IncidentStatus.OPEN and not override:
                raise DecisionConflict(f"incident {incident_id} is {row[0]} already; send override to change it")
            await conn.execute("UPDATE incidents SET status = %s, category = %s, note = %s, decided_by = %s, "
                               "decided_at = now() WHERE id = %s",
                               (str(status), category, note, moderator, incident_id))
        return await self.get(incident_id)

    async def speaker(self, speaker_id: str, days: int = SPEAKER_HISTORY_DAYS) -> SpeakerHistory | None:
        """A speaker's counts by status and by day (the last ``days``); None for an unknown one."""
        await self.ready()
        async with self.pool.connection() as conn:
            totals = await (await conn.execute(
                "SELECT count(*), count(*) FILTER (WHERE status = 'open'), count(*) FILTER (WHERE status = "
                "'confirmed'), count(*) FILTER (WHERE status = 'dismissed'), min(created_at), max(created_at) "
                "FROM incidents WHERE speaker_id = %s", (speaker_id,))).fetchone()
            days_rows = await (await conn.execute(
                "SELECT date_trunc('day', created_at)::date, count(*), count(*) FILTER (WHERE status = 'confirmed') "
                "FROM incidents WHERE speaker_id = %s AND created_at >= now() - make_interval(days => %s) "
                "GROUP BY 1 ORDER BY 1", (speaker_id, days))).fetchall()
        if not totals[0]:
            return None
        return SpeakerHistory(speaker_id=speaker_id, incidents=totals[0], open=totals[1], confirmed=totals[2],
                              dismissed=totals[3], first_at=totals[4], last_at=totals[5],
                              by_day=[SpeakerDay(day=d, incidents=n, confirmed=c) for d, n, c in days_rows])

    async def speakers(self, sort: str, limit: int, offset: int) -> tuple[list[SpeakerHistory], int]:
        """Speakers with incidents, most confirmed offences (or incidents) first: repeat offenders."""
        await self.ready()
        order = "confirmed DESC, incidents DESC" if sort == "confirmed" else "incidents DESC, confirmed DESC"
        async with self.pool.connection() as conn:
            total = (await (await conn.execute(
                "SELECT count(DISTINCT speaker_id) FROM incidents WHERE speaker_id IS NOT NULL")).fetchone())[0]
            rows = await (await conn.execute(
                "SELECT speaker_id, count(*) AS incidents, count(*) FILTER (WHERE status = 'open'), "
                "count(*) FILTER (WHERE status = 'confirmed') AS confirmed, "
                "count(*) FILTER (WHERE status = 'dismissed'), min(created_at), max(created_at) FROM incidents "
                f"WHERE speaker_id IS NOT NULL GROUP BY speaker_id ORDER BY {order}, speaker_id "  # noqa: S608
                "LIMIT %s OFFSET %s", (limit, offset))).fetchall()
        return [SpeakerHistory(speaker_id=r[0], incidents=r[1], open=r[2], confirmed=r[3], dismissed=r[4],
                               first_at=r[5], last_at=r[6]) for r in rows], int(total)

    async def delete_speaker(self, speaker_id: str) -> list[str]:
        """Erases a speaker's incidents; the ids erased (their clips are the caller's to remove)."""
        await self.ready()
        async with self.pool.connection() as conn:
            rows = await (await conn.execute("DELETE FROM incidents WHERE speaker_id = %s RETURNING id",
                                             (speaker_id,))).fetchall()
        return [str(r[0]) for r in rows]

    async def expire(self, days: int) -> list[str]:
        """Erases incidents older than ``days``; the ids erased."""
        await self.ready()
        async with self.pool.connection() as conn:
            rows = await (await conn.execute(
                "DELETE FROM incidents WHERE created_at < now() - make_interval(days => %s) RETURNING id",
                (days,))).fetchall()
        return [str(r[0]) for r in rows]

    async def export_csv(self) -> str:
        """Decided incidents as ``text,label`` (confirmed 1, dismissed 0): what fine-tuning reads."""
        await self.ready()
        async with self.pool.connection() as conn:
            rows = await (await conn.execute("SELECT text, status FROM incidents WHERE status <> 'open' "
                                             "ORDER BY decided_at")).fetchall()
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(["text", "label"])
        for text, state in rows:
            writer.writerow([text, 1 if state == IncidentStatus.CONFIRMED else 0])
        return out.getvalue()


class Incidents:
    """A part's incidents: the store, the writer that fills it in the background, and on the edge
    (``retention_days`` and ``webhook`` given) the hourly expiry of old incidents and their clips
    and the webhook's deliveries."""

    def __init__(self, store: IncidentStore, writer: IncidentWriter, retention_days: int | None = None,
                 webhook: WebhookSender | None = None):
        self.store, self.writer, self.retention_days, self.webhook = store, writer, retention_days, webhook
        self.clips_dir = writer.clips_dir
        if webhook is not None:
            writer.on_notify = webhook.wake.set
        self._expiry: asyncio.Task | None = None

    @classmethod
    def from_settings(cls, settings, on_drop=None, on_written=None, edge: bool = False,
                      on_webhook=None) -> Incidents | None:
        """None when ``settings.database_url`` is unset (no incidents kept). ``edge``: expire old
        incidents and deliver the webhook (``on_webhook`` counts each attempt's outcome)."""
        if not settings.database_url:
            return None
        from moderation.webhook import WebhookSender  # it builds on this module

        store = IncidentStore(settings.database_url)
        url = settings.incident_webhook_url
        writer = IncidentWriter(store, settings.clips_dir, settings.incident_queue_max, on_drop, on_written,
                                settings.incident_webhook_min_severity if url else None)
        webhook = WebhookSender(store, url, settings.incident_webhook_secret.get_secret_value(),
                                settings.incident_webhook_max_attempts, on_webhook) if url and edge else None
        return cls(store, writer, settings.incident_retention_days if edge else None, webhook)

    def submit(self, draft: IncidentDraft) -> bool:
        return self.writer.submit(draft)

    async def erase_speaker(self, speaker_id: str) -> int:
        """Erases a speaker's incidents and their clips; how many."""
        erased = await self.store.delete_speaker(speaker_id)
        await asyncio.to_thread(remove_clips, self.clips_dir, erased)
        return len(erased)

    async def start(self) -> None:
        await self.store.open()
        self.writer.start()
        if self.retention_days is not None:
            self._expiry = asyncio.create_task(self._expire_loop(), name="incident-expiry")
        if self.webhook is not None:
            self.webhook.start()

    async def close(self) -> None:
        if self._expiry is not None:
            self._expiry.cancel()
            await asyncio.gather(self._expiry, return_exceptions=True)
        await self.writer.close()
        if self.webhook is not None:
            await self.webhook.close()  # what is still pending is delivered after the next start
        await self.store.close()

    async def _expire_loop(self) -> None:
        while True:
            try:
                erased = await self.store.expire(self.retention_days)
                await asyncio.to_thread(remove_clips, self.clips_dir, erased)
                if erased:
                    logger.info("expired %d incidents older than %d days", len(erased), self.retention_days)
            except Exception as exc:  # noqa: BLE001 - PostgreSQL away: the next round tries again
                logger.warning("expiring incidents failed: %s", exc)
            await asyncio.sleep(EXPIRY_INTERVAL_S)  # the expiry's period


class IncidentWriter:
    """Writes drafts in the background: clip first, then the row, tried again while PostgreSQL
    fails. ``submit`` never blocks; past ``queue_max`` waiting drafts it drops and counts.
    Incidents at or above ``notify_min_severity`` (None: no webhook) are marked for the webhook,
    and ``on_notify`` is called once such a one is written."""

    def __init__(self, store: IncidentStore, clips_dir: Path, queue_max: int, on_drop=None, on_written=None,
                 notify_min_severity: float | None = None):
        self.store, self.clips_dir = store, clips_dir
        self.queue: asyncio.Queue[IncidentDraft] = asyncio.Queue(queue_max)
        self.on_drop, self.on_written = on_drop, on_written
        self.notify_min_severity = notify_min_severity
        self.on_notify = None
        self.dropped = 0
        self._task: asyncio.Task | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="incident-writer")

    def submit(self, draft: IncidentDraft) -> bool:
        try:
            self.queue.put_nowait(draft)
        except asyncio.QueueFull:
            self.dropped += 1
            logger.warning("incident queue full (%d): dropped incident of %s segment %d", self.queue.maxsize,
                           draft.session_id or draft.job_id, draft.event.seq)
            if self.on_drop:
                self.on_drop()
            return False
        return True

    async def drain(self, timeout_s: float) -> None:
        """Waits (up to ``timeout_s``) until every submitted incident is written."""
        try:
            await asyncio.wait_for(self.queue.join(), timeout_s)
        except TimeoutError:
            logger.warning("%d incidents not written at shutdown", self.queue.qsize())

    async def close(self, timeout_s: float = 10.0) -> None:
        await self.drain(timeout_s)
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    async def _run(self) -> None:
        while True:
            draft = await self.queue.get()
            try:
                await self._write(draft)
            finally:
                self.queue.task_done()

    async def _write(self, draft: IncidentDraft) -> None:
        clip = await asyncio.to_thread(self._clip, draft)
        notify = self.notifies(draft)
        backoff = WRITE_BACKOFF_S
        while True:
            try:
                await self.store.add(draft, clip, notify)
                break
            except Exception as exc:  # noqa: BLE001 - any database failure: the incident waits
                logger.warning("writing incident %s failed (%s); again in %.1f s", draft.id, exc, backoff)
                await asyncio.sleep(backoff)  # backoff while PostgreSQL is away, not a race fix
                backoff = min(WRITE_BACKOFF_MAX_S, backoff * 2)
        if self.on_written:
            self.on_written()
        if notify and self.on_notify:
            self.on_notify()

    def notifies(self, draft: IncidentDraft) -> bool:
        """Whether the draft's incident goes to the webhook."""
        return self.notify_min_severity is not None and draft.event.severity >= self.notify_min_severity

    def _clip(self, draft: IncidentDraft) -> tuple[float, float] | None:
        if not len(draft.audio):
            return None
        try:
            encode_clip(draft.audio, clip_path(self.clips_dir, draft.id))
        except Exception:  # noqa: BLE001 - an incident without its clip beats none
            logger.exception("incident %s: encoding its clip failed", draft.id)
            return None
        start = round(draft.audio_start_s, 3)
        return start, round(start + len(draft.audio) / SAMPLE_RATE, 3)
