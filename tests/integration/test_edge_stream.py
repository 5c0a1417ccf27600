"""The real edge against the real Triton: reference client, formats, raw clients, isolation."""

from __future__ import annotations

import asyncio
import json
import subprocess

import pytest
import websockets

from edge.client import stream
from moderation.protocol import ConfigEvent, ErrorEvent, ReadyEvent, SegmentEvent, SummaryEvent
from scripts.speech import DIALOGUE, read_wav, speech_times, synthesize, wer

MAX_WER = 0.3


def check_dialogue(result, wav, signals: list[str]) -> list[SegmentEvent]:
    segments = result.of_type(SegmentEvent)
    assert not result.of_type(ErrorEvent), result.of_type(ErrorEvent)
    assert [s.seq for s in segments] == list(range(len(DIALOGUE))), segments
    for segment, sentence, (start, end) in zip(segments, DIALOGUE, speech_times(wav), strict=True):
        assert wer(sentence, segment.text) <= MAX_WER, (sentence, segment.text)
        # VAD edges plus pre/post-roll padding: within half a second of the true speech span.
        assert abs(segment.start_s - start) < 0.5 and abs(segment.end_s - end) < 0.5, (segment, start, end)
        assert segment.latency_ms > 0
        # clean speech: the lexicon finds nothing; an untrained classifier measures nothing, a trained
        # one (Korean, served after `make classifier`) gives its confidence, whichever way it decides
        assert "lexicon" not in segment.reasons and not [s for s in segment.harmful_spans if s.source == "lexicon"]
        assert (segment.confidence is None) == ("classifier" not in signals), segment
    assert isinstance(result.events[-1], SummaryEvent)
    assert result.events[-1].segments == len(DIALOGUE)
    return segments


def test_reference_client_in_real_time(edge, dialogue_wav, served_signals):
    result = asyncio.run(stream(dialogue_wav, f"ws://{edge}/ws/audio", realtime=True, language="en"))
    assert isinstance(result.events[0], ReadyEvent) and result.events[0].sample_rate == 16000
    check_dialogue(result, dialogue_wav, served_signals)
    summary = result.events[-1]
    assert summary.audio_seconds == pytest.approx(len(read_wav(dialogue_wav)) / 16000, abs=0.01)
    assert summary.p50_latency_ms > 0 and summary.p95_latency_ms >= summary.p50_latency_ms


def test_44k_stereo_float_gives_the_same_segments(edge, dialogue_wav, tmp_path, served_signals):
    converted = tmp_path / "dialogue_44k_stereo_f32.wav"
    subprocess.run(["sox", str(dialogue_wav), "-r", "44100", "-c", "2", "-e", "floating-point", "-b", "32",
                    str(converted)], check=True)
    reference = asyncio.run(stream(dialogue_wav, f"ws://{edge}/ws/audio", language="en"))
    result = asyncio.run(stream(converted, f"ws://{edge}/ws/audio", language="en"))
    config_ack = result.of_type(ConfigEvent)[0]
    assert (config_ack.sample_rate, config_ack.channels, config_ack.encoding) == (44100, 2, "pcm_f32le")
    ours_segments = check_dialogue(result, dialogue_wav, served_signals)
    for ours, theirs in zip(ours_segments, reference.of_type(SegmentEvent), strict=True):
        assert abs(ours.start_s - theirs.start_s) <= 0.07 and abs(ours.end_s - theirs.end_s) <= 0.07
        assert wer(theirs.text, ours.text) <= 0.2


def test_raw_binary_client_without_config_gets_results(edge, dialogue_wav):
    # Like `wscat -b`: no config, no end message, odd frame sizes that split samples.
    pcm = read_wav(dialogue_wav)
    data = (pcm * 32767).astype("<i2").tobytes()

    async def scenario():
        async with websockets.connect(f"ws://{edge}/ws/audio") as ws:
            ready = json.loads(await ws.recv())
            for offset in range(0, len(data), 1001):
                await ws.send(data[offset:offset + 1001])
            events = []
            while len([e for e in events if e["type"] == "segment"]) < len(DIALOGUE):
                events.append(json.loads(await asyncio.wait_for(ws.recv(), 60)))
            return ready, events

    ready, events = asyncio.run(scenario())
    # No config: the model's exported default language applies, and the edge reports it.
    assert ready["language"] == "ko" and ready["encoding"] == "pcm_s16le"
    segments = [e for e in events if e["type"] == "segment"]
    assert [s["seq"] for s in segments] == [0, 1, 2]
    assert all(s["text"] for s in segments)


SESSION_SENTENCES = [
    "Good morning and welcome to the server.",
    "Can somebody cover the left side please?",
    "I found a rare sword in the cave.",
    "Let us meet at the bridge after dinner.",
    "Please bring more potions next time.",
    "My internet connection is very slow today.",
    "Thank you for the help in the last match.",
    "We need one more player for the raid.",
    "Turn on your microphone so we can hear you.",
    "Open the door and wait for me.",
]
"""Ten clearly different sentences, one per concurrent session."""


def test_ten_concurrent_sessions_get_only_their_own_results(edge, tmp_path):
    wavs = [synthesize(s, tmp_path / f"speaker{i}.wav") for i, s in enumerate(SESSION_SENTENCES)]

    async def scenario():
        return await asyncio.gather(*(stream(w, f"ws://{edge}/ws/audio", language="en") for w in wavs))

    results = asyncio.run(scenario())
    assert len({r.events[-1].session_id for r in results}) == 10
    for own, result in enumerate(results):
        segments = result.of_type(SegmentEvent)
        assert len(segments) == 1, result.events[2:]
        text = segments[0].text
        rates = [wer(sentence, text) for sentence in SESSION_SENTENCES]
        assert rates[own] <= MAX_WER, (SESSION_SENTENCES[own], text)
        assert rates[own] == min(rates) and rates.count(min(rates)) == 1, (own, text, rates)
