"""BASELINE — the original design, kept only to measure against. Not part of the product.

A FastAPI WebSocket server that runs Whisper and the KoELECTRA classifier in-process, one
Whisper instance per connection, on fixed 1-second chunks: no VAD, no batching, no Triton.
Every chunk (silent or not) goes through openai-whisper's standard decode (which pads to the
30 s window) and then the classifier, and its result is sent back.

It speaks the subset of the edge protocol the load test needs (ready, config with
``language``, binary 16 kHz mono s16le audio, ``segment`` events with ``latency_ms``, end →
summary), and uses the same exported weights as the Triton models.

    python -m loadtest.baselines.inprocess_server --port 8100
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch
import uvicorn
import whisper
from fastapi import FastAPI, WebSocket, WebSocketDisconnect
from tokenizers import Tokenizer

from scripts.cli import MODEL_REPOSITORY, parser, setup_logging
from scripts.export.whisper_sources import exported_checkpoint

logger = logging.getLogger(__name__)

CHUNK_SAMPLES = 16000
"""The original design's fixed 1 s chunks of 16 kHz audio."""


class Classifier:
    def __init__(self, version_dir: Path):
        self.session = ort.InferenceSession(str(version_dir / "model.onnx"), providers=["CPUExecutionProvider"])
        self.tokenizer = Tokenizer.from_file(str(version_dir / "tokenizer.json"))
        self.tokenizer.enable_truncation(128)

    def harmful_prob(self, text: str) -> float:
        if not text.strip():
            return 0.0
        enc = self.tokenizer.encode(text)
        feeds = {name: np.array([values], dtype=np.int64) for name, values in
                 (("input_ids", enc.ids), ("attention_mask", enc.attention_mask), ("token_type_ids", enc.type_ids))}
        (logits,) = self.session.run(["logits"], feeds)
        return float(torch.softmax(torch.from_numpy(logits[0]), -1)[1])


def load_whisper(checkpoint: dict) -> whisper.model.Whisper:
    """A fresh Whisper for one connection (weights already in memory, as a long-lived process would)."""
    model = whisper.model.Whisper(whisper.model.ModelDimensions(**checkpoint["dims"]))
    model.load_state_dict(checkpoint["model_state_dict"])
    return model.eval()


def transcribe_chunk(model, classifier: Classifier, chunk: np.ndarray, language: str) -> tuple[str, float]:
    mel = whisper.log_mel_spectrogram(whisper.pad_or_trim(torch.from_numpy(chunk)), model.dims.n_mels)
    result = whisper.decode(model, mel, whisper.DecodingOptions(language=language, without_timestamps=True,
                                                                fp16=False))
    text = "" if result.no_speech_prob > 0.6 and result.avg_logprob < -1 else result.text.strip()
    return text, classifier.harmful_prob(text)


def create_app(repository: Path) -> FastAPI:
    app = FastAPI(title="BASELINE: in-process Whisper per connection, 1 s chunks")
    checkpoint = exported_checkpoint(repository / "whisper")  # either engine's export
    classifier = Classifier(repository / "koelectra" / "1")

    @app.websocket("/ws/audio")
    async def audio(websocket: WebSocket) -> None:
        await websocket.accept()
        await websocket.send_text(json.dumps({"type": "ready", "baseline": True, "sample_rate": 16000}))
        model = await asyncio.to_thread(load_whisper, checkpoint)
        try:
            await serve_connection(websocket, model, classifier)
        except WebSocketDisconnect:
            pass

    return app


async def serve_connection(websocket: WebSocket, model, classifier: Classifier) -> None:
    """Chunks are timestamped when their last byte arrives; one worker transcribes them in order,
    so a backlog shows up as latency, exactly as the original design would suffer it."""
    chunks: asyncio.Queue = asyncio.Queue()
    state = {"language": "ko"}
    worker = asyncio.create_task(process_chunks(websocket, model, classifier, chunks, state))
    buffer = bytearray()
    try:
        while True:
            message = await websocket.receive()
            if message["type"] == "websocket.disconnect":
                return
            if message.get("text"):
                payload = json.loads(message["text"])
                if payload.get("type") == "end":
                    break
                state["language"] = payload.get("language", state["language"])
                continue
            buffer += message.get("bytes") or b""
            while len(buffer) >= CHUNK_SAMPLES * 2:
                await chunks.put((bytes(buffer[: CHUNK_SAMPLES * 2]), time.perf_counter()))
                del buffer[: CHUNK_SAMPLES * 2]
        if buffer:
            await chunks.put((bytes(buffer), time.perf_counter()))
        await chunks.put(None)
        await worker
    finally:
        worker.cancel()


async def process_chunks(websocket, model, classifier, chunks: asyncio.Queue, state: dict) -> None:
    seq, latencies = 0, []
    while (item := await chunks.get()) is not None:
        latencies.append(await send_chunk(websocket, model, classifier, item[0], state["language"], seq, item[1]))
        seq += 1
    await send_summary(websocket, latencies)


async def send_summary(websocket: WebSocket, latencies: list[float]) -> None:
    """The session's summary (segments and latency percentiles), then a normal close."""
    p50, p95 = (float(np.percentile(latencies, q)) for q in (50, 95)) if latencies else (None, None)
    await websocket.send_text(json.dumps({"type": "summary", "segments": len(latencies), "p50_latency_ms": p50,
                                          "p95_latency_ms": p95}))
    await websocket.close(1000)


def segment_message(seq: int, start_s: float, end_s: float, text: str, prob: float, latency_ms: float) -> str:
    """A ``segment`` event of the edge's protocol, as much of it as the load test reads."""
    return json.dumps({"type": "segment", "seq": seq, "start_s": start_s, "end_s": end_s, "text": text,
                       "is_harmful": prob >= 0.5, "confidence": max(prob, 1 - prob),
                       "latency_ms": round(latency_ms, 1)}, ensure_ascii=False)


async def send_chunk(websocket, model, classifier, chunk: bytes, language: str, seq: int, received_at: float):
    audio = np.frombuffer(chunk, dtype="<i2").astype(np.float32) / 32768.0
    text, prob = await asyncio.to_thread(transcribe_chunk, model, classifier, audio, language)
    latency_ms = (time.perf_counter() - received_at) * 1000
    await websocket.send_text(segment_message(seq, seq * 1.0, seq * 1.0 + len(audio) / 16000, text, prob,
                                              latency_ms))
    return latency_ms


def main() -> None:
    setup_logging()
    p = parser(__doc__)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8100)
    p.add_argument("--model-repository", type=Path, default=MODEL_REPOSITORY)
    args = p.parse_args()
    uvicorn.run(create_app(args.model_repository), host=args.host, port=args.port, log_level="warning")


if __name__ == "__main__":
    main()
