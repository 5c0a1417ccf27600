"""The comparison's streaming peer (loadtest/baselines/streaming_peer.py, system (d)): a real
server on the exported weights, driven over the edge's wire protocol and by the same Locust user."""

from __future__ import annotations

import json
import wave

import pytest
import websocket

from loadtest.compare import baseline
from scripts.cli import REPO_ROOT
from scripts.speech import wer
from tests.integration.test_loadtest import locust

DIALOGUE = REPO_ROOT / "loadtest" / "audio" / "dialogue_en"
FRAME_BYTES = 640
"""20 ms of 16 kHz s16le, as the Locust user sends."""


@pytest.fixture(scope="module")
def peer(model_repository, tmp_path_factory) -> str:
    with baseline(model_repository, tmp_path_factory.mktemp("peer"), "streaming_peer") as url:
        yield url


def test_the_peer_segments_transcribes_and_summarises_a_stream(peer):
    sentences = json.loads(DIALOGUE.with_suffix(".json").read_text())["sentences"]
    with wave.open(str(DIALOGUE.with_suffix(".wav"))) as w:
        audio = w.readframes(w.getnframes())
    ws = websocket.create_connection(f"{peer}/ws/audio", timeout=120)
    try:
        assert json.loads(ws.recv())["type"] == "ready"
        ws.send(json.dumps({"type": "config", "language": "en"}))
        for i in range(0, len(audio), FRAME_BYTES):
            ws.send_binary(audio[i:i + FRAME_BYTES])
        ws.send(json.dumps({"type": "end"}))
        events = [json.loads(ws.recv())]
        while events[-1]["type"] != "summary":
            events.append(json.loads(ws.recv()))
    finally:
        ws.close()
    segments = [e for e in events if e["type"] == "segment"]
    assert [e["seq"] for e in segments] == list(range(len(sentences)))
    for sentence, event in zip(sentences, segments, strict=True):
        assert wer(sentence, event["text"]) <= 0.25, (sentence, event["text"])
        assert event["latency_ms"] > 0 and event["end_s"] > event["start_s"]
    assert events[-1]["segments"] == len(sentences)


def test_the_same_locust_user_drives_the_peer(peer, tmp_path):
    proc, rows = locust(peer.removeprefix("ws://"), tmp_path, 120_000, users=1)
    output = proc.stdout + proc.stderr
    segment = rows.get(("WS", "segment"))
    assert segment is not None and int(segment["Request Count"]) >= 3, output
    assert int(segment["Failure Count"]) == 0 and proc.returncode == 0, output
    assert "Traceback" not in output, output
