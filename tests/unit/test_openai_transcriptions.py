"""POST /v1/audio/transcriptions in-process over the in-memory job store, with a queue that
"transcribes" each job at once: OpenAI's shapes for every response_format, the real ``openai``
client unchanged (its HTTP client is the TestClient), and OpenAI-style errors. The real workers
and Triton are in tests/integration/test_jobs.py."""

from __future__ import annotations

import numpy as np
import openai
import pytest

from jobs.models import FinalSummary, JobError, JobEvent
from jobs.service import JobService
from jobs.settings import JobSettings
from jobs.store import StoredEvent
from moderation.events import HarmfulSpan, SegmentEvent, WordTime
from scripts.speech import SAMPLE_RATE, write_wav
from tests.audio_formats import encode
from tests.unit.test_job_api import KEY, LIMIT, MemoryStore, app_client, no_shutdown_in_progress  # noqa: F401

SEGMENTS = [
    SegmentEvent(seq=0, start_s=0.5, end_s=1.6, text=" Hello there.", is_harmful=False, reasons=[], confidence=None,
                 harmful_prob=0.01, no_speech_prob=0.02, harmful_spans=[],
                 words=[WordTime(word=" Hello", start_s=0.5, end_s=0.9, probability=0.9),
                        WordTime(word=" there.", start_s=0.9, end_s=1.6, probability=0.9)]),
    SegmentEvent(seq=1, start_s=2.0, end_s=3.1, text=" You idiot.", is_harmful=True, reasons=["lexicon"],
                 confidence=1.0, harmful_prob=1.0, severity=1.0, no_speech_prob=0.01,
                 harmful_spans=[HarmfulSpan(start_s=2.4, end_s=3.1, text="idiot", category="insult",
                                            source="lexicon")],
                 words=[WordTime(word=" You", start_s=2.0, end_s=2.4, probability=0.9),
                        WordTime(word=" idiot.", start_s=2.4, end_s=3.1, probability=0.9)]),
]


class DoneAtOnce:
    """A queue whose 'worker' writes the job's events at once: SEGMENTS, then the summary (or ``fail_with``)."""

    def __init__(self, store: MemoryStore, fail_with: JobError | None = None):
        self.store, self.fail_with, self.queued = store, fail_with, []

    async def __call__(self, job_id: str) -> None:
        self.queued.append(job_id)
        info = self.store.jobs[job_id]
        events = [StoredEvent(f"1-{i}", JobEvent.TRANSCRIPT_SEGMENT, s.model_dump_json()) for i, s in
                  enumerate(SEGMENTS)]
        if self.fail_with is not None:
            events = [StoredEvent("2-0", JobEvent.ERROR, self.fail_with.model_dump_json())]
        else:
            events.append(StoredEvent("2-0", JobEvent.FINAL_SUMMARY, FinalSummary(
                job_id=job_id, filename=info.filename, duration_s=4.0, speech_s=2.2, language="en", segments=2,
                harmful_segments=1, harmful=[], worst_moments=[], processing_s=0.1,
                real_time_factor=0.025).model_dump_json()))
        self.store.streams[job_id] = events
        self.store.jobs[job_id] = info.model_copy(update={"language": "en"})


@pytest.fixture
def service(tmp_path):
    store = MemoryStore()
    settings = JobSettings(data_dir=tmp_path / "data", max_upload_bytes=LIMIT, max_duration_s=60,
                           sync_max_duration_s=30)
    return JobService(settings, store, DoneAtOnce(store))


@pytest.fixture
def wav(tmp_path):
    return write_wav(tmp_path / "clip.wav", np.zeros(SAMPLE_RATE * 4, np.float32))


def openai_client(http) -> openai.OpenAI:
    return openai.OpenAI(api_key="any", base_url=str(http.base_url.join("/v1")), http_client=http, max_retries=0)


def test_the_openai_client_gets_each_response_format_unchanged(service, wav):
    with app_client(service) as http:
        client = openai_client(http)
        with open(wav, "rb") as f:
            plain = client.audio.transcriptions.create(model="whisper-1", file=f)
        with open(wav, "rb") as f:
            text = client.audio.transcriptions.create(model="whisper-1", file=f, response_format="text")
        with open(wav, "rb") as f:
            srt = client.audio.transcriptions.create(model="whisper-1", file=f, response_format="srt")
        with open(wav, "rb") as f:
            vtt = client.audio.transcriptions.create(model="whisper-1", file=f, response_format="vtt")
        with open(wav, "rb") as f:
            verbose = client.audio.transcriptions.create(model="whisper-1", file=f, response_format="verbose_json",
                                                         timestamp_granularities=["word", "segment"], language="en")
    assert plain.text == "Hello there. You idiot." and text.strip() == plain.text
    assert srt.startswith("1\n00:00:00,500 --> 00:00:01,600\nHello there.") and vtt.startswith("WEBVTT")
    assert verbose.language == "en" and verbose.duration == pytest.approx(4.0, abs=0.01)
    assert [s.start for s in verbose.segments] == [0.5, 2.0] and [w.word for w in verbose.words][-1] == "idiot."
    harmful = verbose.segments[1].model_extra
    assert harmful["is_harmful"] and harmful["harmful_spans"][0]["category"] == "insult"
    assert len(service.enqueue.queued) == 5 and service.store.jobs[service.enqueue.queued[-1]].options.word_timestamps


def errors(response) -> dict:
    body = response.json()
    assert set(body) == {"error"} and set(body["error"]) == {"message", "type", "param", "code"}, body
    return body["error"]


@pytest.mark.parametrize(("fields", "param"), [({"response_format": "xml"}, "response_format"),
                                               ({"language": "xx"}, "language"),
                                               ({"model": ""}, "model"),
                                               ({"timestamp_granularities[]": "word"}, "timestamp_granularities"),
                                               ({"prompt": "x" * 1001}, "prompt")])
def test_bad_fields_get_400_with_openais_error_body(service, wav, fields, param):
    with app_client(service) as http, open(wav, "rb") as f:
        response = http.post("/v1/audio/transcriptions", files={"file": ("clip.wav", f)},
                             data={"model": "whisper-1", **fields})
    assert response.status_code == 400 and errors(response)["param"] == param
    assert service.enqueue.queued == []


def test_a_file_that_is_not_audio_gets_400_and_one_over_the_limit_413_pointing_to_jobs(service, tmp_path):
    text = tmp_path / "notes.txt"
    text.write_text("not audio at all\n" * 100)
    long = encode(np.zeros(8000 * 40, np.float32), 8000, tmp_path / "long.mp3", "mp3")
    with app_client(service) as http:
        client = openai_client(http)
        with open(text, "rb") as f, pytest.raises(openai.BadRequestError) as not_audio:
            client.audio.transcriptions.create(model="whisper-1", file=f)
        with open(long, "rb") as f:
            too_long = http.post("/v1/audio/transcriptions", files={"file": ("long.mp3", f)},
                                 data={"model": "whisper-1"})
    assert not_audio.value.status_code == 400 and not_audio.value.code == "not_audio"
    assert too_long.status_code == 413 and "/v1/jobs" in errors(too_long)["message"]
    assert service.enqueue.queued == []


def test_a_job_that_fails_on_the_files_fault_is_400_and_on_the_services_500(service, wav):
    with app_client(service) as http:
        client = openai_client(http)
        service.enqueue.fail_with = JobError(code="corrupt_audio", message="truncated")
        with open(wav, "rb") as f, pytest.raises(openai.BadRequestError):
            client.audio.transcriptions.create(model="whisper-1", file=f)
        service.enqueue.fail_with = JobError(code="triton_unavailable", message="no server")
        with open(wav, "rb") as f, pytest.raises(openai.InternalServerError) as failed:
            client.audio.transcriptions.create(model="whisper-1", file=f)
    assert failed.value.code == "triton_unavailable"


def test_it_takes_the_same_credentials_as_the_other_endpoints(service, wav):
    from edge.auth import key_line

    with app_client(service, auth="required", api_key_hashes=key_line("desktop", KEY)) as http, open(wav, "rb") as f:
        refused = http.post("/v1/audio/transcriptions", files={"file": ("clip.wav", f)}, data={"model": "m"})
        f.seek(0)
        served = http.post("/v1/audio/transcriptions", files={"file": ("clip.wav", f)}, data={"model": "m"},
                           headers={"Authorization": f"Bearer {KEY}"})
    assert refused.status_code == 401 and served.status_code == 200 and served.json()["text"]
