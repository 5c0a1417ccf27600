"""Reference desktop-like client: stream a WAV file in 20 ms frames and print each result.

    python -m edge.client FILE.wav --url ws://localhost:8000/ws/audio [--realtime] [--language en]
        [--words] [--bleep OUT.wav | --duck DB --bleep OUT.wav] [--cafile CA.pem]

An edge with authentication on needs a credential: an API key or a JWT in EDGE_TOKEN (or
``--token``; the environment keeps it out of shell history and ``ps``). ``wss://`` URLs use TLS,
trusting the system's CAs or ``--cafile`` (docs/SECURITY.md).

``--bleep OUT.wav`` writes the input with a 1 kHz tone over each harmful span (``--duck DB``
lowers the volume there by DB decibels instead): what a desktop client does to its playback.

16-bit WAVs are sent as pcm_s16le, 32-bit float WAVs as pcm_f32le; a config frame announces
the file's rate and channels whenever they differ from the 16 kHz mono s16le default.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import ssl
import sys
import time
import wave
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

import websockets
from pydantic import ValidationError

from edge.bleep import WAVE_FORMAT_IEEE_FLOAT, censor, write_wav
from edge.protocol import (
    SERVER_EVENTS,
    WHISPER_LANGUAGES,
    AnyServerEvent,
    ClientConfig,
    ErrorEvent,
    SegmentEvent,
    sample_bytes,
)

FRAME_MS = 20
"""Frame length a desktop capture loop typically sends."""
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

    def harmful_spans(self) -> list[tuple[float, float]]:
        """(start_s, end_s) of every harmful span, in stream seconds."""
        return [(h.start_s, h.end_s) for s in self.of_type(SegmentEvent) for h in s.harmful_spans]


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


def config_frame(audio: WavAudio, language: str | None, word_timestamps: bool = False) -> str | None:
    """The config text frame the file needs, or None when the server's defaults fit it;
    ValidationError for a file or language the protocol does not take."""
    fields: dict = {}
    if (audio.sample_rate, audio.channels, audio.encoding) != (16000, 1, "pcm_s16le"):
        fields.update(sample_rate=audio.sample_rate, channels=audio.channels, encoding=audio.encoding)
    if language:
        fields["language"] = language
    if word_timestamps:
        fields["word_timestamps"] = True
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


def _parse(message: str, strict: bool) -> AnyServerEvent | None:
    """The event; an event this client does not know is an error when strict, else skipped."""
    try:
        return SERVER_EVENTS.validate_json(message)
    except ValidationError:
        if strict:
            raise
        print(f"(unknown event, passed over) {message}", file=sys.stderr, flush=True)
        return None


def connect_options(url: str, token: str | None = None, cafile: Path | None = None) -> dict:
    """websockets.connect options: the bearer credential, and for wss:// a TLS context trusting
    ``cafile`` (else the system's CAs)."""
    options: dict = {"max_size": None}
    if token:
        options["additional_headers"] = {"Authorization": f"Bearer {token}"}
    if url.startswith("wss://"):
        options["ssl"] = ssl.create_default_context(cafile=str(cafile) if cafile else None)
    return options


async def stream(path: Path, url: str, realtime: bool = False, language: str | None = None,
                 on_event=None, word_timestamps: bool = False, strict: bool = True, token: str | None = None,
                 cafile: Path | None = None) -> StreamResult:
    """Stream a WAV file through the edge and collect every event until the server closes.
    Strict (the tests): every event must match this version's protocol models."""
    audio, result = read_wav(path), StreamResult()
    config = config_frame(audio, language, word_timestamps)
    async with websockets.connect(url, **connect_options(url, token, cafile)) as ws:
        if config:
            await ws.send(config)
        sender = asyncio.create_task(_send_audio(ws, audio, realtime))
        async for message in ws:
            event = _parse(message, strict)
            if event is None:
                continue
            result.events.append(event)
            if on_event:
                on_event(event)
        await sender
    return result


def whisper_language(code: str) -> str:
    if code not in WHISPER_LANGUAGES:
        raise argparse.ArgumentTypeError(f"{code!r} is not a Whisper language code (ko, en, ja, …)")
    return code


def write_censored(source: Path, target: Path, result: StreamResult, duck_db: float | None) -> Path:
    audio = read_wav(source)
    data = censor(audio.data, audio.encoding, audio.channels, audio.sample_rate, result.harmful_spans(), duck_db)
    return write_wav(target, data, audio.encoding, audio.channels, audio.sample_rate)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("wav", type=Path)
    p.add_argument("--url", default="ws://localhost:8000/ws/audio")
    p.add_argument("--realtime", action="store_true", help="pace frames at real time, like a live capture")
    p.add_argument("--language", type=whisper_language,
                   help="Whisper language code, e.g. en (default: the model's, ko as exported)")
    p.add_argument("--words", action="store_true", help="ask for each segment's words with their times")
    p.add_argument("--bleep", type=Path, metavar="OUT.wav", help="write the input with harmful spans bleeped")
    p.add_argument("--duck", type=float, metavar="DB", help="with --bleep: lower the volume by DB instead")
    p.add_argument("--token", default=os.environ.get("EDGE_TOKEN"),
                   help="API key or JWT sent as a bearer credential (default: $EDGE_TOKEN)")
    p.add_argument("--cafile", type=Path, help="PEM CA certificate(s) to trust for a wss:// URL")
    args = p.parse_args(argv)
    if args.duck is not None and (args.bleep is None or args.duck <= 0):
        p.error("--duck needs --bleep OUT.wav and a positive number of decibels")
    try:
        result = asyncio.run(stream(args.wav, args.url, args.realtime, args.language,
                                    on_event=lambda e: print(e.wire(), flush=True), word_timestamps=args.words,
                                    strict=False, token=args.token, cafile=args.cafile))
    except (ValueError, OSError) as exc:  # ValidationError is a ValueError: a WAV the protocol does not take
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except websockets.InvalidStatus as exc:  # HTTP 403: refused credential or origin (docs/SECURITY.md)
        print(f"error: the edge refused the session (HTTP {exc.response.status_code}): check --token/EDGE_TOKEN",
              file=sys.stderr)
        return 2
    if args.bleep:
        spans = result.harmful_spans()
        write_censored(args.wav, args.bleep, result, args.duck)
        print(f"wrote {args.bleep}: {len(spans)} harmful span(s) {'ducked' if args.duck else 'bleeped'}",
              file=sys.stderr)
    return 1 if result.of_type(ErrorEvent) else 0


if __name__ == "__main__":
    sys.exit(main())
