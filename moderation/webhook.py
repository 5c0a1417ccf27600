"""The incident webhook: a signed JSON POST for each incident at or above a severity, retried
with backoff until the receiver answers 2xx (docs/INCIDENTS.md).

Delivery is an outbox in PostgreSQL: the writer marks an incident ``pending`` when it inserts it
(edge or worker alike), and the edge's ``WebhookSender`` claims due ones with ``FOR UPDATE SKIP
LOCKED`` under a lease, so several edges share the work, none is sent twice at once, and an edge
that dies or restarts loses nothing. Delivery is at least once: the ``webhook-id`` header (the
incident's id) lets a receiver drop repeats. Bodies are signed as Standard Webhooks specifies
(``webhook-id``, ``webhook-timestamp``, ``webhook-signature``: HMAC-SHA256), so receivers verify
them with that scheme's libraries.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Callable
from datetime import UTC, datetime

import httpx
from standardwebhooks import Webhook

from moderation.incidents import Incident, IncidentStore

logger = logging.getLogger(__name__)

EVENT_TYPE = "incident.created"
DELIVERY_TIMEOUT_S = 10.0
"""How long one POST may take before it counts as failed."""
LEASE_S = 60.0
"""A claimed delivery falls due again after this, should its edge die before recording the outcome."""
CLAIM_BATCH = 16
"""Deliveries claimed per round."""
POLL_S = 2.0
"""How often the sender looks for due deliveries besides being woken by this process's writer
(a worker's incidents, retries, other edges' leftovers)."""
BACKOFF_S, BACKOFF_MAX_S = 1.0, 300.0
"""Wait after a failed delivery, doubling per attempt up to the maximum."""


def retry_delay(attempts: int) -> float:
    """The wait after the ``attempts``-th failed delivery (1-based)."""
    return min(BACKOFF_MAX_S, BACKOFF_S * 2 ** (attempts - 1))


def payload(incident: Incident, at: datetime) -> bytes:
    """The body: ``{"type": "incident.created", "timestamp", "data": <the incident>}``."""
    body = {"type": EVENT_TYPE, "timestamp": at.isoformat(), "data": incident.model_dump(mode="json")}
    return json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode()


def signed_headers(signer: Webhook, message_id: str, at: datetime, body: bytes) -> dict[str, str]:
    return {"webhook-id": message_id, "webhook-timestamp": str(int(at.timestamp())),
            "webhook-signature": signer.sign(message_id, at, body), "content-type": "application/json"}


class WebhookSender:
    """The edge's delivery loop. ``on_outcome`` counts each attempt: ``sent``, ``retry`` or ``failed``."""

    def __init__(self, store: IncidentStore, url: str, secret: str, max_attempts: int,
                 on_outcome: Callable[[str], None] | None = None, transport: httpx.AsyncBaseTransport | None = None):
        self.store, self.url, self.max_attempts = store, url, max_attempts
        self.signer = Webhook(secret)
        self.on_outcome = on_outcome
        self.http = httpx.AsyncClient(timeout=DELIVERY_TIMEOUT_S, transport=transport, follow_redirects=False)
        self.wake = asyncio.Event()
        """Set by the writer when it marked an incident: deliver now rather than at the next poll."""
        self._task: asyncio.Task | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="incident-webhook")

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        await self.http.aclose()

    async def deliver_due(self) -> int:
        """One round: claims due deliveries and attempts each; how many were claimed."""
        try:
            due = await self.store.claim_webhooks(CLAIM_BATCH, LEASE_S)
        except Exception as exc:  # noqa: BLE001 - PostgreSQL away: the next round tries again
            logger.warning("claiming incident webhooks failed: %s", exc)
            return 0
        for incident, attempts in due:
            await self._attempt(incident, attempts + 1)
        return len(due)

    async def _run(self) -> None:
        while True:
            self.wake.clear()
            if await self.deliver_due() < CLAIM_BATCH:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.wake.wait(), POLL_S)

    async def _attempt(self, incident: Incident, attempt: int) -> None:
        at = datetime.now(UTC)
        body = payload(incident, at)
        try:
            response = await self.http.post(self.url, content=body,
                                            headers=signed_headers(self.signer, incident.id, at, body))
            failure = None if response.is_success else f"HTTP {response.status_code}"
        except httpx.HTTPError as exc:
            failure = f"{type(exc).__name__}: {exc}"
        give_up = failure is not None and attempt >= self.max_attempts
        outcome = "sent" if failure is None else "failed" if give_up else "retry"
        try:
            if failure is None:
                await self.store.webhook_sent(incident.id)
            else:
                await self.store.webhook_missed(incident.id, retry_delay(attempt), give_up)
        except Exception as exc:  # noqa: BLE001 - the lease runs out and the delivery falls due again
            logger.warning("recording webhook outcome of incident %s failed: %s", incident.id, exc)
        if failure is not None:
            logger.warning("incident %s webhook attempt %d failed (%s)%s", incident.id, attempt, failure,
                           ": giving up" if give_up else "")
        if self.on_outcome:
            self.on_outcome(outcome)
