"""A real-time user beside a bulk flooder: the real-time stream's latency alone, beside a client
that uploads speech as fast as the socket takes it, and the same with the edge's fairness off.

All three in ONE run, against one tritonserver (started here from the exported repository
unless --triton names one), each scenario on its own edge process:

    python -m loadtest.flood [--duration 60] [--triton HOST:PORT]

The results go into docs/PERFORMANCE.md (fairness). The scenario functions are also what the
integration test of fairness drives.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import websockets

from scripts.cli import MODEL_REPOSITORY, parser, setup_logging
from scripts.service.launch import free_port, running_edge
from scripts.service.serve_triton import Ports, TritonServer
from scripts.speech import DIALOGUE_WAV, pcm16, read_wav

logger = logging.getLogger(__name__)

FRAME_BYTES = 640
"""20 ms of 16 kHz mono s16le per frame, as a desktop capture loop sends."""
FRAME_S = 0.02
UPLOAD_REPEATS = 3
"""Copies of the dialogue in one flooder upload; the flooder uploads again until the real-time stream ends."""
FAIRNESS_OFF = {"bulk_lead_s": 1e9}
"""Edge settings under which no session ever counts as bulk: every segment goes at real-time
priority with no share to wait for (the behaviour before fairness)."""


@dataclass
class StreamReport:
    """The per-segment events (results and errors) one client received."""

    events: list[dict] = field(default_factory=list)

    @property
    def segments(self) -> list[dict]:
        return [e for e in self.events if e.get("type") == "segment"]

    @property
    def errors(self) -> list[dict]:
        return [e for e in self.events if e.get("type") == "error" and "seq" in e]

    def percentile_ms(self, q: float) -> float | None:
        latencies = [e["latency_ms"] for e in self.segments]
        return float(np.percentile(latencies, q)) if latencies else None


async def _send(ws, pcm: bytes, realtime: bool) -> None:
    """Every frame of ``pcm``: paced at real time (a capture loop), or as fast as the socket takes them."""
    loop = asyncio.get_running_loop()
    start = loop.time()
    for index, offset in enumerate(range(0, len(pcm), FRAME_BYTES)):
        if realtime and (delay := start + index * FRAME_S - loop.time()) > 0:
            await asyncio.sleep(delay)  # the pace of a real microphone, not a race fix
        await ws.send(pcm[offset:offset + FRAME_BYTES])


async def stream(url: str, pcm: bytes, report: StreamReport, realtime: bool, language: str = "en") -> None:
    """One session: config, the audio, end; every per-segment event goes into ``report``."""
    async with websockets.connect(url, max_size=None) as ws:
        await ws.send(json.dumps({"type": "config", "language": language}))

        async def receive() -> None:
            async for message in ws:
                event = json.loads(message)
                if "seq" in event:
                    report.events.append(event)

        receiver = asyncio.create_task(receive())
        await _send(ws, pcm, realtime)
        await ws.send(json.dumps({"type": "end"}))
        await receiver  # until the server closes, after the summary


async def flood(url: str, pcm: bytes, report: StreamReport) -> None:
    """Upload ``pcm`` as fast as possible, again and again, until cancelled."""
    while True:
        await stream(url, pcm, report, realtime=False)


async def realtime_beside(url: str, realtime_pcm: bytes, flood_pcm: bytes | None) -> tuple[StreamReport, StreamReport]:
    """The real-time stream, beside a flooder unless ``flood_pcm`` is None; the flooder stops
    (leaves mid-upload) when the real-time stream has its last result."""
    realtime, bulk = StreamReport(), StreamReport()
    flooder = asyncio.create_task(flood(url, flood_pcm, bulk)) if flood_pcm is not None else None
    try:
        await stream(url, realtime_pcm, realtime, realtime=True)
    finally:
        if flooder is not None:
            flooder.cancel()
            with contextlib.suppress(asyncio.CancelledError, websockets.ConnectionClosed):
                await flooder
    return realtime, bulk


def dialogue_pcm(seconds: float) -> bytes:
    """The English dialogue looped to at least ``seconds``."""
    speech = read_wav(DIALOGUE_WAV)
    return pcm16(np.tile(speech, int(np.ceil(seconds * 16000 / len(speech)))))


@contextlib.contextmanager
def triton_for(args) -> Iterator[str]:
    if args.triton:
        yield args.triton
        return
    ports = Ports(free_port(), free_port(), free_port())
    with tempfile.TemporaryDirectory() as logs, open(Path(logs) / "triton.log", "wb") as log, \
            TritonServer(MODEL_REPOSITORY, ports, log_file=log):
        yield f"127.0.0.1:{ports.grpc}"


SCENARIOS = {
    "real-time stream alone": ({}, False),
    "beside a bulk flooder": ({}, True),
    "beside a bulk flooder, fairness off": (FAIRNESS_OFF, True),
}


def row(name: str, realtime: StreamReport, bulk: StreamReport, flooded: bool) -> str:
    def ms(value: float | None) -> str:
        return "–" if value is None else f"{value:.0f}"

    bulk_cells = f"{len(bulk.segments)} | {len(bulk.errors)}" if flooded else "– | –"
    return (f"| {name} | {len(realtime.segments)} | {len(realtime.errors)} | {ms(realtime.percentile_ms(50))} | "
            f"{ms(realtime.percentile_ms(95))} | {bulk_cells} |")


def main(argv: list[str] | None = None) -> int:
    setup_logging()
    p = parser(__doc__)
    p.add_argument("--duration", type=float, default=60.0, help="seconds of real-time speech per scenario")
    p.add_argument("--triton", help="gRPC address of a running tritonserver (default: start one)")
    args = p.parse_args(argv)
    realtime_pcm, flood_pcm = dialogue_pcm(args.duration), pcm16(np.tile(read_wav(DIALOGUE_WAV), UPLOAD_REPEATS))
    lines = ["| scenario | real-time segments | real-time errors | real-time p50 ms | real-time p95 ms "
             "| bulk results | bulk errors |", "|---|---:|---:|---:|---:|---:|---:|"]
    with triton_for(args) as triton, tempfile.TemporaryDirectory() as logs:
        for name, (settings, flooded) in SCENARIOS.items():
            with open(Path(logs) / "edge.log", "ab") as log, running_edge(free_port(), triton, log, **settings) as edge:
                realtime, bulk = asyncio.run(realtime_beside(f"ws://{edge.address}/ws/audio", realtime_pcm,
                                                             flood_pcm if flooded else None))
            lines.append(row(name, realtime, bulk, flooded))
            logger.info("%s", lines[-1])
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
