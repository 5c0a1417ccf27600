"""Reference desktop-like client: stream a WAV file in 20 ms frames and print each result.

    python -m edge.client FILE.wav --url ws://localhost:8000/ws/audio [--realtime] [--language en]
        [--words] [--interim] [--bleep OUT.wav | --duck DB --bleep OUT.wav] [--cafile CA.pem] [--no-reconnect]

An edge with authentication on needs a credential: an API key or a JWT in EDGE_TOKEN (or
``--token``; the environment keeps it out of shell history and ``ps``). ``wss://`` URLs use TLS,
trusting the system's CAs or ``--cafile`` (docs/SECURITY.md).

``--bleep OUT.wav`` writes the input with a 1 kHz tone over each harmful span (``--duck DB``
lowers the volume there by DB decibels instead): what a desktop client does to its playback.

``--interim`` asks for interim results: harmful words flagged while their segment is still open,
printed as ``interim`` events as they come (each final then lists the interim spans it does not
confirm); with ``--bleep`` an interim span is bleeped too unless its final did not confirm it.

16-bit WAVs are sent as pcm_s16le, 32-bit float WAVs as pcm_f32le; a config frame announces
the file's rate and channels whenever they differ from the 16 kHz mono s16le default.

When the edge closes with 1012 (it shut down) or 1013 (busy or draining), the client reconnects
with exponential backoff and jitter and goes on with the audio the edge did not read, printing
the results of every session (docs/PROTOCOL.md, Reconnecting); ``--no-reconnect`` stops there.
The exit status is 0 when the whole file was served without a failed segment, 1 otherwise, 2 when
no session could be had at all.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
import wave
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

import websockets
from pydantic import ValidationError

from moderation.bleep import WAVE_FORMAT_IEEE_FLOAT, censor, write_wav
from moderation.client import (
    DEFAULT_BACKOFF,
    FRAME_MS,
    NORMAL_CLOSURE,
    RECONNECT_CLOSE_CODES,
    RECONNECT_ERRORS,
    Backoff,
    connect_options,
    merged,
    retryable,
    session_spans,
)
from moderation.protocol import (
    SERVER_EVENTS,
    WHISPER_LANGUAGES,
    AnyServerEvent,
    ClientConfig,
    ErrorEvent,
    ReadyEvent,
    SummaryEvent,
    sample_bytes,
)

EventT = TypeVar("EventT")


@dataclass
class WavAudio:
    data: bytes
    sample_rate: int
    channels: int
    encoding: str

    @property
    def sample_frame_bytes(self) -> int:
        """Bytes of one sample across all channels."""
        return sample_bytes(self.encoding) * self.channels

    @property
    def bytes_per_second(self) -> int:
        return self.sample_rate * self.sample_frame_bytes

    @property
    def frame_bytes(self) -> int:
        return self.sample_rate * FRAME_MS // 1000 * self.sample_frame_bytes


@dataclass
class SessionPart:
    """One session of a stream."""

    offset_s: float
    """Where in the stream the session's audio begins: its times count from here."""
    events: list[AnyServerEvent] = field(default_factory=list)
    close_code: int | None = None

    def of_type(self, kind: type[EventT]) -> list[EventT]:
        return [e for e in self.events if isinstance(e, kind)]


@dataclass
class StreamResult:
    sessions: list[SessionPart] = field(default_factory=list)
    """Every session the stream took, in order: more than one when the edge closed with 1012 or 1013."""

    @property
    def events(self) -> list[AnyServerEvent]:
        """Every event the server sent, parsed (and so checked) against the protocol models."""
        return [e for part in self.sessions for e in part.events]

    @property
    def complete(self) -> bool:
        """The last session closed with 1000: the stream was served to its end."""
        return bool(self.sessions) and self.sessions[-1].close_code == NORMAL_CLOSURE

    def of_type(self, kind: type[EventT]) -> list[EventT]:
        return [e for e in self.events if isinstance(e, kind)]

    def failures(self) -> list[ErrorEvent]:
        """Error events, but those that sent the client to a new session."""
        return [e for e in self.of_type(ErrorEvent) if e.code not in RECONNECT_ERRORS]

    def harmful_spans(self) -> list[tuple[float, float]]:
        """(start_s, end_s) of every harmful span, in stream seconds: the finals' and the interim
        spans their finals confirmed (a segment's final lists those it does not)."""
        return merged([span for part in self.sessions for span in session_spans(part.events, part.offset_s)])


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


def config_frame(audio: WavAudio, language: str | None, word_timestamps: bool = False,
                 interim: bool = False, who: dict | None = None) -> str | None:
    """The config text frame the file needs, or None when the server's defaults fit it;
    ValidationError for a file or language the protocol does not take. ``who``: the
    ``speaker_id``, ``channel_id`` and ``metadata`` kept with the session's incidents."""
    fields: dict = dict(who or {})
    if (audio.sample_rate, audio.channels, audio.encoding) != (16000, 1, "pcm_s16le"):
        fields.update(sample_rate=audio.sample_rate, channels=audio.channels, encoding=audio.encoding)
    if language:
        fields["language"] = language
    if word_timestamps:
        fields["word_timestamps"] = True
    if interim:
        fields["interim"] = True
    if not fields:
        return None
    return json.dumps({"type": "config", **ClientConfig(**fields).model_dump(exclude_unset=True)})


class AudioFeed:
    """The file's audio as one stream over however many sessions it takes."""

    def __init__(self, audio: WavAudio, realtime: bool):
        self.audio, self.realtime = audio, realtime
        self.position = 0
        """Byte where the current (or next) session's audio begins."""
        self.sent = 0
        """Byte up to which the current session was sent audio."""
        self._clock: float | None = None
        """When the stream's first frame left: with ``realtime``, byte b is due b / rate later."""

    @property
    def position_s(self) -> float:
        return self.position / self.audio.bytes_per_second

    async def send(self, ws) -> None:
        """The audio from ``position`` on in 20 ms frames, then ``end``."""
        data, step = self.audio.data, self.audio.frame_bytes
        self.sent = self.position
        if self._clock is None:
            self._clock = time.perf_counter()
        for offset in range(self.position, len(data), step):
            if self.realtime:  # paced like a capture device; audio sent again after a reconnection is overdue
                due = self._clock + offset / self.audio.bytes_per_second
                await asyncio.sleep(max(0.0, due - time.perf_counter()))
            await ws.send(data[offset:offset + step])
            self.sent = min(offset + step, len(data))
        await ws.send(json.dumps({"type": "end"}))

    def go_on_after(self, part: SessionPart) -> None:
        """Move ``position`` to where the edge stopped reading ``part``: the summary's
        ``audio_seconds`` on, so that audio sent but not read is sent again and nothing read is;
        nowhere after a refusal (nothing was read); past all that was sent when there is no summary."""
        summaries = part.of_type(SummaryEvent)
        if summaries:
            read = round(summaries[-1].audio_seconds * self.audio.sample_rate) * self.audio.sample_frame_bytes
            self.position = min(self.position + read, len(self.audio.data))
        elif part.of_type(ReadyEvent):
            self.position = self.sent


def _parse(message: str, strict: bool) -> AnyServerEvent | None:
    """The event; an event this client does not know is an error when strict, else skipped."""
    try:
        return SERVER_EVENTS.validate_json(message)
    except ValidationError:
        if strict:
            raise
        print(f"(unknown event, passed over) {message}", file=sys.stderr, flush=True)
        return None


async def _stop(sender: asyncio.Task) -> None:
    """Stop sending audio; a send that failed because the server closed is no error."""
    sender.cancel()
    await asyncio.wait({sender})
    if not sender.cancelled() and not isinstance(sender.exception(), websockets.ConnectionClosed):
        sender.result()  # raises what went wrong


async def _session(url: str, options: dict, config: str | None, feed: AudioFeed, part: SessionPart,
                   on_event, strict: bool) -> None:
    """One session: the config and the audio from ``feed.position``; its events until the server closes."""
    async with websockets.connect(url, **options) as ws:
        if config:
            await ws.send(config)
        sender = asyncio.create_task(feed.send(ws))
        try:
            async for message in ws:
                event = _parse(message, strict)
                if event is not None:
                    part.events.append(event)
                    if on_event:
                        on_event(event)
        except websockets.ConnectionClosedError:
            pass  # closed with another code than 1000: kept below
        finally:
            await _stop(sender)
        part.close_code = ws.close_code


async def stream(path: Path, url: str, realtime: bool = False, language: str | None = None,
                 on_event=None, word_timestamps: bool = False, strict: bool = True, token: str | None = None,
                 cafile: Path | None = None, backoff: Backoff | None = DEFAULT_BACKOFF,
                 interim: bool = False, who: dict | None = None) -> StreamResult:
    """Stream a WAV file through the edge and collect every event until the server closes. After
    close 1012 or 1013, reconnect with ``backoff`` (None: don't) and go on with the audio the edge
    did not read (docs/PROTOCOL.md, Reconnecting). Strict (the tests): every event must match
    this version's protocol models."""
    audio, result = read_wav(path), StreamResult()
    config, options = config_frame(audio, language, word_timestamps, interim, who), connect_options(url, token, cafile)
    feed, failed = AudioFeed(audio, realtime), 0
    while True:
        part = SessionPart(feed.position_s)
        try:
            await _session(url, options, config, feed, part, on_event, strict)
        except (OSError, websockets.InvalidHandshake) as exc:
            if not result.sessions or backoff is None or failed + 1 >= backoff.max_attempts or not retryable(exc):
                raise  # the first connection is not retried: a wrong URL fails at once
            failed, why = failed + 1, f"connection failed: {exc}"
        else:
            result.sessions.append(part)
            feed.go_on_after(part)
            failed = 0 if part.of_type(ReadyEvent) else failed + 1
            if part.close_code not in RECONNECT_CLOSE_CODES or backoff is None or failed >= backoff.max_attempts:
                return result
            why = f"closed with {part.close_code}"
        delay = backoff.delay_s(failed + 1)
        print(f"({why}; reconnecting in {delay:.2f} s, going on from {feed.position_s:.3f} s of the stream)",
              file=sys.stderr, flush=True)
        await asyncio.sleep(delay)  # the backoff itself, not a race fix


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
    p.add_argument("--interim", action="store_true",
                   help="ask for interim results: harmful words flagged before their segment closes")
    p.add_argument("--bleep", type=Path, metavar="OUT.wav", help="write the input with harmful spans bleeped")
    p.add_argument("--duck", type=float, metavar="DB", help="with --bleep: lower the volume by DB instead")
    p.add_argument("--token", default=os.environ.get("EDGE_TOKEN"),
                   help="API key or JWT sent as a bearer credential (default: $EDGE_TOKEN)")
    p.add_argument("--cafile", type=Path, help="PEM CA certificate(s) to trust for a wss:// URL")
    p.add_argument("--no-reconnect", action="store_true",
                   help="stop when the edge closes with 1012 or 1013 instead of going on in a new session")
    args = p.parse_args(argv)
    if args.duck is not None and (args.bleep is None or args.duck <= 0):
        p.error("--duck needs --bleep OUT.wav and a positive number of decibels")
    try:
        result = asyncio.run(stream(args.wav, args.url, args.realtime, args.language,
                                    on_event=lambda e: print(e.wire(), flush=True), word_timestamps=args.words,
                                    strict=False, token=args.token, cafile=args.cafile,
                                    backoff=None if args.no_reconnect else Backoff(), interim=args.interim))
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
    if not result.complete:
        last = result.sessions[-1].close_code if result.sessions else None
        print(f"error: the stream was not served to its end (last close code {last})", file=sys.stderr)
    return 0 if result.complete and not result.failures() else 1


if __name__ == "__main__":
    sys.exit(main())
