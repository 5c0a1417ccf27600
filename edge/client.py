"""Reference desktop-like client: stream a WAV file in 20 ms frames and print each result.

    python -m edge.client FILE.wav --url ws://localhost:8000/ws/audio [--realtime] [--language en]

16-bit WAVs are sent as pcm_s16le, 32-bit float WAVs as pcm_f32le; a config frame announces
the file's rate and channels whenever they differ from the 16 kHz mono s16le default.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
import wave
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

import websockets

from edge.protocol import SERVER_EVENTS, AnyServerEvent, ClientConfig, ErrorEvent, sample_bytes

FRAME_MS = 20
"""Frame length a desktop capture loop typically sends."""
WAVE_FORMAT_IEEE_FLOAT = 3
EventT = TypeVar("EventT")


@dataclass
class WavAudio:
    data: bytes
    sample_rate: int
    channels: int
    encoding: str

    @property
    def frame_bytes(self) -> int:
        return self.sample_rate * FRAME_MS // 1000 * sample_bytes(self.encoding) * self.channels


@dataclass
class StreamResult:
    events: list[AnyServerEvent] = field(default_factory=list)
    """Every event the server sent, parsed (and so checked) against the protocol models."""

    def of_type(self, kind: type[EventT]) -> list[EventT]:
        return [e for e in self.events if isinstance(e, kind)]


def read_wav(path: Path) -> WavAudio:
    """Read 16-bit PCM with the wave module, or 32-bit IEEE float by parsing the RIFF chunks."""
    raw = path.read_bytes()
    fmt_at = raw.find(b"fmt ")
    if fmt_at < 0:
        raise ValueError(f"{path} is not a WAV file")
    tag, channels, rate = int.from_bytes(raw[fmt_at + 8:fmt_at + 10], "little"), \
        int.from_bytes(raw[fmt_at + 10:fmt_at + 12], "little"), int.from_bytes(raw[fmt_at + 12:fmt_at + 16], "little")
    bits = int.from_bytes(raw[fmt_at + 22:fmt_at + 24], "little")
    if tag == WAVE_FORMAT_IEEE_FLOAT or (tag == 0xFFFE and bits == 32):
        data_at = raw.find(b"data")
        size = int.from_bytes(raw[data_at + 4:data_at + 8], "little")
        return WavAudio(raw[data_at + 8:data_at + 8 + size], rate, channels, "pcm_f32le")
    with wave.open(str(path)) as w:
        if w.getsampwidth() != 2:
            raise ValueError(f"{path}: only 16-bit PCM or 32-bit float WAVs are supported")
        return WavAudio(w.readframes(w.getnframes()), w.getframerate(), w.getnchannels(), "pcm_s16le")


def config_frame(audio: WavAudio, language: str | None) -> str | None:
    """The config text frame the file needs, or None when the server's defaults fit it."""
    fields = {}
    if (audio.sample_rate, audio.channels, audio.encoding) != (16000, 1, "pcm_s16le"):
        fields.update(sample_rate=audio.sample_rate, channels=audio.channels, encoding=audio.encoding)
    if language:
        fields["language"] = language
    if not fields:
        return None
    return json.dumps({"type": "config", **ClientConfig(**fields).model_dump(exclude_unset=True)})


async def _send_audio(ws, audio: WavAudio, realtime: bool) -> None:
    start = time.perf_counter()
    for i, offset in enumerate(range(0, len(audio.data), audio.frame_bytes)):
        if realtime:  # pace like a capture device: frame i leaves at i * 20 ms
            await asyncio.sleep(max(0.0, start + i * FRAME_MS / 1000 - time.perf_counter()))
        await ws.send(audio.data[offset:offset + audio.frame_bytes])
    await ws.send(json.dumps({"type": "end"}))


async def stream(path: Path, url: str, realtime: bool = False, language: str | None = None,
                 on_event=None) -> StreamResult:
    """Stream a WAV file through the edge and collect every event until the server closes."""
    audio, result = read_wav(path), StreamResult()
    async with websockets.connect(url, max_size=None) as ws:
        result.events.append(SERVER_EVENTS.validate_json(await ws.recv()))  # ready
        config = config_frame(audio, language)
        if config:
            await ws.send(config)
        sender = asyncio.create_task(_send_audio(ws, audio, realtime))
        async for message in ws:
            event = SERVER_EVENTS.validate_json(message)
            result.events.append(event)
            if on_event:
                on_event(event)
        await sender
    return result


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("wav", type=Path)
    p.add_argument("--url", default="ws://localhost:8000/ws/audio")
    p.add_argument("--realtime", action="store_true", help="pace frames at real time, like a live capture")
    p.add_argument("--language", help="Whisper language code, e.g. en (default: the model's, ko as exported)")
    args = p.parse_args(argv)
    result = asyncio.run(stream(args.wav, args.url, args.realtime, args.language,
                                on_event=lambda e: print(e.wire(), flush=True)))
    return 1 if result.of_type(ErrorEvent) else 0


if __name__ == "__main__":
    sys.exit(main())
