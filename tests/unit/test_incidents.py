"""Incidents without PostgreSQL: the writer's queue (bounded, never blocking, retrying a failing
store), the clip it encodes, the config fields a client may send, and who may decide."""

from __future__ import annotations

import asyncio

import av
import numpy as np
import pytest
from pydantic import ValidationError

from edge.auth import Principal
from edge.routers.incidents import may_decide
from edge.settings import EdgeSettings
from jobs.models import JobOptions
from moderation.events import SAMPLE_RATE, HarmfulSpan, SegmentEvent
from moderation.incidents import IncidentDraft, IncidentWriter, clip_path
from moderation.protocol import ClientConfig


def draft(seq: int = 0, seconds: float = 1.5, severity: float = 1.0) -> IncidentDraft:
    event = SegmentEvent(seq=seq, start_s=10.0, end_s=10.0 + seconds, text="you shit", is_harmful=True,
                         reasons=["lexicon"], confidence=1.0, harmful_prob=0.1, no_speech_prob=0.0, severity=severity,
                         harmful_spans=[HarmfulSpan(start_s=10.5, end_s=10.9, text="shit", category="profanity",
                                                    source="lexicon")])
    tone = 0.3 * np.sin(2 * np.pi * 440 * np.arange(int(seconds * SAMPLE_RATE)) / SAMPLE_RATE)
    return IncidentDraft(event, "live", tone.astype(np.float32), 10.0, session_id="s")


class FlakyStore:
    """Fails its first ``failures`` writes (PostgreSQL away), then keeps what it is given."""

    def __init__(self, failures: int = 0):
        self.failures, self.rows = failures, []

    async def add(self, incident: IncidentDraft, clip, notify: bool = False) -> None:
        if self.failures:
            self.failures -= 1
            raise OSError("connection refused")
        self.rows.append((incident.id, clip))
        self.notified = [*getattr(self, "notified", []), notify]


def test_the_writer_retries_a_failing_store_and_encodes_a_clip_that_decodes(tmp_path):
    store = FlakyStore(failures=2)

    async def scenario():
        writer = IncidentWriter(store, tmp_path, queue_max=4)
        writer.start()
        incident = draft()
        assert writer.submit(incident)
        await writer.close(timeout_s=30)
        return incident

    incident = asyncio.run(scenario())
    assert store.rows == [(incident.id, (10.0, 11.5))] and store.failures == 0
    with av.open(str(clip_path(tmp_path, incident.id))) as clip:
        samples = np.concatenate([f.to_ndarray().reshape(-1) for f in clip.decode(audio=0)])
        rate = clip.streams.audio[0].rate
    assert abs(len(samples) / rate - 1.5) < 0.1 and np.sqrt(np.mean(samples.astype(np.float64) ** 2)) > 0.1


def test_a_full_queue_drops_and_counts_without_blocking(tmp_path):
    dropped = []

    async def scenario():
        writer = IncidentWriter(FlakyStore(), tmp_path, queue_max=2, on_drop=lambda: dropped.append(1))
        return [writer.submit(draft(i)) for i in range(4)], writer.dropped  # not started: nothing drains

    accepted, count = asyncio.run(scenario())
    assert accepted == [True, True, False, False] and count == 2 and len(dropped) == 2


def test_incidents_at_the_webhook_severity_are_marked_for_it_and_wake_the_sender(tmp_path):
    store, woken = FlakyStore(), []

    async def scenario():
        writer = IncidentWriter(store, tmp_path, queue_max=4, notify_min_severity=0.8)
        writer.on_notify = lambda: woken.append(1)
        writer.start()
        for severity in (0.5, 0.8, 1.0):
            writer.submit(draft(severity=severity, seconds=0.0))
        await writer.close(timeout_s=30)

    asyncio.run(scenario())
    assert store.notified == [False, True, True] and len(woken) == 2


def test_without_a_webhook_nothing_is_marked(tmp_path):
    assert not IncidentWriter(FlakyStore(), tmp_path, queue_max=1).notifies(draft(severity=1.0))


@pytest.mark.parametrize("model", [ClientConfig, JobOptions])
@pytest.mark.parametrize("fields", [{"speaker_id": "user 1"}, {"speaker_id": ""}, {"channel_id": "x" * 65},
                                    {"speaker_id": "bell\x07"}, {"metadata": {"a": [1]}},
                                    {"metadata": {f"k{i}": i for i in range(17)}}, {"metadata": {"k": "v" * 2100}},
                                    {"metadata": {"bad key": 1}}])
def test_bad_speaker_channel_or_metadata_is_refused(model, fields):
    with pytest.raises(ValidationError):
        model(**fields)


def test_good_speaker_channel_and_metadata_are_kept():
    config = ClientConfig(speaker_id="steam:7656119", channel_id="match-42/blue", metadata={"game": "arena", "n": 3,
                                                                                            "ranked": True})
    assert (config.speaker_id, config.metadata["n"]) == ("steam:7656119", 3)


@pytest.mark.parametrize(("principal", "allowed"), [
    (None, True),  # authentication off
    (Principal("mod", "api_key"), True),
    (Principal("desktop", "api_key"), False),
    (Principal("alice", "jwt", frozenset({"moderator"})), True),
    (Principal("bob", "jwt", frozenset({"viewer"})), False),
    (Principal("carol", "jwt"), False),
])
def test_only_moderators_decide(principal, allowed):
    assert may_decide(principal, EdgeSettings(moderator_keys="mod, ops")) is allowed
