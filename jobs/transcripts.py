"""A job's transcript in the formats people use it in: JSON for programs, SubRip and WebVTT for video
players and subtitle editors, plain text for reading and searching.

The segments are the job's ``transcript_segment`` events (``moderation.events.SegmentEvent``) in ``seq``
order. Subtitle and text formats leave out segments without words (Whisper heard no speech in what
the VAD kept), since an empty cue shows nothing and some players reject it.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from enum import StrEnum
from pathlib import PurePath

from jobs.models import JobInfo
from moderation.events import SegmentEvent


class TranscriptFormat(StrEnum):
    JSON = "json"
    SRT = "srt"
    VTT = "vtt"
    TXT = "txt"


MEDIA_TYPES: dict[TranscriptFormat, str] = {
    TranscriptFormat.JSON: "application/json",
    TranscriptFormat.SRT: "application/x-subrip; charset=utf-8",
    TranscriptFormat.VTT: "text/vtt; charset=utf-8",
    TranscriptFormat.TXT: "text/plain; charset=utf-8",
}
"""Content-Type of each format. The charset is explicit because Starlette adds one only to ``text/*``
and a subtitle file of Korean speech must not be read as Latin-1; JSON is UTF-8 by definition."""


def timestamp(seconds: float, fraction_separator: str = ".") -> str:
    """``HH:MM:SS.mmm`` (``,`` before the milliseconds for SubRip); hours grow past two digits
    rather than wrap, so a recording of any length keeps increasing times."""
    total_ms = max(0, round(seconds * 1000))
    hours, rest = divmod(total_ms, 3_600_000)
    minutes, rest = divmod(rest, 60_000)
    secs, millis = divmod(rest, 1000)
    return f"{hours:02d}:{minutes:02d}:{secs:02d}{fraction_separator}{millis:03d}"


def clock(seconds: float) -> str:
    """``HH:MM:SS``, truncated to the second: a reader's position in the recording."""
    return timestamp(seconds)[:-4]


def cue_text(text: str) -> str:
    """A segment's text on one line: a blank line inside a cue would end the cue early."""
    return " ".join(text.split())


def spoken(segments: Iterable[SegmentEvent]) -> list[SegmentEvent]:
    """The segments with words, the only ones that make a subtitle cue or a line of text."""
    return [segment for segment in segments if segment.text.strip()]


def vtt_escape(text: str) -> str:
    """WebVTT cue text is markup: ``&`` and ``<`` start entities and tags, and ``-->`` may not appear."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def to_srt(segments: Sequence[SegmentEvent]) -> str:
    """SubRip: cues numbered from 1, ``HH:MM:SS,mmm --> HH:MM:SS,mmm``, a blank line after each."""
    return "".join(f"{number}\n{timestamp(s.start_s, ',')} --> {timestamp(s.end_s, ',')}\n{cue_text(s.text)}\n\n"
                   for number, s in enumerate(spoken(segments), start=1))


def to_vtt(segments: Sequence[SegmentEvent]) -> str:
    """WebVTT: the ``WEBVTT`` header, then one cue per spoken segment (no identifiers: SRT has them)."""
    cues = (f"{timestamp(s.start_s)} --> {timestamp(s.end_s)}\n{vtt_escape(cue_text(s.text))}\n\n"
            for s in spoken(segments))
    return "WEBVTT\n\n" + "".join(cues)


def to_txt(segments: Sequence[SegmentEvent]) -> str:
    """One line per spoken segment, ``[HH:MM:SS] text``: readable, greppable, and each line says
    where to seek in the recording."""
    return "".join(f"[{clock(s.start_s)}] {cue_text(s.text)}\n" for s in spoken(segments))


def transcript_document(segments: Sequence[SegmentEvent], job: JobInfo) -> dict:
    """The JSON transcript: the job's identity and every segment, empty ones included, exactly as
    its ``transcript_segment`` event carried it (``SegmentEvent.model_validate`` reads each back)."""
    return {
        "job_id": job.id,
        "filename": job.filename,
        "language": job.language,
        "duration_s": job.duration_s,
        "segments": [json.loads(segment.wire()) for segment in segments],
    }


def to_json(segments: Sequence[SegmentEvent], job: JobInfo) -> str:
    """``transcript_document`` as UTF-8 JSON text (unescaped, so Korean stays readable)."""
    return json.dumps(transcript_document(segments, job), ensure_ascii=False, indent=2) + "\n"


def render(fmt: TranscriptFormat, segments: Sequence[SegmentEvent], job: JobInfo) -> tuple[str, str]:
    """The transcript in ``fmt`` and its Content-Type, ready for a ``Response(body, media_type=...)``."""
    fmt = TranscriptFormat(fmt)
    match fmt:
        case TranscriptFormat.JSON:
            body = to_json(segments, job)
        case TranscriptFormat.SRT:
            body = to_srt(segments)
        case TranscriptFormat.VTT:
            body = to_vtt(segments)
        case TranscriptFormat.TXT:
            body = to_txt(segments)
    return body, MEDIA_TYPES[fmt]


def download_name(job: JobInfo, fmt: TranscriptFormat) -> str:
    """A file name for ``Content-Disposition``: the upload's name with the format's extension
    (``meeting.mp3`` -> ``meeting.srt``), or the job id when the upload had no usable name."""
    stem = PurePath(job.filename.replace("\\", "/")).stem.strip() or job.id
    return f"{stem}.{TranscriptFormat(fmt).value}"
