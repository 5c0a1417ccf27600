"""Text moderation, ``POST /v1/moderations``, in the shape of OpenAI's moderation API.

The texts go through the same Triton models and the same verdict as a segment's transcript (the
lexicon and the classifier, no Whisper), batched into one request per model. Beside OpenAI's
``flagged``, ``categories`` and ``category_scores``, each result carries this service's
``reasons`` (the signals that decided) and ``spans`` (where in the text, in characters).
"""

from __future__ import annotations

import json
import logging
import uuid

from fastapi import APIRouter, HTTPException, Request, status
from pydantic import BaseModel

from edge.dependencies import HttpPrincipalDep, PoolDep, SettingsDep
from edge.problems import problem
from moderation.events import Signal, TritonErrorCode
from moderation.triton import TritonCallError
from moderation.verdict import ModelFacts, Moderation, VerdictPolicy, category_scores, judge

logger = logging.getLogger(__name__)

router = APIRouter(prefix="/v1/moderations", tags=["moderations"])

MAX_INPUTS = 32
"""Texts one request may carry: they go to Triton as one batch, within the text models'
max_batch_size (64 by default)."""
MAX_INPUT_CHARS = 2000
"""Longest text accepted; the classifier reads its first 128 tokens, the lexicon all of it."""
MAX_BODY_BYTES = MAX_INPUTS * MAX_INPUT_CHARS * 4 + 4096
"""Largest request body read (UTF-8 takes up to 4 bytes a character), so no body exhausts memory."""
HARMFUL = "harmful"
"""The category every result has: the verdict itself."""


class TextSpan(BaseModel):
    """Where a text is harmful, in characters (Python string offsets) of the input."""

    start: int
    end: int
    text: str
    category: str
    source: Signal


class ModerationResult(BaseModel):
    flagged: bool
    """The service's verdict: the lexicon matched, or the trained classifier's score reached its threshold."""
    categories: dict[str, bool]
    """``harmful`` (= flagged), and each category the trained classifier scores, true from
    ``EDGE_SEVERITY_MIN_SCORE`` (0.5 by default)."""
    category_scores: dict[str, float]
    """``harmful``: 1.0 on a lexicon match, else the trained classifier's score (0.0 without one);
    the classifier's score of each category."""
    reasons: list[Signal]
    spans: list[TextSpan]
    severity: float
    """0-1, as a segment's: the highest weighted score (``EDGE_CATEGORY_WEIGHTS``) of what was found."""


class ModerationResponse(BaseModel):
    id: str
    model: str
    """The classifier that scored the texts (the ensemble's text member)."""
    results: list[ModerationResult]


def bad_request(code: str, message: str) -> HTTPException:
    return problem(status.HTTP_400_BAD_REQUEST, code, message)


async def read_inputs(request: Request) -> list[str]:
    """The request's ``input`` as a list of texts; a typed 400 for anything else."""
    body = await request.body()
    if len(body) > MAX_BODY_BYTES:
        raise bad_request("body_too_large", f"the request body is larger than {MAX_BODY_BYTES} bytes")
    try:
        payload = json.loads(body)
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as exc:
        raise bad_request("bad_json", f"the body must be JSON: {exc}") from None
    if not isinstance(payload, dict) or "input" not in payload:
        raise bad_request("no_input", 'the body must be a JSON object with "input": a string or a list of strings')
    texts = payload["input"] if isinstance(payload["input"], list) else [payload["input"]]
    return check_texts(texts)


def check_texts(texts: list) -> list[str]:
    if not texts:
        raise bad_request("empty_input", '"input" is an empty list: send at least one text')
    if len(texts) > MAX_INPUTS:
        raise bad_request("too_many_inputs", f'"input" has {len(texts)} texts; at most {MAX_INPUTS} per request')
    for i, text in enumerate(texts):
        if not isinstance(text, str):
            raise bad_request("not_text", f'"input"[{i}] is {type(text).__name__}, not a string')
        if not text.strip():
            raise bad_request("empty_text", f'"input"[{i}] is empty')
        if len(text) > MAX_INPUT_CHARS:
            raise bad_request("input_too_long", f'"input"[{i}] has {len(text)} characters; at most {MAX_INPUT_CHARS}')
    return texts


def result_of(moderation: Moderation, facts: ModelFacts, policy: VerdictPolicy) -> ModerationResult:
    """One text's result, by the segment's verdict (moderation/verdict.py)."""
    verdict = judge(moderation, facts, policy, 0.0, 0.0)
    trained = "classifier" in facts.signals
    harmful = 1.0 if "lexicon" in verdict.reasons else (round(moderation.harmful_prob, 4) if trained else 0.0)
    classified = category_scores(moderation, facts)
    spans = [TextSpan(start=m.start, end=m.end, text=m.text, category=m.category, source="lexicon")
             for m in moderation.matches]
    if "classifier" in verdict.reasons:
        spans.append(TextSpan(start=0, end=len(moderation.transcript), text=moderation.transcript,
                              category=HARMFUL, source="classifier"))
    categories = {HARMFUL: verdict.is_harmful, **{name: s >= policy.min_score for name, s in classified.items()}}
    return ModerationResult(flagged=verdict.is_harmful, categories=categories,
                            category_scores={HARMFUL: harmful, **classified}, reasons=verdict.reasons, spans=spans,
                            severity=verdict.severity)


@router.post("", response_model=ModerationResponse)
async def moderate(request: Request, pool: PoolDep, settings: SettingsDep,
                   _principal: HttpPrincipalDep) -> ModerationResponse:
    """``{"input": "text" | ["text", ...]}`` -> one result per text, in order (OpenAI's shape)."""
    texts = await read_inputs(request)
    try:
        moderations = await pool.moderate_texts(texts)
    except TritonCallError as exc:
        logger.warning("text moderation of %d texts failed: %s", len(texts), exc)
        failed = status.HTTP_502_BAD_GATEWAY if exc.code is TritonErrorCode.TRITON_ERROR \
            else status.HTTP_503_SERVICE_UNAVAILABLE
        raise problem(failed, exc.code.value, str(exc)) from exc
    facts = pool.facts
    return ModerationResponse(id=f"modr-{uuid.uuid4().hex}", model=facts.classifier_model or "unknown",
                              results=[result_of(m, facts, settings.verdict_policy()) for m in moderations])

