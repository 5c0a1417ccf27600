"""How long after a harmful word ends a live client learns of it (the flag lag), with interim
results on and off, at one stream and under load.

    python -m scripts.bench.flag_lag [--streams 1 2 4] [--repeats 1] [--interim both|on|off]
        [--set NAME=VALUE ...] [--url ws://HOST:PORT/ws/audio]

The recording: 16 English utterances of 2-10 s (espeak-ng), each with a profane word early, in
the middle or at the end, the pieces synthesised apart and joined by short gaps, so every word's
end is known and no pause ends a segment inside an utterance. N sessions stream it in real time
(20 ms frames on the wall clock, a frame sent once its audio would have been captured), started
a little apart, once with ``"interim": true`` and once without. Per profane word: the time from
its end to the first event (interim or segment) whose harmful span overlaps it. Also the segment
latency (the SLA's measure: p95 of ``latency_ms``), the interim spans their finals did not
confirm, and the spans that lie on none of the profane words (false flags). Without ``--url`` it
starts its own tritonserver and an edge (``--set`` its settings) on the exported models. Prints a
Markdown table for docs/PERFORMANCE.md.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import websockets

from moderation.events import HarmfulSpan
from moderation.protocol import SERVER_EVENTS, InterimEvent, SegmentEvent, SummaryEvent
from scripts.cli import MODEL_REPOSITORY, machine, parser, setup_logging
from scripts.service.launch import free_port, running_edge
from scripts.service.serve_triton import Ports, TritonServer
from scripts.speech import PAUSE_S, SAMPLE_RATE, join_words, pcm16

UTTERANCES = [
    ("", "fuck", "this map is way too big for a team of four players"),
    ("we were waiting at the bridge for ages and then", "shit", "they took the flag from behind"),
    ("stop camping in the corner you little", "bitch", ""),
    ("I told you twice to cover the left side", "shit", "now we lost the round"),
    ("", "shit", "you keep stealing my kills every single game"),
    ("he says the new patch is better than the old one but the", "fucking", "servers still lag"),
    ("nice shot on the last round that was a clean win for", "fuck", "sake"),
    ("if you leave the lobby again I will report you", "fucking", "idiot"),
    ("that was total", "bullshit", "and you know it"),
    ("", "damn", "I thought we had them on the last push"),
    ("you are such a", "dumbass", "when you rush alone like that"),
    ("give me the rifle or", "piss off", "and find your own"),
    ("the lag on this server is", "crap", "again tonight"),
    ("only a", "moron", "would jump off the tower before the round starts"),
    ("stop being a", "dick", "and share the loot with the team"),
    ("", "motherfucker", "that was my kill"),
]
"""(before, profane word, after): the word early, in the middle and last, in utterances of 2-10 s."""
GAP_S = 0.08
"""Silence between the pieces of an utterance: a pause between words, far below the segment's closing silence."""
FRAME_S = 0.02
STAGGER_S = 0.37
"""Sessions start this far apart, so that their segments do not close in lock-step."""
MATCH_TOLERANCE_S = 0.15
"""An event's span flags a word when it overlaps the word widened by this (Whisper's word times)."""
SLA_P95_MS = 3000.0


def recording() -> tuple[np.ndarray, list[tuple[float, float]]]:
    """The probe recording and (start, end) of each profane word in it."""
    parts, words, cursor = [], [], 0.0
    for before, word, after in UTTERANCES:
        pieces = [p for p in (before, word, after) if p]
        samples, times = join_words(pieces, [GAP_S] * (len(pieces) - 1) + [PAUSE_S])
        start, end = times[pieces.index(word)]
        words.append((round(cursor + start, 3), round(cursor + end, 3)))
        parts.append(samples)
        cursor += len(samples) / SAMPLE_RATE
    return np.concatenate(parts), words


@dataclass
class Session:
    lags_s: list[float] = field(default_factory=list)
    missed: int = 0
    latencies_ms: list[float] = field(default_factory=list)
    interim_spans: int = 0
    unconfirmed: int = 0
    false_interim: int = 0
    """Interim spans on none of the profane words."""
    false_final: int = 0
    failed: int = 0


def flags(span: HarmfulSpan, word: tuple[float, float]) -> bool:
    return span.start_s < word[1] + MATCH_TOLERANCE_S and span.end_s > word[0] - MATCH_TOLERANCE_S


async def one_session(url: str, pcm: bytes, words: list[tuple[float, float]], interim: bool,
                      delay_s: float) -> Session:
    await asyncio.sleep(delay_s)  # the stagger between sessions, not a wait for anything
    received: list[tuple[float, object]] = []
    async with websockets.connect(url, max_size=None) as ws:
        await ws.recv()  # ready
        await ws.send(json.dumps({"type": "config", "language": "en", "interim": interim}))
        await ws.recv()  # config

        async def read() -> None:
            async for text in ws:
                event = SERVER_EVENTS.validate_json(text)
                received.append((time.perf_counter(), event))
                if isinstance(event, SummaryEvent):
                    return

        reader = asyncio.create_task(read())
        frame = int(FRAME_S * SAMPLE_RATE) * 2
        t0 = time.perf_counter()
        for i, offset in enumerate(range(0, len(pcm), frame)):
            await asyncio.sleep(max(0.0, t0 + (i + 1) * FRAME_S - time.perf_counter()))  # real-time pacing
            await ws.send(pcm[offset:offset + frame])
        await ws.send(json.dumps({"type": "end"}))
        await reader
    return tally(received, words, t0)


def tally(received: list[tuple[float, object]], words: list[tuple[float, float]], t0: float) -> Session:
    result = Session()
    for _, event in received:
        false = sum(not any(flags(s, w) for w in words) for s in getattr(event, "harmful_spans", []))
        if isinstance(event, SegmentEvent):
            result.latencies_ms.append(event.latency_ms)
            result.unconfirmed += len(event.unconfirmed_interim or [])
            result.false_final += false
        elif isinstance(event, InterimEvent):
            result.interim_spans += len(event.harmful_spans)
            result.false_interim += false
        elif getattr(event, "type", "") == "error":
            result.failed += 1
    for word in words:
        first = next((at for at, e in received if isinstance(e, SegmentEvent | InterimEvent)
                      and any(flags(s, word) for s in e.harmful_spans)), None)
        if first is None:
            result.missed += 1
        else:
            result.lags_s.append(first - (t0 + word[1]))
    return result


async def level(url: str, pcm: bytes, words, streams: int, interim: bool, repeats: int) -> list[Session]:
    """``streams`` concurrent sessions, each streaming the recording ``repeats`` times in a row."""
    async def one_stream(delay_s: float) -> list[Session]:
        return [await one_session(url, pcm, words, interim, delay_s if r == 0 else 0.0) for r in range(repeats)]

    runs = await asyncio.gather(*(one_stream(i * STAGGER_S) for i in range(streams)))
    return [session for run in runs for session in run]


def row(streams: int, interim: bool, sessions: list[Session]) -> str:
    lags = np.array([lag for s in sessions for lag in s.lags_s])
    latencies = np.array([lat for s in sessions for lat in s.latencies_ms])
    p95_ms = float(np.percentile(latencies, 95)) if latencies.size else float("nan")
    failed = sum(s.failed for s in sessions)
    within = "yes" if p95_ms <= SLA_P95_MS and not failed else "no"
    words = sum(len(s.lags_s) + s.missed for s in sessions)
    lag = (f"{np.percentile(lags, 50):.2f} | {np.percentile(lags, 95):.2f} | {lags.max():.2f}" if lags.size
           else "– | – | –")
    return (f"| {streams} | {'on' if interim else 'off'} | {lag} | {sum(s.missed for s in sessions)} of {words} | "
            f"{p95_ms:.0f} | {within} | {sum(s.interim_spans for s in sessions)} | "
            f"{sum(s.unconfirmed for s in sessions)} | {sum(s.false_interim for s in sessions)} / "
            f"{sum(s.false_final for s in sessions)} | {failed} |")


async def measure(url: str, pcm: bytes, words, stream_counts: list[int], modes: list[bool],
                  repeats: int) -> list[str]:
    rows = []
    for streams in stream_counts:
        for interim in modes:
            rows.append(row(streams, interim, await level(url, pcm, words, streams, interim, repeats)))
            print(rows[-1], flush=True)
    return rows


def main(argv: list[str] | None = None) -> int:
    setup_logging()
    p = parser(__doc__)
    p.add_argument("--streams", type=int, nargs="+", default=[1, 2, 4])
    p.add_argument("--url", help="a running edge's /ws/audio (default: start tritonserver and an edge here)")
    p.add_argument("--repeats", type=int, default=1, help="each stream plays the recording this many times")
    p.add_argument("--interim", choices=["both", "on", "off"], default="both")
    p.add_argument("--repository", type=Path, default=MODEL_REPOSITORY,
                   help="the model repository of the tritonserver it starts")
    p.add_argument("--set", nargs="*", default=[], metavar="NAME=VALUE",
                   help="settings of the edge it starts, e.g. interim_interval_s=0.5")
    args = p.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp, contextlib.ExitStack() as stack:
        tmp = Path(tmp)
        samples, words = recording()
        url = args.url
        if url is None:
            ports = Ports(free_port(), free_port(), free_port())
            stack.enter_context(TritonServer(args.repository, ports, log_file=stack.enter_context(
                open(tmp / "triton.log", "wb"))))
            edge = stack.enter_context(running_edge(free_port(), f"127.0.0.1:{ports.grpc}",
                                                    stack.enter_context(open(tmp / "edge.log", "wb")),
                                                    **dict(item.split("=", 1) for item in args.set)))
            url = f"ws://{edge.address}/ws/audio"
        print(f"{len(words)} profane words in {len(samples) / SAMPLE_RATE:.0f} s of speech, played {args.repeats} "
              f"time(s) per stream, {machine()}, edge settings {args.set or 'default'}\n")
        print("| streams | interim | lag p50 s | lag p95 s | lag max s | words never flagged | segment p95 ms "
              "| within SLA | interim spans | unconfirmed | spans on no profane word (interim / final) | errors |")
        print("|---:|---|---:|---:|---:|---:|---:|---|---:|---:|---:|---:|")
        modes = {"both": [True, False], "on": [True], "off": [False]}[args.interim]
        asyncio.run(measure(url, pcm16(samples), words, args.streams, modes, args.repeats))
    return 0


if __name__ == "__main__":
    sys.exit(main())
