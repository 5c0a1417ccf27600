"""The moderation report of a finished job (``FinalSummary``) and the prompt that asks an LLM to
summarise it.

The report is computed from the job's segments alone, so it can be rebuilt from the stored
``transcript_segment`` events at any time (a worker that takes a job over needs nothing else).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

from jobs.models import FinalSummary, HarmfulSegment, JobInfo, WorstMoment
from jobs.transcripts import clock, cue_text
from moderation.events import SegmentEvent

WORST_MOMENTS = 5
"""How many harmful moments the report ranks: enough for a reviewer to start with, few enough to
read at a glance (``harmful`` lists every harmful segment)."""

MAX_PROMPT_CHARS = 12_000
"""Most characters of the LLM prompt, all messages together. Korean takes about one token per
character, so the prompt fits an 8k-token context with room for the answer (Ollama's default
context is smaller: raise its ``num_ctx``). A longer transcript loses its middle, and the prompt
says so; the header with the verdict counts and the worst moments always stays."""

MAX_LINE_CHARS = 400
"""Most characters of one transcript line (or worst moment) in the prompt, so that no single
segment can take the budget of the others."""

OMISSION_RESERVE = 120
"""Characters kept free for the line that says how much of the middle was left out."""

SYSTEM_PROMPT = (
    "You are a content-moderation assistant. You receive the automatic moderation report of a "
    "recording and its transcript with a verdict per segment (HARMFUL or ok). Write a short summary "
    "for a human moderator, in the language of the transcript: what the recording is about, whether "
    "it contains harmful speech, of which kinds, how severe and where (cite [HH:MM:SS] times). "
    "Verdicts come from a lexicon and a classifier and can be wrong: say so when the context shows "
    "a false positive. Do not repeat the transcript; at most 150 words."
)
"""The instructions of every summary request."""


def severity(segment: SegmentEvent) -> float:
    """How bad a harmful segment is: its confidence (a lexicon match has 1.0, an unscored one counts
    as certain) times its harmful spans, so repeated abuse outranks a single slur."""
    confidence = 1.0 if segment.confidence is None else segment.confidence
    return confidence * max(1, len(segment.harmful_spans))


def span_categories(segment: SegmentEvent) -> list[str]:
    """The categories of a segment's harmful spans, each once, sorted."""
    return sorted({span.category for span in segment.harmful_spans})


def harmful_segment(segment: SegmentEvent) -> HarmfulSegment:
    return HarmfulSegment(seq=segment.seq, start_s=segment.start_s, end_s=segment.end_s, text=segment.text,
                          reasons=list(segment.reasons), categories=span_categories(segment),
                          confidence=segment.confidence, spans=list(segment.harmful_spans))


def category_counts(harmful: Sequence[SegmentEvent]) -> dict[str, int]:
    """Harmful spans per category, most frequent first (ties by name), for a stable report."""
    counts = Counter(span.category for segment in harmful for span in segment.harmful_spans)
    return dict(sorted(counts.items(), key=lambda item: (-item[1], item[0])))


def worst_moments(harmful: Sequence[SegmentEvent], limit: int = WORST_MOMENTS) -> list[WorstMoment]:
    """The ``limit`` most severe harmful segments, worst first; of equal severity the earlier first,
    so the ranking does not depend on the order the segments finished in."""
    ranked = sorted(harmful, key=lambda segment: (-severity(segment), segment.start_s))[:limit]
    return [WorstMoment(start_s=s.start_s, end_s=s.end_s, text=s.text, categories=span_categories(s),
                        severity=severity(s)) for s in ranked]


def build_report(job: JobInfo, segments: list[SegmentEvent], duration_s: float, processing_s: float,
                 language: str | None) -> FinalSummary:
    """The ``final_summary`` of a job from its segments (in ``seq`` order) and its timings."""
    harmful = [segment for segment in segments if segment.is_harmful]
    speech_s = sum(segment.end_s - segment.start_s for segment in segments)
    return FinalSummary(
        job_id=job.id, filename=job.filename, duration_s=duration_s, speech_s=round(speech_s, 3),
        language=language, segments=len(segments), harmful_segments=len(harmful),
        categories=category_counts(harmful), harmful=[harmful_segment(s) for s in harmful],
        worst_moments=worst_moments(harmful), processing_s=processing_s,
        real_time_factor=round(processing_s / duration_s, 4) if duration_s > 0 else None,
    )


def clip(text: str, limit: int = MAX_LINE_CHARS) -> str:
    """``text`` on one line, cut to ``limit`` characters with an ellipsis when longer."""
    text = cue_text(text)
    return text if len(text) <= limit else text[:limit - 1] + "…"


def verdict(segment: SegmentEvent) -> str:
    """``HARMFUL(profanity; lexicon 1.00)`` or ``ok``: what the moderation decided, tersely."""
    if not segment.is_harmful:
        return "ok"
    categories = ",".join(span_categories(segment)) or "harmful"
    confidence = "" if segment.confidence is None else f" {segment.confidence:.2f}"
    return f"HARMFUL({categories}; {'+'.join(segment.reasons)}{confidence})"


def transcript_line(segment: SegmentEvent) -> str:
    return f"[{clock(segment.start_s)}-{clock(segment.end_s)}] {verdict(segment)}: {clip(segment.text)}"


def report_header(report: FinalSummary) -> str:
    """The report's figures and worst moments: what the LLM must know even of a cut transcript."""
    categories = ", ".join(f"{name} {count}" for name, count in report.categories.items()) or "none"
    lines = [
        f"File: {clip(report.filename, 200)}",
        f"Duration: {clock(report.duration_s)}; speech {clock(report.speech_s)}; "
        f"language: {report.language or 'unknown'}",
        f"Segments: {report.segments}; harmful: {report.harmful_segments}; harmful spans by category: {categories}",
        "Worst moments:",
        *(f"- [{clock(m.start_s)}] severity {m.severity:.2f} ({','.join(m.categories) or 'harmful'}): "
          f"{clip(m.text)}" for m in report.worst_moments),
    ]
    if not report.worst_moments:
        lines.append("- none")
    return "\n".join(lines)


def fit_lines(lines: list[str], budget: int) -> list[str]:
    """``lines`` within ``budget`` characters (a newline each): all of them when they fit, else the
    start and the end with a note of what was left out between them."""
    if sum(len(line) + 1 for line in lines) <= budget:
        return lines
    half = (budget - OMISSION_RESERVE) // 2
    head = take_within(lines, half)
    tail = take_within(lines[len(head):][::-1], budget - OMISSION_RESERVE - chars(head))[::-1]
    omitted = len(lines) - len(head) - len(tail)
    note = f"[... {omitted} segments in the middle left out: the transcript is too long for this prompt ...]"
    return [*head, note, *tail]


def chars(lines: list[str]) -> int:
    return sum(len(line) + 1 for line in lines)


def take_within(lines: list[str], budget: int) -> list[str]:
    """The first of ``lines`` that fit in ``budget`` characters (a newline each)."""
    taken: list[str] = []
    used = 0
    for line in lines:
        used += len(line) + 1
        if used > budget:
            break
        taken.append(line)
    return taken


def llm_prompt(report: FinalSummary, segments: Sequence[SegmentEvent]) -> list[dict]:
    """Chat messages (OpenAI format) asking for a moderator's summary of the job: the report's figures,
    then the timestamped transcript with each segment's verdict, within ``MAX_PROMPT_CHARS``."""
    header = report_header(report)
    intro = "Transcript ([start-end] verdict: text):"
    budget = MAX_PROMPT_CHARS - len(SYSTEM_PROMPT) - len(header) - len(intro) - 2
    lines = fit_lines([transcript_line(s) for s in segments if s.text.strip()], budget)
    user = "\n".join([header, intro, *lines])
    return [{"role": "system", "content": SYSTEM_PROMPT}, {"role": "user", "content": user}]
