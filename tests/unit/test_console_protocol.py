"""The console's protocol module (console/static/protocol.js) in Node, against the Python
definitions it mirrors: config frames moderation/protocol.py accepts, docs/PROTOCOL.md's examples,
the reference client's backoff (moderation/client.py), resumption after a reconnection (§7), and the
harmful-word highlighting from spans."""

from __future__ import annotations

import json
import random
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from moderation import client as reference
from moderation.protocol import ClientConfig
from tests.unit.test_protocol import documented_examples

CHECK_SCRIPT = Path(__file__).parent / "node" / "protocol_check.mjs"
NODE = shutil.which("node")
pytestmark = pytest.mark.skipif(NODE is None, reason="node (Node.js 20) is not installed: the console's "
                                "protocol module is an ES module and is tested in Node")

HARMFUL = next(e for e in documented_examples() if e["type"] == "segment" and e["is_harmful"])
HARMFUL_CASE = {"text": HARMFUL["text"], "spans": HARMFUL["harmful_spans"], "words": HARMFUL["words"]}
BAD_LANGUAGE = {"type": "error", "code": "bad_config",
                "message": "language: Value error, 'xx' is not a Whisper language code; use one such as 'ko', "
                           "'en' or 'ja'"}
CASES = {
    "delays": [[attempt, r] for attempt in range(1, 9) for r in (0.0, 0.999999)],
    "configs": [{}, {"language": "en"}, {"language": "ja", "wordTimestamps": True}, {"language": "", "interim": True}],
    "events": [json.dumps(e) for e in documented_examples()] + ['{"type": "partial"}', "[1]", "null"],
    "errors": [BAD_LANGUAGE, {"type": "error", "code": "bad_config", "message": "sample_rate: too high"},
               {"type": "error", "code": "idle_timeout", "message": "no frame for 60 s"}],
    "highlights": [
        HARMFUL_CASE,  # with words: by their times
        {**HARMFUL_CASE, "words": None},  # by the span's text
        {"text": "You are a Stupid idiot, really", "words": None,
         "spans": [{"start_s": 0, "end_s": 1, "text": "stupid idiot"}]},
        {"text": "son of a gun here", "spans": [{"start_s": 1.0, "end_s": 1.9, "text": "son of a"}],
         "words": [{"word": " son", "start_s": 1.0, "end_s": 1.3}, {"word": " of", "start_s": 1.3, "end_s": 1.5},
                   {"word": " a", "start_s": 1.5, "end_s": 1.9}, {"word": " gun", "start_s": 1.9, "end_s": 2.2},
                   {"word": " here", "start_s": 2.2, "end_s": 2.5}]},
        {"text": "clean words only", "spans": [], "words": None},
    ],
    "resume": [
        {"sessionStart": 32000, "sentUpTo": 96000, "gotReady": True, "summaryAudioSeconds": 3.5},
        {"sessionStart": 32000, "sentUpTo": 96000, "gotReady": False, "summaryAudioSeconds": None},
        {"sessionStart": 32000, "sentUpTo": 96000, "gotReady": True, "summaryAudioSeconds": None},
        {"sessionStart": 0, "sentUpTo": 1600, "gotReady": True, "summaryAudioSeconds": 0.2},
    ],
    "percentiles": [[[812.4, 640.2, 1410.7, 920.1, 30.0], 50], [[812.4, 640.2, 1410.7, 920.1, 30.0], 95],
                    [[5.0], 95]],
    "socket_urls": [["http://edge:8000/console", ""], ["https://edge.example/console", "sme_a b&c"],
                    ["https://proxy.example/moderation/console", "jwt.x.y"]],
    "ledgers": [
        {"maxSamples": 10_000, "frameSamples": 320, "frames": 5, "since": 480},
        {"maxSamples": 960, "frameSamples": 320, "frames": 5, "since": 0},
        {"maxSamples": 10_000, "frameSamples": 320, "frames": 5, "since": 1600},
        {"maxSamples": 10_000, "frameSamples": 320, "frames": 5, "since": 640},
    ],
    "bleeps": [[[{"start_s": 1.0, "end_s": 1.5}, {"start_s": 1.4, "end_s": 2.0}, {"start_s": 3, "end_s": 3.2}], 10.0]],
    # an interim span bleeped [11.0, 11.5]: its final's [11.002, 11.5] is not bleeped again, [11.4, 12.0] is
    "not_yet_bleeped": [[[[11.002, 11.5], [11.4, 12.0]], [[11.0, 11.5]]], [[[1.0, 2.0]], []]],
    "levels": [[0, 320], [32767, 320], [328, 320]],
}


@pytest.fixture(scope="module")
def answers() -> dict:
    done = subprocess.run([NODE, str(CHECK_SCRIPT)], input=json.dumps(CASES), capture_output=True, text=True,
                          timeout=60, check=True)
    return json.loads(done.stdout)


def test_the_frames_and_the_backoff_are_the_reference_clients(answers, monkeypatch):
    assert answers["frame_samples"] == 16000 * reference.FRAME_MS // 1000
    policy = answers["reconnect"]
    assert (policy["initial"], policy["factor"], policy["max"], policy["jitter"], policy["attempts"]) == (
        reference.RECONNECT_INITIAL_DELAY_S, reference.RECONNECT_FACTOR, reference.RECONNECT_MAX_DELAY_S,
        reference.RECONNECT_JITTER, reference.RECONNECT_MAX_ATTEMPTS)
    assert set(policy["codes"]) == reference.RECONNECT_CLOSE_CODES
    assert set(policy["errors"]) == {code.value for code in reference.RECONNECT_ERRORS}
    expected = []
    for attempt, r in CASES["delays"]:
        monkeypatch.setattr(random, "random", lambda r=r: r)
        expected.append(reference.Backoff().delay_s(attempt))
    assert answers["delays"] == pytest.approx(expected)


def test_config_frames_are_what_the_edge_accepts(answers):
    configs = [ClientConfig.model_validate_json(frame) for frame in answers["configs"]]
    assert all((c.sample_rate, c.encoding, c.channels) == (16000, "pcm_s16le", 1) for c in configs)
    assert [c.interim for c in configs] == [False, False, False, True]
    assert [(c.language, c.word_timestamps) for c in configs] == [(None, False), ("en", False), ("ja", True),
                                                                   (None, False)]
    assert json.loads(answers["end_frame"]) == {"type": "end"}


def test_every_documented_event_parses_and_nothing_else_does(answers):
    examples = documented_examples()
    assert answers["parsed"][:len(examples)] == [e["type"] for e in examples]
    assert all(answer.startswith("error: ") for answer in answers["parsed"][len(examples):])


def test_a_bad_language_is_told_apart_from_other_config_errors(answers):
    assert answers["bad_language"] == [[True, "bad_language", True], [False, "bad_config", True],
                                       [False, "idle_timeout", False]]


def marked(parts: list[dict]) -> list[str]:
    return [part["text"] for part in parts if part["harmful"]]


def test_harmful_words_are_marked_by_word_times_or_by_span_text(answers):
    by_times, by_text, case_insensitive, merged, clean = answers["highlights"]
    assert marked(by_times) == marked(by_text) == ["fuck"]
    assert "".join(p["text"] for p in by_times) == HARMFUL["text"]
    assert marked(case_insensitive) == ["Stupid idiot"]
    assert marked(merged) == ["son of a"]
    assert clean == [{"text": "clean words only", "harmful": False}]


def test_a_new_session_goes_on_where_the_edge_stopped_reading(answers):
    # after a summary: its audio_seconds on; after a refusal: where it would have started;
    # lost without a summary: past what was sent (the reference client's AudioFeed.go_on_after)
    assert answers["resume"] == [32000 + 56000, 32000, 96000, 1600]


def test_running_percentiles_are_numpys_linear_ones(answers):
    expected = [float(np.percentile(values, q)) for values, q in CASES["percentiles"]]
    assert answers["percentiles"] == pytest.approx(expected)


def test_the_socket_url_follows_the_page_and_carries_the_token(answers):
    assert answers["socket_urls"] == ["ws://edge:8000/ws/audio", "wss://edge.example/ws/audio?token=sme_a+b%26c",
                                      "wss://proxy.example/moderation/ws/audio?token=jwt.x.y"]


def test_the_ledger_keeps_recent_audio_and_cuts_from_any_sample(answers):
    recent, bounded, caught_up, on_a_boundary = answers["ledgers"]
    assert (recent["start"], recent["end"], recent["samples"]) == (480, 1600, list(range(480, 1600)))
    assert caught_up["samples"] == [] and on_a_boundary["samples"] == list(range(640, 1600))
    assert (bounded["oldest"], bounded["start"], bounded["samples"]) == (640, 640, list(range(640, 1600)))


def test_overlapping_spans_make_one_bleep_in_stream_time(answers):
    assert answers["bleeps"] == [[[11.0, 12.0], [13.0, 13.2]]]
    assert answers["not_yet_bleeped"] == [[[11.4, 12.0]], [[1.0, 2.0]]]


def test_the_meter_maps_silence_to_zero_and_full_scale_to_one(answers):
    (silent_db, silent), (full_db, full), (quiet_db, quiet) = answers["levels"]
    assert silent_db is None and silent == 0  # -Infinity is null in JSON
    assert full_db == pytest.approx(0, abs=0.01) and full == pytest.approx(1, abs=0.001)
    assert quiet_db == pytest.approx(-40, abs=0.1) and quiet == pytest.approx(1 / 3, abs=0.01)
