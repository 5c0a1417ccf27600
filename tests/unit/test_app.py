"""The edge app in-process (Starlette's TestClient) with a fake pool: protocol, bad input,
ordering, backpressure, admission and the ops endpoints, in seconds and without Triton."""

from __future__ import annotations

import json
import logging
import sys

import numpy as np
import pytest
from fastapi.testclient import TestClient

from edge.__main__ import OneLineClientErrors, transport_max_bytes
from edge.app import create_app
from edge.settings import EdgeSettings
from moderation.protocol import (
    MAX_JSON_DEPTH,
    MAX_TEXT_FRAME_BYTES,
    SERVER_EVENTS,
    ConfigEvent,
    ErrorCode,
    ErrorEvent,
    ReadyEvent,
    SegmentEvent,
    SummaryEvent,
)
from moderation.triton import TritonCallError
from moderation.verdict import LexiconMatch, ModelFacts, ModelWord, Moderation
from scripts.speech import DIALOGUE, DIALOGUE_WAV, pcm16, read_wav
from tests.unit.fakes import FakePool
from tests.unit.test_protocol import documented_examples

DIALOGUE_PCM = pcm16(read_wav(DIALOGUE_WAV))
FRAME_BYTES = 640
"""20 ms of 16 kHz mono s16le, what a desktop capture loop sends."""
REALTIME_LEAD_S = 3600.0
"""``bulk_lead_s`` under which the tests' burst of audio still counts as a real-time stream, for
the tests of several calls in flight (a bulk session has one at a time)."""


def client(pool: FakePool, **settings) -> TestClient:
    return TestClient(create_app(EdgeSettings(**settings), pool=pool))


def send_audio(ws, pcm: bytes = DIALOGUE_PCM) -> None:
    for offset in range(0, len(pcm), FRAME_BYTES):
        ws.send_bytes(pcm[offset:offset + FRAME_BYTES])


def until_close(ws) -> tuple[list, int]:
    """Every event up to the server's close, parsed into the protocol models, and the close code."""
    events = []
    while (message := ws.receive())["type"] != "websocket.close":
        events.append(SERVER_EVENTS.validate_json(message["text"]))
    return events, message["code"]


def end(ws) -> tuple[list, int]:
    ws.send_text('{"type": "end"}')
    return until_close(ws)


def ready(ws) -> ReadyEvent:
    event = SERVER_EVENTS.validate_json(ws.receive_text())
    assert isinstance(event, ReadyEvent)
    return event


def next_event(ws):
    return SERVER_EVENTS.validate_json(ws.receive_text())


def test_a_dialogue_gets_one_result_per_sentence_in_order_then_a_summary():
    pool = FakePool()
    with client(pool) as app, app.websocket_connect("/ws/audio") as ws:
        hello = ready(ws)
        send_audio(ws)
        events, code = end(ws)
    assert (hello.language, hello.sample_rate, hello.encoding, hello.max_frame_bytes) == ("ko", 16000, "pcm_s16le",
                                                                                          1 << 20)
    segments = [e for e in events if isinstance(e, SegmentEvent)]
    assert [s.seq for s in segments] == list(range(len(DIALOGUE)))
    assert [s.text for s in segments] == [f"segment {i}: {c.samples} samples" for i, c in enumerate(pool.calls)]
    assert all(not s.is_harmful and s.confidence is None and s.latency_ms >= 0 for s in segments)
    summary = events[-1]
    assert isinstance(summary, SummaryEvent) and code == 1000
    assert (summary.segments, summary.failed_segments, summary.session_id) == (3, 0, hello.session_id)
    assert summary.audio_seconds == pytest.approx(len(DIALOGUE_PCM) / 2 / 16000, abs=1e-3)


def test_without_a_language_the_edge_sends_none_and_reports_the_models_default():
    pool = FakePool(ModelFacts("ja"))
    with client(pool) as app, app.websocket_connect("/ws/audio") as ws:
        assert ready(ws).language == "ja"
        ws.send_text('{"type": "config", "sample_rate": 16000}')
        assert next_event(ws).language == "ja"
        send_audio(ws)
        end(ws)
    assert pool.calls and all(call.language is None for call in pool.calls)


def test_before_triton_reports_its_default_the_ready_language_is_null():
    with client(FakePool(ModelFacts(), up=False)) as app, app.websocket_connect("/ws/audio") as ws:
        hello = ready(ws)
    assert hello.language is None and hello.signals == []


def test_a_named_language_reaches_the_model():
    pool = FakePool()
    with client(pool) as app, app.websocket_connect("/ws/audio") as ws:
        ready(ws)
        ws.send_text('{"type": "config", "language": "en"}')
        ack = next_event(ws)
        send_audio(ws)
        end(ws)
    assert isinstance(ack, ConfigEvent) and ack.language == "en"
    assert [call.language for call in pool.calls] == ["en"] * len(DIALOGUE)


def test_an_unknown_language_is_a_client_error_and_the_session_goes_on():
    pool = FakePool()
    with client(pool) as app, app.websocket_connect("/ws/audio") as ws:
        ready(ws)
        ws.send_text('{"type":"config","language":"xx"}')
        error = next_event(ws)
        send_audio(ws)
        events, code = end(ws)
        metrics = app.get("/metrics").text
    assert isinstance(error, ErrorEvent) and error.code == ErrorCode.BAD_CONFIG and error.seq is None
    assert "language" in error.message and "'xx'" in error.message
    assert json.loads(error.wire()) in documented_examples()  # docs/PROTOCOL.md shows this very error
    assert len([e for e in events if isinstance(e, SegmentEvent)]) == len(DIALOGUE) and code == 1000
    assert all(call.language is None for call in pool.calls)  # the rejected config changed nothing
    assert 'edge_client_errors_total{code="bad_config"} 1.0' in metrics
    assert 'edge_triton_errors_total' not in metrics.replace("# HELP edge_triton_errors_total", "").replace(
        "# TYPE edge_triton_errors_total", "")


@pytest.mark.parametrize(
    ("frame", "code", "fragment"),
    [
        ("this is not json", "bad_json", "JSON"),
        ('{"type": "config", "sample_rate": 16000, "bitrate": 5}', "bad_config", "bitrate"),
        ('{"type": "config", "sample_rate": 96000}', "bad_config", "sample_rate"),
        ('{"type": "config", "channels": 6}', "bad_config", "channels"),
        ('{"type": "config", "encoding": "mp3"}', "bad_config", "encoding"),
        ('{"type": "config", "language": "Korean!"}', "bad_config", "language"),
        ('{"type": "config", "language": "KO"}', "bad_config", "language"),
        ('{"type": "dance"}', "unknown_message", "config"),
        ("[1, 2, 3]", "unknown_message", "config"),
    ],
)
def test_bad_text_frames_get_typed_errors_and_the_session_goes_on(frame, code, fragment):
    with client(FakePool()) as app, app.websocket_connect("/ws/audio") as ws:
        ready(ws)
        ws.send_text(frame)
        error = next_event(ws)
        ws.send_text('{"type": "config", "sample_rate": 16000}')  # still accepted: no audio yet
        ack = next_event(ws)
        events, close_code = end(ws)
    assert isinstance(error, ErrorEvent) and error.code == code and fragment in error.message, error
    assert isinstance(ack, ConfigEvent)
    assert isinstance(events[-1], SummaryEvent) and close_code == 1000


def test_config_after_audio_and_oversized_frames_are_refused_and_the_session_goes_on():
    pool = FakePool()
    with client(pool, max_frame_bytes=4096) as app, app.websocket_connect("/ws/audio") as ws:
        ready(ws)
        ws.send_bytes(b"\0" * 4098)
        too_large = next_event(ws)
        send_audio(ws)
        ws.send_text('{"type": "config", "sample_rate": 8000}')
        events, _ = end(ws)
    assert too_large.code == ErrorCode.FRAME_TOO_LARGE and "4098" in too_large.message
    errors = [e for e in events if isinstance(e, ErrorEvent)]
    assert [e.code for e in errors] == [ErrorCode.CONFIG_AFTER_AUDIO]
    assert len([e for e in events if isinstance(e, SegmentEvent)]) == len(DIALOGUE)
    assert events[-1].audio_seconds == pytest.approx(len(DIALOGUE_PCM) / 2 / 16000, abs=1e-3)  # oversized: dropped


def test_results_keep_segment_order_when_the_model_answers_out_of_order():
    pool = FakePool(reverse_every=len(DIALOGUE))
    with client(pool, bulk_lead_s=REALTIME_LEAD_S) as app, app.websocket_connect("/ws/audio") as ws:
        ready(ws)
        send_audio(ws)
        events, _ = end(ws)
    assert pool.completed == [2, 1, 0]
    segments = [e for e in events if isinstance(e, SegmentEvent)]
    assert [s.seq for s in segments] == [0, 1, 2]
    assert [s.text.split(":")[0] for s in segments] == ["segment 0", "segment 1", "segment 2"]


def test_failed_segments_get_error_events_in_their_place():
    error = TritonCallError(ErrorCode.TRITON_TIMEOUT, "timeout", "Triton did not answer in time")
    with client(FakePool(error=error)) as app, app.websocket_connect("/ws/audio") as ws:
        ready(ws)
        send_audio(ws)
        events, code = end(ws)
        metrics = app.get("/metrics").text
    errors = [e for e in events if isinstance(e, ErrorEvent)]
    assert [(e.seq, e.code) for e in errors] == [(i, ErrorCode.TRITON_TIMEOUT) for i in range(len(DIALOGUE))]
    assert all(e.start_s < e.end_s and e.latency_ms >= 0 for e in errors)
    summary = events[-1]
    assert (summary.segments, summary.failed_segments, summary.p95_latency_ms, code) == (0, 3, None, 1000)
    assert f'edge_triton_errors_total{{reason="timeout"}} {float(len(DIALOGUE))}' in metrics


def scored(probabilities: list[float]):
    return lambda index, audio: Moderation(f"segment {index}", probabilities[index], 0.01)


def verdicts_of(pool: FakePool) -> list:
    with client(pool) as app, app.websocket_connect("/ws/audio") as ws:
        ready(ws)
        send_audio(ws)
        events, _ = end(ws)
    return events


def test_a_trained_classifier_decides_with_the_confidence_of_its_decision():
    events = verdicts_of(FakePool(ModelFacts("ko", ("classifier",)), respond=scored([0.2, 0.8, 0.2])))
    segments = [e for e in events if isinstance(e, SegmentEvent)]
    assert [(s.is_harmful, s.reasons, s.confidence, s.harmful_prob) for s in segments] == [
        (False, [], 0.8, 0.2), (True, ["classifier"], 0.8, 0.8), (False, [], 0.8, 0.2)]
    assert [(h.source, h.start_s, h.end_s) for h in segments[1].harmful_spans] == [
        ("classifier", segments[1].start_s, segments[1].end_s)]
    assert events[-1].harmful_segments == 1


def test_an_untrained_classifier_never_decides():
    events = verdicts_of(FakePool(ModelFacts("ko", ()), respond=scored([0.9, 0.99, 0.7])))
    segments = [e for e in events if isinstance(e, SegmentEvent)]
    assert [(s.is_harmful, s.reasons, s.confidence, s.harmful_spans) for s in segments] == [(False, [], None, [])] * 3
    assert events[-1].harmful_segments == 0


def test_a_client_faster_than_the_model_is_held_to_the_in_flight_limit_and_loses_nothing():
    # Three dialogues (nine segments) sent at once while the model answers nothing: the edge
    # must stop at two segments in flight, then deliver all nine once the model answers.
    pool = FakePool(gated=True)
    with client(pool, max_pending_segments=2, bulk_lead_s=REALTIME_LEAD_S) as app, \
            app.websocket_connect("/ws/audio") as ws:
        ready(ws)
        send_audio(ws, DIALOGUE_PCM * 3)
        ws.send_text('{"type": "end"}')
        app.portal.call(pool.wait_in_flight, 2)
        held_back = len(pool.calls)
        app.portal.call(pool.open_gate)
        events, code = until_close(ws)
    assert held_back == 2 and pool.peak_in_flight == 2
    segments = [e for e in events if isinstance(e, SegmentEvent)]
    assert [s.seq for s in segments] == list(range(3 * len(DIALOGUE)))
    assert code == 1000 and events[-1].segments == 9


def test_sessions_over_the_limit_are_refused_with_1013_and_slots_come_back():
    with client(FakePool(), max_sessions=1) as app:
        with app.websocket_connect("/ws/audio") as first:
            ready(first)
            with app.websocket_connect("/ws/audio") as second:
                refusal, code = until_close(second)
            end(first)
        with app.websocket_connect("/ws/audio") as third:
            ready(third)
            events, _ = end(third)
        metrics = app.get("/metrics").text
    assert [(e.code, e.message) for e in refusal] == [(ErrorCode.SERVER_BUSY,
                                                      "too many sessions on this edge, retry later")]
    assert code == 1013
    assert isinstance(events[-1], SummaryEvent)
    assert "edge_active_sessions 0.0" in metrics


def test_a_client_that_leaves_mid_stream_frees_its_session_and_abandons_its_calls():
    # Abandoned, not cancelled: tritonserver 2.51 can crash on a gRPC cancellation racing its
    # response. The call ends on its own and its result goes nowhere.
    pool = FakePool(gated=True)
    with client(pool) as app:
        with app.websocket_connect("/ws/audio") as ws:
            ready(ws)
            send_audio(ws)
            app.portal.call(pool.wait_in_flight, 1)  # a Triton call is under way when the client leaves
        with app.websocket_connect("/ws/audio") as ws:  # the next session still works
            ready(ws)
            app.portal.call(pool.open_gate)
            events, _ = end(ws)
        app.portal.call(pool.drained)
        metrics = app.get("/metrics").text
    assert isinstance(events[-1], SummaryEvent)
    assert "edge_active_sessions 0.0" in metrics
    assert 'edge_segments_total{outcome="cancelled"}' in metrics
    assert pool.completed and pool.in_flight == 0  # it ran to its end instead of being cancelled


def test_probes_follow_the_pool_and_the_app_owns_its_lifecycle():
    up, down = FakePool(), FakePool(up=False)
    with client(up) as app:
        assert app.get("/healthz").json() == {"status": "ok"}
        ok = app.get("/readyz")
    with client(down) as app:
        unavailable = app.get("/readyz")
        assert app.get("/healthz").status_code == 200
    assert ok.status_code == 200 and ok.json()["ready_servers"] == ["fake-triton:8001"]
    assert unavailable.status_code == 503 and unavailable.json()["status"] == "unavailable"
    assert up.started and up.closed and down.closed


def test_stereo_float_at_44k_is_resampled_before_segmentation():
    samples = read_wav(DIALOGUE_WAV)
    import av  # noqa: PLC0415 - the edge's own resampler makes the 44.1 kHz stereo input

    resampler = av.AudioResampler(format="flt", layout="stereo", rate=44100)
    frame = av.AudioFrame.from_ndarray(samples.reshape(1, -1), format="flt", layout="mono")
    frame.sample_rate = 16000
    stereo = np.concatenate([f.to_ndarray().T.reshape(-1) for f in resampler.resample(frame) +
                             resampler.resample(None)]).astype("<f4").tobytes()
    pool = FakePool()
    with client(pool) as app, app.websocket_connect("/ws/audio") as ws:
        ready(ws)
        ws.send_text(json.dumps({"type": "config", "sample_rate": 44100, "channels": 2, "encoding": "pcm_f32le"}))
        ack = next_event(ws)
        send_audio(ws, stereo)
        events, _ = end(ws)
    assert (ack.sample_rate, ack.channels, ack.encoding) == (44100, 2, "pcm_f32le")
    assert len([e for e in events if isinstance(e, SegmentEvent)]) == len(DIALOGUE)


def test_the_default_triton_pool_starts_inside_the_apps_event_loop():
    # No pool injected: the app builds its gRPC pool, whose channels must belong to the loop the
    # app runs in (TestClient runs it in a thread of its own). Nothing listens at this address.
    from scripts.service.launch import free_port

    settings = EdgeSettings(triton_url=f"127.0.0.1:{free_port()}", triton_health_interval_s=60)
    with TestClient(create_app(settings)) as app:
        response = app.get("/readyz")
        with app.websocket_connect("/ws/audio") as ws:
            hello = ready(ws)
    assert response.status_code == 503 and response.json()["servers"] == [settings.triton_url]
    assert hello.language is None


def lexicon_hit(index, audio) -> Moderation:
    """Segment 1 says a listed word; Whisper's word times are relative to the segment."""
    if index != 1:
        return Moderation("good game", 0.1, 0.01, [ModelWord(word="good", start=0.2, end=0.5, probability=0.9),
                                                    ModelWord(word=" game", start=0.5, end=0.9, probability=0.9)])
    transcript = "what the fuck"
    return Moderation(transcript, 0.1, 0.01,
                      [ModelWord(word=w, start=a, end=b, probability=0.8)
                       for w, a, b in (("what", 0.3, 0.6), (" the", 0.6, 0.8), (" fuck", 0.8, 1.2))],
                      [LexiconMatch(start=9, end=13, text="fuck", term="fuck", category="profanity",
                                    sources=["better_profanity"])])


@pytest.mark.parametrize("asks_for_words", [False, True])
def test_a_lexicon_match_is_a_harmful_span_at_its_words_stream_time(asks_for_words):
    pool = FakePool(ModelFacts("ko", ("lexicon",)), respond=lexicon_hit)
    with client(pool) as app, app.websocket_connect("/ws/audio") as ws:
        hello = ready(ws)
        ws.send_text(json.dumps({"type": "config", "word_timestamps": asks_for_words}))
        ack = next_event(ws)
        send_audio(ws)
        events, _ = end(ws)
        probe = app.get("/readyz").json()
    segments = [e for e in events if isinstance(e, SegmentEvent)]
    assert hello.signals == ["lexicon"] == probe["signals"] and ack.word_timestamps is asks_for_words
    assert [(s.is_harmful, s.reasons) for s in segments] == [(False, []), (True, ["lexicon"]), (False, [])]
    span = segments[1].harmful_spans[0]
    assert (span.text, span.category, span.source) == ("fuck", "profanity", "lexicon")
    assert (span.start_s, span.end_s) == (round(segments[1].start_s + 0.8, 3), round(segments[1].start_s + 1.2, 3))
    assert all(call.word_timestamps for call in pool.calls)  # spans need word times, asked or not
    if asks_for_words:
        assert [w.word for w in segments[1].words] == ["what", "the", "fuck"]
        assert segments[1].words[0].start_s == round(segments[1].start_s + 0.3, 3)
    else:
        assert all(s.words is None for s in segments)


def test_without_a_lexicon_word_times_are_computed_only_for_clients_that_ask():
    pool = FakePool(ModelFacts("ko", ("classifier",)))
    with client(pool) as app, app.websocket_connect("/ws/audio") as ws:
        ready(ws)
        send_audio(ws)
        end(ws)
    assert pool.calls and not any(call.word_timestamps for call in pool.calls)


def logged_tracebacks(caplog) -> list:
    return [r for r in caplog.records if r.exc_info or r.levelno >= logging.ERROR]


@pytest.mark.parametrize(
    ("frame", "fragment"),
    [
        ("[" * 1000 + "]" * 1000, f"at most {MAX_JSON_DEPTH} levels"),
        ('{"a":' * 1000 + "1" + "}" * 1000, f"at most {MAX_JSON_DEPTH} levels"),
        ('{"type": "config", "language": "' + "x" * MAX_TEXT_FRAME_BYTES + '"}', f"exceeds {MAX_TEXT_FRAME_BYTES}"),
        ('{"sample_rate": ' + "9" * 5000 + "}", "JSON"),
    ],
)
def test_deep_or_oversized_json_gets_bad_json_and_the_session_goes_on(frame, fragment, caplog):
    with client(FakePool()) as app, app.websocket_connect("/ws/audio") as ws:
        ready(ws)
        ws.send_text(frame)
        error = next_event(ws)
        send_audio(ws)
        events, code = end(ws)
    assert isinstance(error, ErrorEvent) and error.code == ErrorCode.BAD_JSON and fragment in error.message, error
    assert len([e for e in events if isinstance(e, SegmentEvent)]) == len(DIALOGUE) and code == 1000
    assert not logged_tracebacks(caplog)


def test_text_that_is_not_utf8_gets_bad_json_in_one_log_line(caplog):
    caplog.set_level(logging.INFO, logger="edge.session")
    invalid = b'{"type": "config", \xff\xfe}'.decode("utf-8", "surrogateescape")  # as a lenient server passes it
    with client(FakePool()) as app, app.websocket_connect("/ws/audio") as ws:
        ready(ws)
        ws.send({"type": "websocket.receive", "text": invalid})
        error = next_event(ws)
        ws.send_text('{"type": "config", "language": "\\ud800"}')  # a lone surrogate the edge echoes back
        echoed = ws.receive()["text"]
        events, code = end(ws)
    assert error.code == ErrorCode.BAD_JSON and "UTF-8" in error.message
    assert SERVER_EVENTS.validate_json(echoed.encode("utf-8")).code == ErrorCode.BAD_CONFIG
    assert isinstance(events[-1], SummaryEvent) and code == 1000
    assert not logged_tracebacks(caplog)
    assert [r.getMessage().count("\n") for r in caplog.records if "bad_json" in r.getMessage()] == [0]


def test_uvicorns_invalid_utf8_traceback_becomes_one_warning_line():
    try:
        b"\xff".decode()
    except UnicodeDecodeError:
        record = logging.LogRecord("uvicorn.error", logging.ERROR, __file__, 1,
                                   "Invalid UTF-8 sequence received from client.", None, sys.exc_info())
    assert OneLineClientErrors().filter(record)
    assert (record.levelno, record.exc_info) == (logging.WARNING, None)
    line = logging.Formatter().format(record)
    assert "\n" not in line and "UnicodeDecodeError" in line


def test_the_transport_limit_lets_oversized_frames_reach_the_app():
    settings = EdgeSettings(max_frame_bytes=65536)
    assert transport_max_bytes(settings) == 2 * 65536 > settings.max_frame_bytes


def test_a_client_that_never_sends_a_frame_is_closed_after_the_first_frame_timeout():
    with client(FakePool(), first_frame_timeout_s=0.05) as app:
        with app.websocket_connect("/ws/audio") as ws:
            ready(ws)
            events, code = until_close(ws)  # the server waits out its timeout, then closes
        metrics = app.get("/metrics").text
    assert [type(e) for e in events] == [ErrorEvent, SummaryEvent] and code == 1008
    assert events[0].code == ErrorCode.FIRST_FRAME_TIMEOUT and events[1].segments == 0
    assert 'edge_session_timeouts_total{reason="first_frame_timeout"} 1.0' in metrics
    assert "edge_active_sessions 0.0" in metrics


def test_an_idle_client_gets_its_pending_results_and_summary_then_1008():
    pool = FakePool(gated=True)
    with client(pool, idle_timeout_s=0.1) as app:
        with app.websocket_connect("/ws/audio") as ws:
            ready(ws)
            ws.send_bytes(DIALOGUE_PCM)  # one frame, then silence: results are held by the gate
            timeout = next_event(ws)
            app.portal.call(pool.open_gate)
            events, code = until_close(ws)
        metrics = app.get("/metrics").text
    assert timeout.code == ErrorCode.IDLE_TIMEOUT and "0.1 s" in timeout.message
    assert [s.seq for s in events if isinstance(s, SegmentEvent)] == list(range(len(DIALOGUE)))
    assert isinstance(events[-1], SummaryEvent) and events[-1].segments == len(DIALOGUE) and code == 1008
    assert 'edge_session_timeouts_total{reason="idle_timeout"} 1.0' in metrics


def test_a_session_past_its_maximum_duration_ends_with_its_summary_and_1000():
    with client(FakePool(), max_session_s=0.2) as app:
        with app.websocket_connect("/ws/audio") as ws:
            ready(ws)
            send_audio(ws)
            events, code = until_close(ws)
        metrics = app.get("/metrics").text
    errors = [e for e in events if isinstance(e, ErrorEvent)]
    assert [e.code for e in errors] == [ErrorCode.MAX_DURATION] and code == 1000
    assert isinstance(events[-1], SummaryEvent)
    assert 'edge_session_timeouts_total{reason="max_duration"} 1.0' in metrics
