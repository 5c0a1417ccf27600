"""The incident webhook without PostgreSQL or a network: signed bodies that Standard Webhooks'
verifier accepts, retries with backoff on failures, giving up after the last attempt, and the
settings that need a secret with a URL."""

from __future__ import annotations

import asyncio
import base64
import json
from datetime import UTC, datetime

import httpx
import pytest
from pydantic import ValidationError
from standardwebhooks import Webhook

from edge.settings import EdgeSettings
from moderation.incidents import Incident
from moderation.webhook import BACKOFF_MAX_S, EVENT_TYPE, WebhookSender, retry_delay

SECRET = "whsec_" + base64.b64encode(b"k" * 32).decode()


def incident(number: int = 1) -> Incident:
    return Incident(id=f"00000000-0000-0000-0000-00000000000{number}", created_at=datetime.now(UTC), source="live",
                    session_id="s", job_id=None, seq=0, start_s=1.0, end_s=2.0, text="you shit", spans=[],
                    categories=["profanity"], severity=0.9, reasons=["lexicon"], speaker_id="p1", channel_id=None,
                    metadata={}, clip_start_s=None, clip_end_s=None, status="open", category=None, decided_by=None,
                    decided_at=None, note=None, webhook_state="pending")


class OutboxStore:
    """Hands out its due incidents once each and records what the sender says of them."""

    def __init__(self, due: list[tuple[Incident, int]]):
        self.due, self.sent, self.missed = due, [], []

    async def claim_webhooks(self, limit: int, lease_s: float):
        claimed, self.due = self.due[:limit], self.due[limit:]
        return claimed

    async def webhook_sent(self, incident_id: str) -> None:
        self.sent.append(incident_id)

    async def webhook_missed(self, incident_id: str, retry_in_s: float, give_up: bool) -> None:
        self.missed.append((incident_id, retry_in_s, give_up))


def deliver(store: OutboxStore, handler, max_attempts: int = 3) -> list[str]:
    outcomes: list[str] = []

    async def scenario():
        sender = WebhookSender(store, "https://hooks.example/incidents", SECRET, max_attempts, outcomes.append,
                               transport=httpx.MockTransport(handler))
        try:
            await sender.deliver_due()
        finally:
            await sender.close()

    asyncio.run(scenario())
    return outcomes


def test_a_delivery_is_signed_so_that_the_standard_verifier_accepts_it():
    received: list[httpx.Request] = []

    def receiver(request: httpx.Request) -> httpx.Response:
        received.append(request)
        return httpx.Response(204)

    store = OutboxStore([(incident(), 0)])
    assert deliver(store, receiver) == ["sent"] and store.sent == [incident().id]
    (request,) = received
    body = Webhook(SECRET).verify(request.content, dict(request.headers))
    assert body["type"] == EVENT_TYPE and body["data"]["id"] == incident().id
    assert request.headers["webhook-id"] == incident().id  # the receiver's key to drop repeats
    tampered = json.dumps({**body, "data": {**body["data"], "severity": 0.1}}).encode()
    with pytest.raises(Exception, match="signature"):
        Webhook(SECRET).verify(tampered, dict(request.headers))


def test_failed_deliveries_are_retried_later_and_given_up_after_the_last_attempt():
    def down(request: httpx.Request) -> httpx.Response:
        return httpx.Response(503)

    def unreachable(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused", request=request)

    store = OutboxStore([(incident(1), 0), (incident(2), 2)])  # the second has failed twice already
    assert deliver(store, down, max_attempts=3) == ["retry", "failed"]
    assert store.missed == [(incident(1).id, retry_delay(1), False), (incident(2).id, retry_delay(3), True)]
    store = OutboxStore([(incident(1), 0)])
    assert deliver(store, unreachable) == ["retry"] and not store.sent


def test_the_wait_between_attempts_doubles_up_to_its_maximum():
    assert [retry_delay(n) for n in (1, 2, 3)] == [1.0, 2.0, 4.0]
    assert retry_delay(30) == BACKOFF_MAX_S


@pytest.mark.parametrize(("fields", "message"), [
    ({"incident_webhook_url": "https://hooks.example/incidents"}, "needs EDGE_INCIDENT_WEBHOOK_SECRET"),
    ({"incident_webhook_url": "ftp://hooks.example/", "incident_webhook_secret": SECRET}, "http"),
    ({"incident_webhook_url": "https://h.example/", "incident_webhook_secret": "whsec_not base64!"}, "base64"),
    ({"incident_webhook_url": "https://h.example/", "incident_webhook_secret": "whsec_c2hvcnQ="}, "24 bytes"),
])
def test_a_bad_webhook_setting_is_refused(fields, message):
    with pytest.raises(ValidationError, match=message):
        EdgeSettings(**fields)
    assert EdgeSettings(incident_webhook_url="https://h.example/", incident_webhook_secret=SECRET).incident_webhook_url
