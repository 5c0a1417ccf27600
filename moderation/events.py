"""The events that both the WebSocket edge and the batch jobs emit (docs/PROTOCOL.md, docs/JOBS.md):
a moderated segment with its harmful spans and words, and the Triton error codes.

A live stream's ``segment`` frame and a job's ``transcript_segment`` event carry the same
``SegmentEvent``, so a recording and a live stream read the same.
"""

from __future__ import annotations

import json
from enum import StrEnum
from typing import ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field

SAMPLE_RATE = 16000
"""Rate the pipeline works at; client audio at other rates is resampled to it."""

Signal = Literal["lexicon", "classifier"]
"""A harmful-speech signal: the lexicon model's term matches, or the trained KoELECTRA classifier."""


class TritonErrorCode(StrEnum):
    """Why a segment got no result from Triton: the codes of WebSocket ``error`` events and of
    failed jobs alike (both enums include these, see ``error_codes``)."""

    TRITON_TIMEOUT = "triton_timeout"
    TRITON_UNAVAILABLE = "triton_unavailable"
    TRITON_ERROR = "triton_error"


def error_codes(name: str, codes: dict[str, str], doc: str, module: str) -> type[StrEnum]:
    """The StrEnum ``module.name`` of ``codes`` and every TritonErrorCode (a StrEnum with members
    cannot be subclassed, so each part's codes are built on the one definition of the Triton ones)."""
    duplicated = set(codes) & set(TritonErrorCode.__members__)
    if duplicated:
        raise ValueError(f"{name} redefines Triton error codes {sorted(duplicated)}")
    enum = StrEnum(name, {**codes, **{code.name: code.value for code in TritonErrorCode}}, module=module)
    enum.__doc__ = doc
    return enum


class ServerEvent(BaseModel):
    """Base of every message the service sends: WebSocket frames and job events."""

    model_config = ConfigDict(extra="forbid")

    optional_fields: ClassVar[frozenset[str]] = frozenset()
    """Fields left out of the frame while they are None (others are sent as null)."""

    def wire(self) -> str:
        """The JSON text frame: fields in declaration order, UTF-8 text unescaped."""
        data = self.model_dump(mode="json")
        data = {k: v for k, v in data.items() if v is not None or k not in self.optional_fields}
        text = json.dumps(data, ensure_ascii=False)
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:  # a lone surrogate echoed from client JSON ("\\ud800"): escape it
            return json.dumps(data)
        return text


class HarmfulSpan(BaseModel):
    """Where a segment is harmful, in seconds of the client's stream."""

    model_config = ConfigDict(extra="forbid")

    start_s: float
    end_s: float
    text: str
    """The transcript's words there (the whole transcript for a classifier span)."""
    category: str
    """The lexicon term's category (profanity, insult, ...), or ``harmful`` for the classifier."""
    source: Signal


class WordTime(BaseModel):
    """One transcribed word, in seconds of the client's stream."""

    model_config = ConfigDict(extra="forbid")

    word: str
    start_s: float
    end_s: float
    probability: float


class SegmentEvent(ServerEvent):
    """The moderation result of one speech segment."""

    optional_fields: ClassVar[frozenset[str]] = frozenset({"words", "late", "unconfirmed_interim"})

    type: Literal["segment"] = "segment"
    seq: int
    start_s: float
    end_s: float
    text: str
    is_harmful: bool
    reasons: list[Signal]
    """The signals that found the segment harmful; empty when it is not."""
    confidence: float | None
    """Probability of the decision: 1.0 for a lexicon match, the trained classifier's otherwise,
    null when no trained classifier scored a segment the lexicon did not flag."""
    harmful_prob: float
    categories: dict[str, float] = Field(default_factory=dict)
    """The trained classifier's probability of each category it scores (K-MHaS's eight: origin,
    physical, politics, profanity, age, gender, race, religion); empty without such a classifier."""
    severity: float = 0.0
    """0-1: the highest of what the signals found (a lexicon match 1.0, the trained classifier's
    scores from ``EDGE_SEVERITY_MIN_SCORE``), each times its ``EDGE_CATEGORY_WEIGHTS`` weight."""
    no_speech_prob: float
    harmful_spans: list[HarmfulSpan]
    words: list[WordTime] | None = None
    """Only for clients whose config asked for ``word_timestamps``."""
    unconfirmed_interim: list[HarmfulSpan] | None = None
    """Only for live clients that asked for ``interim`` results: the spans of this segment's
    earlier ``interim`` events that its final result does not confirm (no final span overlaps
    them); empty when it confirms them all."""
    late: bool | None = None
    """True when the segment waited for a Triton server to come back (an outage): its result is
    late, and ``latency_ms`` includes the wait; left out otherwise."""
    latency_ms: float = 0.0
    """Set when the event is sent."""
