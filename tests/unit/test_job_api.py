"""The batch job API in-process (Starlette's TestClient) over an in-memory job store: uploads,
limits, typed errors, ownership, resumable events and transcripts. The real Redis, workers and
Triton are in tests/integration/test_jobs.py."""

from __future__ import annotations

import json
import signal

import numpy as np
import pytest
from fastapi.testclient import TestClient
from sse_starlette.sse import AppStatus

from edge.app import create_app
from edge.auth import key_line, new_api_key
from edge.settings import EdgeSettings
from jobs.models import JobInfo, JobState
from jobs.service import JobService
from jobs.settings import JobSettings
from jobs.store import StoredEvent
from moderation.events import SegmentEvent
from scripts.speech import SAMPLE_RATE, write_wav
from tests.audio_formats import encode
from tests.unit.fakes import FakePool

KEY = new_api_key()
LIMIT = 200_000


class MemoryStore:
    """JobStore's read side and creation, in memory."""

    def __init__(self):
        self.jobs: dict[str, JobInfo] = {}
        self.streams: dict[str, list[StoredEvent]] = {}

    async def create(self, info: JobInfo) -> None:
        self.jobs[info.id] = info

    async def get(self, job_id: str) -> JobInfo | None:
        return self.jobs.get(job_id)

    async def page(self, owner: str | None, offset: int, limit: int):
        jobs = sorted((j for j in self.jobs.values() if j.owner == owner), key=lambda j: -j.created_at)
        return jobs[offset:offset + limit], len(jobs)

    async def delete(self, job_id: str, owner: str | None = None) -> bool:
        self.streams.pop(job_id, None)
        return self.jobs.pop(job_id, None) is not None

    async def events(self, job_id: str, after: str = "0", block_ms=None):
        return [e for e in self.streams.get(job_id, []) if _key(e.id) > _key(after)]

    async def all_events(self, job_id: str):
        return await self.events(job_id)

    async def close(self) -> None:
        pass


def _key(event_id: str) -> tuple[int, int]:
    ms, _, seq = event_id.partition("-")
    return int(ms), int(seq or 0)


@pytest.fixture(autouse=True)
def no_shutdown_in_progress(monkeypatch):
    """sse-starlette ends every stream once a uvicorn server in this process saw SIGTERM (a global
    flag); the drain tests send those, so each test here starts with it clear."""
    monkeypatch.setattr(AppStatus, "should_exit", False)
    monkeypatch.setattr(signal, "getsignal", lambda _sig: signal.SIG_DFL)


@pytest.fixture
def service(tmp_path):
    queued: list[str] = []

    async def enqueue(job_id: str) -> None:
        queued.append(job_id)

    settings = JobSettings(data_dir=tmp_path / "data", max_upload_bytes=LIMIT, max_duration_s=60)
    svc = JobService(settings, MemoryStore(), enqueue)
    svc.queued = queued
    return svc


def app_client(service, **settings) -> TestClient:
    return TestClient(create_app(EdgeSettings(**{"auth": "none", **settings}), pool=FakePool(), jobs=service))


@pytest.fixture
def wav(tmp_path):
    return write_wav(tmp_path / "clip.wav", np.zeros(SAMPLE_RATE * 2, np.float32))


def upload(client: TestClient, path, **fields):
    with open(path, "rb") as f:
        return client.post("/v1/jobs", files={"file": (path.name, f)}, data=fields)


def test_an_upload_is_stored_recorded_and_queued(service, wav):
    with app_client(service) as client:
        response = upload(client, wav, language="auto", word_timestamps="true")
    assert response.status_code == 202, response.text
    job = response.json()
    assert job["state"] == "queued" and job["options"]["language"] == "auto" and job["options"]["word_timestamps"]
    assert job["duration_s"] == pytest.approx(2.0, abs=0.01) and job["links"]["transcript"]["srt"].endswith(".srt")
    assert service.queued == [job["id"]]
    assert (service.settings.data_dir / job["id"] / "upload.wav").read_bytes() == wav.read_bytes()


def test_oversized_uploads_get_413_before_anything_is_stored(service, tmp_path):
    big = tmp_path / "big.mp3"
    big.write_bytes(b"\0" * (LIMIT + 100_000))
    with app_client(service) as client:
        declared = upload(client, big)
        chunked = client.post("/v1/jobs", content=(b"x" * 65536 for _ in range(6)),
                              headers={"content-type": "multipart/form-data; boundary=b"})
    for response in (declared, chunked):
        assert response.status_code == 413 and response.json()["detail"]["code"] == "upload_too_large"
    assert service.queued == [] and not list(service.settings.data_dir.glob("*/*"))


def test_a_recording_whose_header_says_it_is_too_long_gets_413(service, tmp_path):
    long = encode(np.zeros(8000 * 70, np.float32), 8000, tmp_path / "long.mp3", "mp3")
    with app_client(service) as client:
        response = upload(client, long)
    assert response.status_code == 413 and response.json()["detail"]["code"] == "recording_too_long"
    assert service.queued == [] and not list(service.settings.data_dir.glob("*/*"))


@pytest.mark.parametrize(("fields", "code"), [({"language": "xx"}, "bad_language"),
                                               ({"callback_url": "ftp://x"}, "bad_callback_url"),
                                               ({"callback_url": "http://[::1/x"}, "bad_callback_url"),
                                               ({"word_timestamps": "maybe"}, "bad_options"),
                                               ({"speaker_id": "two words"}, "bad_options"),
                                               ({"metadata": "{not json"}, "bad_options"),
                                               ({"metadata": "[1, 2]"}, "bad_options"),
                                               ({"metadata": '{"k": "' + "v" * 3000 + '"}'}, "bad_options")])
def test_bad_options_get_422_with_a_code(service, wav, fields, code):
    with app_client(service) as client:
        response = upload(client, wav, **fields)
    assert response.status_code == 422 and response.json()["detail"]["code"] == code, response.text
    assert service.queued == []


def test_no_file_and_no_jobs_get_typed_errors(service):
    with app_client(service) as client:
        assert client.post("/v1/jobs", data={"language": "en"}).json()["detail"]["code"] == "no_file"
        assert client.get("/v1/jobs/nope").json()["detail"]["code"] == "job_not_found"
    with TestClient(create_app(EdgeSettings(auth="none"), pool=FakePool())) as client:
        response = client.get("/v1/jobs")
    assert response.status_code == 503 and response.json()["detail"]["code"] == "jobs_disabled"


def test_with_authentication_a_job_is_its_owners_only(service, wav):
    other = new_api_key()
    hashes = f"{key_line('mod-team', KEY)}\n{key_line('someone', other)}"
    with app_client(service, auth="required", api_key_hashes=hashes) as client:
        assert upload(client, wav).status_code == 401
        client.headers["Authorization"] = f"Bearer {KEY}"
        job = upload(client, wav).json()
        assert client.get(f"/v1/jobs/{job['id']}").status_code == 200
        client.headers["Authorization"] = f"Bearer {other}"
        assert client.get(f"/v1/jobs/{job['id']}").status_code == 404
        assert client.delete(f"/v1/jobs/{job['id']}").status_code == 404
        assert client.get("/v1/jobs").json() == {"jobs": [], "offset": 0, "limit": 20, "total": 0}
        client.headers["Authorization"] = f"Bearer {KEY}"
        assert [j["id"] for j in client.get("/v1/jobs").json()["jobs"]] == [job["id"]]


def test_a_job_the_queue_cannot_take_is_refused_and_not_left_queued(service, wav):
    async def broken(_job_id: str) -> None:
        raise ConnectionError("broker down")

    service.enqueue = broken
    with app_client(service) as client:
        response = upload(client, wav)
    assert response.status_code == 503 and response.json()["detail"]["code"] == "queue_unavailable"
    assert service.store.jobs == {} and not list(service.settings.data_dir.glob("*/*"))


def segment(seq: int, start: float, text: str) -> StoredEvent:
    event = SegmentEvent(seq=seq, start_s=start, end_s=start + 1.5, text=text, is_harmful=False, reasons=[],
                         confidence=None, harmful_prob=0.0, no_speech_prob=0.0, harmful_spans=[])
    return StoredEvent(f"100-{seq}", "transcript_segment", event.model_dump_json())


def finished_job(service, wav) -> str:
    with app_client(service) as client:
        job_id = upload(client, wav).json()["id"]
    store = service.store
    store.jobs[job_id] = store.jobs[job_id].model_copy(update={"state": JobState.COMPLETED})
    store.streams[job_id] = [segment(0, 0.5, "good game"), segment(1, 3.0, "see you"),
                             StoredEvent("100-2", "error", json.dumps({"type": "error", "code": "x", "message": "y"}))]
    return job_id


def sse_events(text: str) -> list[tuple[str, str]]:
    blocks = [b for b in text.replace("\r\n", "\n").split("\n\n") if "data:" in b]
    fields = [dict(line.split(": ", 1) for line in b.splitlines() if ": " in line) for b in blocks]
    return [(f["id"], f["event"]) for f in fields]


def test_events_resume_after_last_event_id_and_end_with_the_last_event(service, wav):
    job_id = finished_job(service, wav)
    with app_client(service) as client:
        everything = sse_events(client.get(f"/v1/jobs/{job_id}/events").text)
        after_first = sse_events(client.get(f"/v1/jobs/{job_id}/events", headers={"Last-Event-ID": "100-0"}).text)
        bad = client.get(f"/v1/jobs/{job_id}/events", headers={"Last-Event-ID": "nonsense"})
    assert everything == [("100-0", "transcript_segment"), ("100-1", "transcript_segment"), ("100-2", "error")]
    assert after_first == everything[1:]
    assert bad.status_code == 400 and bad.json()["detail"]["code"] == "bad_last_event_id"


def test_transcripts_render_the_stored_segments(service, wav):
    job_id = finished_job(service, wav)
    with app_client(service) as client:
        srt = client.get(f"/v1/jobs/{job_id}/transcript.srt")
        vtt = client.get(f"/v1/jobs/{job_id}/transcript.vtt").text
        unknown = client.get(f"/v1/jobs/{job_id}/transcript.doc")
    assert srt.headers["content-type"].startswith("application/x-subrip")
    assert "1\n00:00:00,500 --> 00:00:02,000\ngood game" in srt.text and "2\n00:00:03,000" in srt.text
    assert vtt.startswith("WEBVTT") and "see you" in vtt
    assert unknown.status_code == 422
