"""COMPARISON BASELINE (d): a streaming peer, built the way WhisperLive-style servers serve streams.
Not part of the product; kept only to measure this system against.

A FastAPI WebSocket server. Per connection, a VAD (the edge's own WebRTC segmenter, with the
edge's default limits, so both systems see the same segments) cuts the stream into speech
segments; each segment is transcribed in-process by faster-whisper (CTranslate2 int8, beam 1,
no timestamps, the same weights the Triton export serves), then classified by KoELECTRA (ONNX,
in-process). One faster-whisper model, with two workers on every core, serves every connection:
a user who runs faster-whisper in-process has no cross-connection batching and no Triton, which
is the difference this baseline measures; the engine, weights, threads and VAD are the same.
faster-whisper decodes with its defaults (greedy, and its temperature fallback on a segment that
fails its compression or log-probability checks), as WhisperLive-style servers run it.

It speaks the subset of the edge protocol the Locust user needs (ready, config with
``language``, binary 16 kHz mono s16le audio, ``segment`` events with ``latency_ms`` from the
segment's last audio frame to its result, end → summary).

    python -m loadtest.baselines.streaming_peer --port 8101
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import uvicorn
from fastapi import FastAPI, WebSocket, WebSocketDisconnect

from loadtest.baselines.inprocess_server import Classifier, segment_message, send_summary
from moderation.settings import ModerationSettings
from moderation.vad import Segment, Segmenter, SegmenterLimits
from scripts.cli import MODEL_REPOSITORY, REPO_ROOT, parser, setup_logging
from scripts.export import triton_config
from scripts.export.triton_config import WhisperValues
from scripts.export.whisper_sources import offline_ct2_dir

logger = logging.getLogger(__name__)

COMPUTE_TYPE = "int8"
"""faster-whisper's usual CPU setting (and the second seed's)."""
NUM_WORKERS = 2
"""faster-whisper's ``num_workers``: two connections' segments may run at once, each on every core,
the same overlap the whisper model's CTranslate2 engine gets from ``--inter-threads 2`` (with one
worker the peer holds fewer streams: every call waits for the previous one)."""


def ct2_model_dir(repository: Path) -> Path:
    """The CTranslate2 weights the repository serves, or the offline base it was made from."""
    values = triton_config.read(repository / "whisper", WhisperValues)
    if values.engine == "ctranslate2":
        return repository / "whisper" / "1" / values.checkpoint
    return offline_ct2_dir(REPO_ROOT / ".cache")


@dataclass
class Peer:
    """What every connection shares: one faster-whisper model and one classifier."""

    whisper: object
    classifier: Classifier
    limits: SegmenterLimits

    def moderate(self, audio: np.ndarray, language: str) -> tuple[str, float]:
        segments, _ = self.whisper.transcribe(audio, language=language, beam_size=1, without_timestamps=True,
                                              condition_on_previous_text=False, vad_filter=False)
        text = " ".join(s.text.strip() for s in segments).strip()
        return text, self.classifier.harmful_prob(text)


@dataclass
class Connection:
    """One stream: its VAD, its queue of segments, and its latencies."""

    peer: Peer
    websocket: WebSocket
    segmenter: Segmenter
    language: str = "ko"
    queue: asyncio.Queue = field(default_factory=asyncio.Queue)
    latencies: list[float] = field(default_factory=list)

    async def receive(self) -> None:
        """Audio and control frames until ``end`` (or a disconnect); segments go to the queue."""
        while True:
            message = await self.websocket.receive()
            if message["type"] == "websocket.disconnect":
                raise WebSocketDisconnect()
            if message.get("text"):
                payload = json.loads(message["text"])
                if payload.get("type") == "end":
                    break
                self.language = payload.get("language", self.language)
                continue
            data = message.get("bytes") or b""
            samples = np.frombuffer(data[: len(data) // 2 * 2], dtype="<i2").astype(np.float32) / 32768.0
            for segment in self.segmenter.feed(samples):
                self.queue.put_nowait(segment)
        for segment in self.segmenter.flush():
            self.queue.put_nowait(segment)
        self.queue.put_nowait(None)

    async def transcribe_in_order(self) -> None:
        seq = 0
        while (segment := await self.queue.get()) is not None:
            await self.send_segment(segment, seq)
            seq += 1
        await send_summary(self.websocket, self.latencies)

    async def send_segment(self, segment: Segment, seq: int) -> None:
        text, prob = await asyncio.to_thread(self.peer.moderate, segment.audio, self.language)
        latency_ms = (time.perf_counter() - segment.closed_at) * 1000
        self.latencies.append(latency_ms)
        await self.websocket.send_text(segment_message(seq, segment.start_s, segment.end_s, text, prob, latency_ms))


def create_app(repository: Path, cpu_threads: int = 0) -> FastAPI:
    from faster_whisper import WhisperModel

    app = FastAPI(title="COMPARISON BASELINE (d): streaming peer, faster-whisper in-process")
    settings = ModerationSettings()
    peer = Peer(WhisperModel(str(ct2_model_dir(repository)), device="cpu", compute_type=COMPUTE_TYPE,
                             cpu_threads=cpu_threads or len(os.sched_getaffinity(0)), num_workers=NUM_WORKERS),
                Classifier(repository / "koelectra" / "1"), SegmenterLimits.from_settings(settings))

    @app.websocket("/ws/audio")
    async def audio(websocket: WebSocket) -> None:
        await websocket.accept()
        await websocket.send_text(json.dumps({"type": "ready", "baseline": True, "sample_rate": 16000}))
        connection = Connection(peer, websocket, Segmenter(peer.limits))
        worker = asyncio.create_task(connection.transcribe_in_order())
        try:
            await connection.receive()
            await worker
        except WebSocketDisconnect:
            pass
        finally:
            worker.cancel()

    return app


def main() -> None:
    setup_logging()
    p = parser(__doc__)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8101)
    p.add_argument("--model-repository", type=Path, default=MODEL_REPOSITORY)
    p.add_argument("--cpu-threads", type=int, default=0, help="faster-whisper's cpu_threads; 0 = every core")
    args = p.parse_args()
    uvicorn.run(create_app(args.model_repository, args.cpu_threads), host=args.host, port=args.port,
                log_level="warning")


if __name__ == "__main__":
    main()
