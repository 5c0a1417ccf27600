"""What the model says about one segment, and the verdict drawn from it (live and in batch jobs).

A segment is harmful when the lexicon matched a term, or when a *trained* classifier's
probability reaches the threshold; an untrained classifier never decides. Lexicon matches are
character spans of the transcript; Whisper's word times turn them into stream times. Its
severity (0-1) weighs what the signals found by the operator's category weights (VerdictPolicy).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from pydantic import BaseModel, TypeAdapter

from moderation.events import HarmfulSpan, SegmentEvent, Signal, WordTime


class ModelWord(BaseModel):
    """One element of the whisper model's WORDS output (seconds relative to the segment)."""

    word: str
    start: float
    end: float
    probability: float


class LexiconMatch(BaseModel):
    """One element of the lexicon model's MATCHES output (character offsets into the transcript)."""

    start: int
    end: int
    text: str
    term: str
    category: str
    sources: list[str]


class WindowSegment(BaseModel):
    """One of Whisper's own segments of a long-form window (seconds relative to the window)."""

    start: float
    end: float
    text: str
    words: list[ModelWord] = []


class LongForm(BaseModel):
    """The whisper model's SEGMENTS output for a long-form window."""

    segments: list[WindowSegment]
    transcribed_to: float
    """Seconds of the window its segments cover; short of its end when decoding stopped early."""
    no_speech_prob: float = 0.0
    language: str | None = None


DEFAULT_THRESHOLD = 0.5
"""The classifier's harmful threshold when neither the operator nor its training set one."""

WORDS = TypeAdapter(list[ModelWord])
MATCHES = TypeAdapter(list[LexiconMatch])


@dataclass
class Moderation:
    transcript: str
    harmful_prob: float
    no_speech_prob: float
    words: list[ModelWord] = field(default_factory=list)
    matches: list[LexiconMatch] = field(default_factory=list)
    language: str | None = None
    """The language Whisper transcribed in (the detected one when the request asked for "auto");
    None when the model does not report it (exported before LANGUAGE_CODE)."""
    category_probs: list[float] = field(default_factory=list)
    """The classifier's CATEGORY_PROBS, in the order of ModelFacts.categories; empty without them."""


@dataclass(frozen=True)
class ModelFacts:
    """What the served model tells about itself (parameters of the ensemble's config)."""

    default_language: str | None = None
    signals: tuple[Signal, ...] = ()
    """The signals that can decide a verdict: "lexicon" when the ensemble runs one, "classifier"
    when KoELECTRA was exported as trained."""
    classifier_threshold: float | None = None
    """The harmful threshold the trained classifier's training calibrated; None: not calibrated."""
    categories: tuple[str, ...] = ()
    """The trained classifier's category heads, the columns of its CATEGORY_PROBS."""
    classifier_model: str | None = None
    lexicon_model: str | None = None
    """The ensemble's text members, which text moderation calls directly (None: unknown or none)."""
    whisper_model: str | None = None
    long_form: bool = False
    """The ensemble's whisper member, and whether it decodes long-form windows (batch jobs send a
    recording's windows to it directly, then its segments' texts to the text members)."""

    def threshold(self, override: float | None) -> float:
        """The classifier's harmful threshold: the operator's ``override`` (EDGE_HARMFUL_THRESHOLD),
        else the calibrated one, else DEFAULT_THRESHOLD."""
        if override is not None:
            return override
        return self.classifier_threshold if self.classifier_threshold is not None else DEFAULT_THRESHOLD


DEFAULT_MIN_SCORE = 0.5
"""A classifier score below this adds nothing to severity."""


@dataclass(frozen=True)
class VerdictPolicy:
    """The operator's verdict settings (see ModerationSettings.verdict_policy)."""

    threshold: float | None = None
    """The classifier's harmful threshold; None: the model's (ModelFacts.threshold)."""
    category_weights: Mapping[str, float] = field(default_factory=dict)
    """Weight (0-1) of a category in severity: a classifier category (origin, politics, ...), a
    lexicon category (profanity, insult, ...) or ``harmful``; 0 ignores it; unnamed ones weigh 1."""
    min_score: float = DEFAULT_MIN_SCORE
    """The least classifier score that counts towards severity (lexicon matches count as 1.0)."""

    def weight(self, category: str) -> float:
        return self.category_weights.get(category, 1.0)


def wants_word_times(facts: ModelFacts, span_word_times: bool, caller_wants_words: bool) -> bool:
    """Whether to ask Whisper for word times (an alignment pass): when the caller wants the words,
    or when a lexicon runs and its spans should cover just their words (``span_word_times``)."""
    return caller_wants_words or ("lexicon" in facts.signals and span_word_times)


@dataclass
class Verdict:
    is_harmful: bool
    reasons: list[Signal]
    confidence: float | None
    spans: list[HarmfulSpan]
    severity: float = 0.0


def judge(result: Moderation, facts: ModelFacts, policy: VerdictPolicy, offset_s: float, end_s: float) -> Verdict:
    """The verdict on a segment that starts at ``offset_s`` and ends at ``end_s`` of the stream."""
    threshold = facts.threshold(policy.threshold)
    reasons: list[Signal] = []
    # Matches decide even before the edge has read the model's facts: never fail open.
    spans = lexicon_spans(result, offset_s, end_s)
    if spans:
        reasons.append("lexicon")
    classifier = "classifier" in facts.signals
    if classifier and result.harmful_prob >= threshold:
        reasons.append("classifier")
        spans.append(HarmfulSpan(start_s=round(offset_s, 3), end_s=round(end_s, 3), text=result.transcript,
                                 category="harmful", source="classifier"))
    harmful = bool(reasons)
    if "lexicon" in reasons:
        confidence = 1.0
    elif classifier:
        confidence = round(result.harmful_prob if harmful else 1.0 - result.harmful_prob, 4)
    else:
        confidence = None
    return Verdict(harmful, reasons, confidence, spans, severity(result, facts, policy))


def severity(result: Moderation, facts: ModelFacts, policy: VerdictPolicy) -> float:
    """How bad a segment is, 0-1: the highest weighted score among what the signals found, each
    lexicon match's category at 1.0, and the trained classifier's ``harmful`` and category scores
    that reach ``policy.min_score``. 0 when nothing counts (a clean segment, or all ignored)."""
    found = {match.category: 1.0 for match in result.matches}
    if "classifier" in facts.signals:
        scored = {"harmful": result.harmful_prob, **category_scores(result, facts)}
        for name, score in scored.items():
            if score >= policy.min_score:
                found[name] = max(found.get(name, 0.0), score)
    return round(max((policy.weight(name) * score for name, score in found.items()), default=0.0), 4)


def word_offsets(transcript: str, words: list[ModelWord]) -> list[tuple[int, int]]:
    """Character range of each word in the transcript (words are found in order; (-1, -1) if absent)."""
    ranges, cursor = [], 0
    for word in words:
        text = word.word.strip()
        at = transcript.find(text, cursor) if text else -1
        if at < 0:
            ranges.append((-1, -1))
            continue
        ranges.append((at, at + len(text)))
        cursor = at + len(text)
    return ranges


def lexicon_spans(result: Moderation, offset_s: float, end_s: float) -> list[HarmfulSpan]:
    """One span per lexicon match: the times of the words it touches, or the whole segment when
    there are no word times."""
    ranges = word_offsets(result.transcript, result.words)
    spans = []
    for match in result.matches:
        hit = [w for w, (a, b) in zip(result.words, ranges, strict=True) if a < match.end and b > match.start]
        start, end = (min(w.start for w in hit) + offset_s, max(w.end for w in hit) + offset_s) if hit \
            else (offset_s, end_s)
        spans.append(HarmfulSpan(start_s=round(start, 3), end_s=round(end, 3), text=match.text,
                                 category=match.category, source="lexicon"))
    return spans


def stream_words(result: Moderation, offset_s: float) -> list[WordTime]:
    """The segment's words in stream time."""
    return [WordTime(word=w.word.strip(), start_s=round(w.start + offset_s, 3), end_s=round(w.end + offset_s, 3),
                     probability=round(w.probability, 4)) for w in result.words]


def category_scores(result: Moderation, facts: ModelFacts) -> dict[str, float]:
    """Category name -> probability, from a trained classifier whose outputs match its names."""
    if "classifier" not in facts.signals or len(result.category_probs) != len(facts.categories):
        return {}
    return {name: round(p, 4) for name, p in zip(facts.categories, result.category_probs, strict=True)}


def segment_event(result: Moderation, facts: ModelFacts, policy: VerdictPolicy, seq: int, start_s: float,
                  end_s: float, with_words: bool) -> SegmentEvent:
    """The ``segment`` event of one moderated segment: the live stream's and a batch job's alike."""
    verdict = judge(result, facts, policy, start_s, end_s)
    return SegmentEvent(
        seq=seq, start_s=round(start_s, 3), end_s=round(end_s, 3), text=result.transcript,
        is_harmful=verdict.is_harmful, reasons=verdict.reasons, confidence=verdict.confidence,
        harmful_prob=round(result.harmful_prob, 4), categories=category_scores(result, facts),
        severity=verdict.severity,
        no_speech_prob=round(result.no_speech_prob, 4),
        harmful_spans=verdict.spans, words=stream_words(result, start_s) if with_words else None,
    )
