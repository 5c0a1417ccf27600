"""Uploaded recordings -> 16 kHz mono float32 chunks, streamed, with PyAV's bundled FFmpeg.

Anything FFmpeg demuxes and decodes is accepted (wav, mp3, m4a/aac, ogg/opus, webm/opus, flac,
the audio of a video, ...): the best audio stream is decoded frame by frame, converted by
FFmpeg's resampler to the edge's format (``moderation.events.SAMPLE_RATE`` mono float32) and packed
into fixed-size chunks, so memory stays bounded whatever the file's length.

Truncated files. FFmpeg does not always fail on a cut file; what it does depends on the format
(measured with PyAV 18.1 / FFmpeg 8 on 10 s files cut at 50 %):

- mp3: decoding a cut CBR file stops early without an error (a VBR one may raise at the cut); a
  garbage-filled tail or garbage mid-file raises ``InvalidDataError``. LAME (and FFmpeg's
  muxer) write a Xing/Info header whose frame count declares the duration exactly, so a cut is
  caught by comparing it with the decoded length. An mp3 *without* such a header
  (``write_xing=0``, some streaming tools) gets a duration FFmpeg estimates from the bitrate,
  i.e. from the file's size: a cut CBR file then looks complete, and a VBR one's estimate can
  be far off either way. Neither is checked.
- m4a/mp4 (index at the end, FFmpeg's default): cannot be opened at all ("moov atom not found"),
  reported as NOT_AUDIO since FFmpeg cannot tell it from a non-media file. With the index first
  (``faststart``, fragmented mp4) decoding fails or stops early; the index's sample tables
  declare the duration.
- webm/Matroska: decoding stops early without an error, even with a garbage tail; the Segment's
  Duration element declares the duration (a browser's MediaRecorder file has none: unchecked).
- flac: decoding raises ``InvalidDataError`` at the cut; STREAMINFO's sample count (when not 0)
  declares the duration.
- ogg: FFmpeg takes the duration from the last page's granule position, i.e. what the cut left;
  a cut file decodes without an error and looks complete. A garbage tail raises. Unchecked.
- raw AAC (ADTS .aac): FFmpeg estimates the duration from the first frames' bitrate (215 s for
  a 10 s file that starts quiet). Unchecked.
- wav: FFmpeg bounds the data chunk's declared size by the file's size, so a cut wav is just a
  shorter wav (and PCM decodes any bytes). Unchecked.

So where a header or index counts the frames (see `_declared_duration`), decoded audio that ends
more than ``max(TRUNCATION_TOLERANCE_S, TRUNCATION_TOLERANCE_FRACTION * declared)`` short of
it fails CORRUPT_AUDIO. Valid files end at most ~0.15 s short of it: the mp3 frame count
includes LAME's delay and padding (0.03 s at 44.1 kHz, 0.15 s at 8 kHz), WebM's duration Opus's
pre-skip (8 ms); AAC in mp4 decodes up to 0.11 s long, FLAC exactly.

Security: some inputs make FFmpeg read other files or the network: an HLS playlist saved as
``upload.m3u8`` reads ``../other-job/upload.mp3``, an ffconcat list reads its folder (and one that
lists itself recurses until the process runs out of file descriptors). FFmpeg gets only local
files (``protocol_whitelist``), no demuxer of such lists (``format_whitelist``, see
`NESTED_DEMUXERS`), and any nested open through PyAV's ``io_open`` but the upload's own is
refused: all are NOT_AUDIO.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import av
import numpy as np

from jobs.models import JobErrorCode
from moderation.events import SAMPLE_RATE

logger = logging.getLogger(__name__)

DEFAULT_CHUNK_S = 1.0
"""Length of the chunks `decode` yields (the last one is shorter): small enough for frequent
progress, large enough that per-chunk overhead does not matter."""
TRUNCATION_TOLERANCE_S = 0.5
"""Decoded audio may end this much before the declared duration (encoder delay and padding, a
damaged frame skipped by the decoder) before the file counts as truncated ..."""
TRUNCATION_TOLERANCE_FRACTION = 0.02
"""... or this fraction of the declared duration, whichever is larger."""
MP3_SCAN_BYTES = 64 << 10
"""How far past an ID3v2 tag `_mp3_header_duration` looks for the first MPEG audio frame."""
NESTED_DEMUXERS = frozenset({"concat", "hls", "dash", "imf", "sdp", "rtsp"})
"""Demuxers whose input names other files or network sources: never used on an upload."""
METADATA_ERRORS = "replace"
"""Tags that are not UTF-8 (old ID3 tags often are Latin-1) must not fail the file."""


class DecodeError(Exception):
    """The recording cannot be used; ``code`` is the job's error code, ``message`` (also
    ``str(exc)``) says why in words the uploader can act on."""

    def __init__(self, code: JobErrorCode, message: str):
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass(frozen=True)
class Probe:
    """What the container says about a recording, without decoding it."""

    duration_s: float | None
    """FFmpeg's duration of the audio stream (else of the container): exact where the file
    declares it, else FFmpeg's estimate (from the bitrate, which can be far off for VBR
    audio without a header), None when FFmpeg has none."""
    codec: str
    """FFmpeg's codec name (mp3, aac, opus, flac, pcm_s16le, ...)."""
    sample_rate: int
    channels: int
    declared_duration_s: float | None = None
    """The duration a header or index declares by counting the frames (mp3 Xing/Info/VBRI,
    mp4/m4a sample tables, Matroska/WebM Segment duration, FLAC STREAMINFO); None where the
    file has none or FFmpeg derives it from the file's size or end. `decode` fails a file whose
    audio ends well before it as truncated."""


def probe(path: str | Path) -> Probe:
    """Reads the container's header only (fast enough for an upload's request).

    Raises DecodeError EMPTY_FILE or NOT_AUDIO.
    """
    path = Path(path)
    with _open(path) as container:
        return _describe(path, container, _audio_stream(container))


def decode(path: str | Path, max_duration_s: float, chunk_s: float = DEFAULT_CHUNK_S) -> Iterator[np.ndarray]:
    """Yields the recording's best audio stream as 16 kHz mono float32 chunks of `chunk_s`
    seconds (the last one shorter); each chunk is a new array the caller owns.

    Raises DecodeError: EMPTY_FILE, NOT_AUDIO (FFmpeg cannot open it or it has no audio stream),
    TOO_LONG (as soon as the decoded audio exceeds `max_duration_s`, or before decoding when a
    header declares more), CORRUPT_AUDIO (decoding fails, or the audio ends well before the
    declared duration), NO_AUDIO_DATA (no samples at all). Closing the generator closes the file.
    """
    path = Path(path)
    with _open(path) as container:
        stream = _audio_stream(container)
        declared = _describe(path, container, stream).declared_duration_s
        _check_declared_length(declared, max_duration_s)
        chunker = _Chunker(max(1, round(chunk_s * SAMPLE_RATE)))
        yield from _decoded_chunks(container, stream, chunker, max_duration_s)
        _check_complete(chunker.total / SAMPLE_RATE, declared)
        tail = chunker.tail()
        if tail is not None:
            yield tail


def _decoded_chunks(container: av.container.InputContainer, stream: av.AudioStream, chunker: _Chunker,
                    max_duration_s: float) -> Iterator[np.ndarray]:
    """Decode, resample and pack; the resampler is drained at the end of the stream."""
    resampler = _MonoResampler()
    limit = int(max_duration_s * SAMPLE_RATE)
    try:
        for frame in container.decode(stream):
            for samples in resampler.feed(frame):
                yield from _packed(chunker, samples, limit, max_duration_s)
        for samples in resampler.flush():
            yield from _packed(chunker, samples, limit, max_duration_s)
    except av.FFmpegError as exc:
        at = chunker.total / SAMPLE_RATE
        logger.info("decoding failed at %.1f s: %s", at, exc)
        raise DecodeError(JobErrorCode.CORRUPT_AUDIO, f"the audio cannot be decoded past {at:.1f} s "
                                                      f"(damaged file?): {_reason(exc)}") from exc


def _packed(chunker: _Chunker, samples: np.ndarray, limit: int, max_duration_s: float) -> list[np.ndarray]:
    full = chunker.add(samples)
    if chunker.total > limit:
        raise DecodeError(JobErrorCode.TOO_LONG, f"the recording is longer than the limit of {max_duration_s:g} s")
    return full


def _check_declared_length(declared_s: float | None, max_duration_s: float) -> None:
    """Fail before decoding when a frame count already says the recording is too long."""
    if declared_s is not None and declared_s > max_duration_s + TRUNCATION_TOLERANCE_S:
        raise DecodeError(JobErrorCode.TOO_LONG, f"the recording lasts {declared_s:.0f} s, longer than the limit "
                                                 f"of {max_duration_s:g} s")


def _check_complete(decoded_s: float, declared_s: float | None) -> None:
    if decoded_s == 0:
        raise DecodeError(JobErrorCode.NO_AUDIO_DATA, "the audio stream holds no samples")
    if declared_s is None:
        return
    tolerance = max(TRUNCATION_TOLERANCE_S, TRUNCATION_TOLERANCE_FRACTION * declared_s)
    if decoded_s < declared_s - tolerance:
        logger.info("decoded %.2f s of a declared %.2f s", decoded_s, declared_s)
        raise DecodeError(JobErrorCode.CORRUPT_AUDIO, f"the audio ends at {decoded_s:.1f} s of the {declared_s:.1f} s "
                                                      "its header declares (truncated?)")


@contextmanager
def _open(path: Path) -> Iterator[av.container.InputContainer]:
    """Opens `path` with FFmpeg, mapping its refusals to DecodeError. A missing file is an
    OSError (the caller's fault, not the uploader's)."""
    if path.stat().st_size == 0:
        raise DecodeError(JobErrorCode.EMPTY_FILE, "the file is empty (0 bytes)")
    try:
        container = av.open(str(path), options=_ffmpeg_options(), metadata_errors=METADATA_ERRORS,
                            io_open=_OnlyFile(str(path)))
    except av.FFmpegError as exc:
        logger.info("FFmpeg cannot open %s: %s", path.name, exc)
        raise DecodeError(JobErrorCode.NOT_AUDIO, "the file is not audio or video FFmpeg can read (or it is damaged, "
                                                  f"e.g. an mp4/m4a cut before its index): {_reason(exc)}") from exc
    with container:
        yield container


@cache
def _ffmpeg_options() -> dict[str, str]:
    """Only local files, and every demuxer of this FFmpeg build but `NESTED_DEMUXERS`."""
    allowed = sorted(name for name in av.formats_available if not set(name.split(",")) & NESTED_DEMUXERS)
    return {"protocol_whitelist": "file", "format_whitelist": ",".join(allowed)}


class _OnlyFile:
    """``io_open`` of the container: opens the uploaded file itself and refuses any other that
    its content names (playlists, concat lists, external references), which would let an upload
    read other files on the server."""

    def __init__(self, path: str):
        self.path = path

    def __call__(self, url: str, flags: int, options: dict):
        if url != self.path:
            raise DecodeError(JobErrorCode.NOT_AUDIO, "the file refers to other files (a playlist?); "
                                                      "upload the recording itself")
        return open(url, "rb")  # PyAV owns it and closes it with the container


def _audio_stream(container: av.container.InputContainer) -> av.AudioStream:
    stream = container.streams.best("audio")
    if stream is None:
        raise DecodeError(JobErrorCode.NOT_AUDIO, "the file has no audio stream")
    return stream


def _reason(exc: av.FFmpegError) -> str:
    """FFmpeg's words without the file's path (which means nothing to the uploader)."""
    return exc.strerror or type(exc).__name__


def _describe(path: Path, container: av.container.InputContainer, stream: av.AudioStream) -> Probe:
    ctx = stream.codec_context
    return Probe(duration_s=_ffmpeg_duration(container, stream), codec=ctx.codec.canonical_name,
                 sample_rate=ctx.sample_rate, channels=ctx.channels,
                 declared_duration_s=_declared_duration(path, container, stream))


def _ffmpeg_duration(container: av.container.InputContainer, stream: av.AudioStream) -> float | None:
    if stream.duration is not None and stream.time_base is not None:
        return float(stream.duration * stream.time_base)
    return container.duration / av.time_base if container.duration is not None else None


def _declared_duration(path: Path, container: av.container.InputContainer, stream: av.AudioStream) -> float | None:
    """The duration the file declares by counting its frames, or None (see the module's notes).

    FFmpeg does not say where its duration comes from, so this trusts it only from demuxers
    that read it from such a count: mov/mp4 (sample tables), FLAC (STREAMINFO; FFmpeg leaves it
    unset when 0). For Matroska, FFmpeg sets the container's duration from the Segment's
    Duration and leaves the track's unset, which only a bitrate estimate fills. For mp3 the
    Xing/Info/VBRI header is read here (FFmpeg's value may be a bitrate estimate).
    """
    families = set(container.format.name.split(","))
    if families & {"mov", "mp4", "flac"}:
        return float(stream.duration * stream.time_base) if stream.duration else None
    if "matroska" in families:
        return container.duration / av.time_base if stream.duration is None and container.duration else None
    if "mp3" in families:
        return _mp3_header_duration(path)
    return None


def _mp3_header_duration(path: Path) -> float | None:
    """frames x samples per frame / rate, from the Xing/Info or VBRI header in the first frame.

    Includes the encoder's delay and padding (FFmpeg subtracts them, reading the LAME tag): up
    to ~0.1 s at low rates (576-sample frames), which the tolerance absorbs.
    """
    with path.open("rb") as f:
        f.seek(_id3v2_size(f.read(10)))
        data = f.read(MP3_SCAN_BYTES)
    at = _first_mp3_frame(data)
    if at is None:
        return None
    mpeg1, rate, mono = _mp3_frame_header(data[at:at + 4])
    side_info = (17 if mono else 32) if mpeg1 else (9 if mono else 17)
    frames = _xing_frames(data[at + 4 + side_info:]) or _vbri_frames(data[at + 36:])
    return frames * (1152 if mpeg1 else 576) / rate if frames else None


def _first_mp3_frame(data: bytes) -> int | None:
    at = data.find(b"\xff")
    while 0 <= at < len(data) - 3:
        if _mp3_frame_header(data[at:at + 4]):
            return at
        at = data.find(b"\xff", at + 1)
    return None


def _id3v2_size(head: bytes) -> int:
    """Bytes of a leading ID3v2 tag (header, syncsafe size, optional footer); 0 without one."""
    if len(head) < 10 or head[:3] != b"ID3":
        return 0
    size = (head[6] & 0x7F) << 21 | (head[7] & 0x7F) << 14 | (head[8] & 0x7F) << 7 | (head[9] & 0x7F)
    return 10 + size + (10 if head[5] & 0x10 else 0)


_MP3_RATES = (44100, 48000, 32000)
"""MPEG-1 sample rates by index; MPEG-2 halves them, MPEG-2.5 quarters them."""


def _mp3_frame_header(b: bytes) -> tuple[bool, int, bool] | None:
    """(MPEG-1?, sample rate, mono?) of a valid MPEG Layer III frame header, else None."""
    if len(b) < 4 or b[0] != 0xFF or b[1] & 0xE0 != 0xE0:
        return None
    version, layer, bitrate, rate_index = (b[1] >> 3) & 3, (b[1] >> 1) & 3, b[2] >> 4, (b[2] >> 2) & 3
    if version == 1 or layer != 1 or bitrate == 0xF or rate_index == 3:
        return None
    divisor = {3: 1, 2: 2, 0: 4}[version]
    return version == 3, _MP3_RATES[rate_index] // divisor, b[3] >> 6 == 3


def _xing_frames(tag: bytes) -> int | None:
    """Frame count of a Xing (VBR) or Info (CBR) header, when its flags say it holds one."""
    if len(tag) < 12 or tag[:4] not in (b"Xing", b"Info") or not tag[7] & 0x01:
        return None
    return int.from_bytes(tag[8:12], "big")


def _vbri_frames(tag: bytes) -> int | None:
    """Frame count of a Fraunhofer VBRI header (always present in one)."""
    if len(tag) < 18 or tag[:4] != b"VBRI":
        return None
    return int.from_bytes(tag[14:18], "big")


class _MonoResampler:
    """FFmpeg's resampler to 16 kHz mono float32. PyAV's fixes its input format on the first
    frame, so a stream whose format changes mid-way (concatenated mp3s) gets a new one, after
    draining the old."""

    def __init__(self):
        self._resampler: av.AudioResampler | None = None
        self._setup: tuple | None = None

    def feed(self, frame: av.AudioFrame) -> list[np.ndarray]:
        setup = (frame.format.name, frame.layout.name, frame.sample_rate)
        out = []
        if setup != self._setup:
            out = self.flush()
            self._resampler = av.AudioResampler(format="flt", layout="mono", rate=SAMPLE_RATE)
            self._setup = setup
        return out + _samples(self._resampler.resample(frame))

    def flush(self) -> list[np.ndarray]:
        if self._resampler is None:
            return []
        return _samples(self._resampler.resample(None))


def _samples(frames: list) -> list[np.ndarray]:
    # A passthrough resampler (the input already 16 kHz mono float32) returns [None] on flush.
    return [frame.to_ndarray().reshape(-1) for frame in frames if frame is not None and frame.samples]


class _Chunker:
    """Packs samples into chunks of a fixed size: each sample is copied once, into a chunk that
    is handed over whole (never reused), so no per-chunk concatenation."""

    def __init__(self, size: int):
        self.size = size
        self.total = 0
        """Samples added so far."""
        self._chunk = np.empty(size, dtype=np.float32)
        self._fill = 0

    def add(self, samples: np.ndarray) -> list[np.ndarray]:
        """Returns the chunks `samples` completed."""
        full = []
        offset = 0
        while offset < len(samples):
            take = min(self.size - self._fill, len(samples) - offset)
            self._chunk[self._fill:self._fill + take] = samples[offset:offset + take]
            self._fill += take
            offset += take
            if self._fill == self.size:
                full.append(self._chunk)
                self._chunk, self._fill = np.empty(self.size, dtype=np.float32), 0
        self.total += len(samples)
        return full

    def tail(self) -> np.ndarray | None:
        """The last, partial chunk, if any."""
        return self._chunk[:self._fill] if self._fill else None
