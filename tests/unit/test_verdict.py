"""The shared verdict: lexicon spans timed by Whisper's words, the classifier only when trained."""

from __future__ import annotations

import pytest

from moderation.triton import facts_from_parameters
from moderation.verdict import (
    LexiconMatch,
    ModelFacts,
    ModelWord,
    Moderation,
    VerdictPolicy,
    judge,
    segment_event,
    severity,
    wants_word_times,
    word_offsets,
)

LEXICON = ModelFacts("ko", ("lexicon",))
HALF = VerdictPolicy(0.5)


def words(*timed: tuple[str, float, float]) -> list[ModelWord]:
    return [ModelWord(word=w, start=a, end=b, probability=0.9) for w, a, b in timed]


def match(text: str, transcript: str, category: str = "profanity") -> LexiconMatch:
    start = transcript.index(text)
    return LexiconMatch(start=start, end=start + len(text), text=text, term=text, category=category,
                        sources=["test"])


def test_a_lexicon_span_covers_the_words_of_its_match_in_stream_time():
    transcript = "아 진짜 씨발 왜 그래"
    result = Moderation(transcript, 0.9, 0.01, words(("아", 0.0, 0.2), (" 진짜", 0.2, 0.6), (" 씨발", 0.6, 1.0),
                                                     (" 왜", 1.1, 1.3), (" 그래", 1.3, 1.7)),
                        [match("씨발", transcript)])
    verdict = judge(result, LEXICON, HALF, offset_s=10.0, end_s=12.0)
    assert (verdict.is_harmful, verdict.reasons, verdict.confidence) == (True, ["lexicon"], 1.0)
    assert [(s.start_s, s.end_s, s.text, s.category, s.source) for s in verdict.spans] == [
        (10.6, 11.0, "씨발", "profanity", "lexicon")]


def test_a_match_inside_a_word_takes_the_whole_word_and_one_across_words_takes_both():
    transcript = "this is bullshit man"
    timed = words(("this", 0.0, 0.3), (" is", 0.3, 0.5), (" bullshit", 0.5, 1.1), (" man", 1.1, 1.4))
    inside = judge(Moderation(transcript, 0.0, 0.0, timed, [match("shit", transcript)]), LEXICON, HALF, 0.0, 2.0)
    across = judge(Moderation(transcript, 0.0, 0.0, timed, [match("is bull", transcript)]), LEXICON, HALF, 0.0, 2.0)
    assert [(s.start_s, s.end_s) for s in inside.spans] == [(0.5, 1.1)]
    assert [(s.start_s, s.end_s) for s in across.spans] == [(0.3, 1.1)]


def test_without_word_times_a_span_covers_its_segment():
    transcript = "씨발"
    verdict = judge(Moderation(transcript, 0.0, 0.0, [], [match("씨발", transcript)]), LEXICON, HALF, 3.0, 4.5)
    assert [(s.start_s, s.end_s) for s in verdict.spans] == [(3.0, 4.5)]


def test_no_signal_and_an_untrained_classifier_flag_nothing():
    result = Moderation("괜찮아", 0.99, 0.0)
    assert judge(result, ModelFacts("ko", ()), VerdictPolicy(0.5), 0.0, 1.0).is_harmful is False
    assert judge(result, LEXICON, HALF, 0.0, 1.0).confidence is None


@pytest.mark.parametrize(("prob", "harmful", "confidence"), [(0.7, True, 0.7), (0.2, False, 0.8)])
def test_a_trained_classifier_decides_at_the_threshold(prob, harmful, confidence):
    verdict = judge(Moderation("text", prob, 0.0), ModelFacts("ko", ("lexicon", "classifier")), HALF, 1.0, 2.0)
    assert (verdict.is_harmful, verdict.confidence) == (harmful, confidence)
    assert [s.source for s in verdict.spans] == (["classifier"] if harmful else [])


def test_words_are_found_in_order_even_when_repeated():
    transcript = "no no no"
    assert word_offsets(transcript, words(("no", 0, 1), (" no", 1, 2), (" no", 2, 3), ("yes", 3, 4))) == [
        (0, 2), (3, 5), (6, 8), (-1, -1)]


def test_model_facts_come_from_the_ensemble_parameters():
    def params(**values):
        return {key: {"string_value": value} for key, value in values.items()}

    assert facts_from_parameters(params(default_language="ko", lexicon="lexicon", classifier_trained="false")) == \
        ModelFacts("ko", ("lexicon",), lexicon_model="lexicon")
    assert facts_from_parameters(params(default_language="en", lexicon="", classifier="koelectra",
                                        classifier_trained="true")) == \
        ModelFacts("en", ("classifier",), classifier_model="koelectra")
    assert facts_from_parameters({}) == ModelFacts(None, ())


@pytest.mark.parametrize(("signals", "span_word_times", "caller_wants", "expected"), [
    ((), True, False, False),
    (("classifier",), True, False, False),
    (("lexicon",), True, False, True),
    (("lexicon", "classifier"), False, False, False),
    ((), False, True, True),
])
def test_word_times_are_asked_for_when_the_caller_wants_words_or_lexicon_spans_need_them(signals, span_word_times,
                                                                                         caller_wants, expected):
    assert wants_word_times(ModelFacts("ko", signals), span_word_times, caller_wants) is expected


def test_the_threshold_is_the_operators_else_the_calibrated_one_else_one_half():
    calibrated = facts_from_parameters({"classifier_trained": {"string_value": "true"},
                                        "classifier_threshold": {"string_value": "0.8"}})
    assert calibrated.signals == ("classifier",) and calibrated.threshold(None) == 0.8
    assert calibrated.threshold(0.6) == 0.6
    assert ModelFacts("ko", ("classifier",)).threshold(None) == 0.5
    for bad in ("", "high", "1.5"):
        assert facts_from_parameters({"classifier_threshold": {"string_value": bad}}).classifier_threshold is None
    result = Moderation("바보 같은", harmful_prob=0.7, no_speech_prob=0.0)
    assert not judge(result, calibrated, VerdictPolicy(), 0.0, 1.0).is_harmful  # 0.7 is below the calibrated 0.8
    assert judge(result, calibrated, VerdictPolicy(0.6), 0.0, 1.0).reasons == ["classifier"]


def test_categories_are_scored_only_by_a_trained_classifier_that_names_them():
    names = ("origin", "profanity")
    facts = facts_from_parameters({"classifier_trained": {"string_value": "true"},
                                   "classifier_categories": {"string_value": "origin,profanity"}})
    assert facts.categories == names
    result = Moderation("전라도 놈들", 0.9, 0.0, category_probs=[0.81234, 0.1])
    event = segment_event(result, facts, VerdictPolicy(), 0, 0.0, 1.0, with_words=False)
    assert event.categories == {"origin": 0.8123, "profanity": 0.1}
    untrained = ModelFacts("ko", (), categories=names)
    assert segment_event(result, untrained, VerdictPolicy(), 0, 0.0, 1.0, False).categories == {}
    mismatched = Moderation("전라도 놈들", 0.9, 0.0, category_probs=[0.8])
    assert segment_event(mismatched, facts, VerdictPolicy(), 0, 0.0, 1.0, False).categories == {}


TRAINED = ModelFacts("ko", ("lexicon", "classifier"), categories=("origin", "politics", "profanity"))


def test_severity_is_the_highest_weighted_score_of_what_the_signals_found():
    scored = Moderation("전라도 놈들 정치", 0.9, 0.0, category_probs=[0.8, 0.6, 0.2])
    assert severity(scored, TRAINED, VerdictPolicy()) == 0.9  # harmful itself is the highest
    weighted = VerdictPolicy(category_weights={"harmful": 0.5, "origin": 0.5})
    assert severity(scored, TRAINED, weighted) == 0.6  # politics, unnamed, weighs 1
    ignored = VerdictPolicy(category_weights={"harmful": 0, "origin": 0, "politics": 0})
    assert severity(scored, TRAINED, ignored) == 0.0  # profanity's 0.2 is below the minimum score
    assert severity(scored, TRAINED, VerdictPolicy(category_weights={"harmful": 0, "origin": 0, "politics": 0},
                                                   min_score=0.1)) == 0.2


def test_a_lexicon_match_counts_at_one_times_its_categorys_weight_and_untrained_scores_not_at_all():
    text = "씨발 진짜"
    swore = Moderation(text, 0.99, 0.0, matches=[match("씨발", text)], category_probs=[0.9, 0.9, 0.9])
    assert severity(swore, LEXICON, VerdictPolicy()) == 1.0
    assert severity(swore, LEXICON, VerdictPolicy(category_weights={"profanity": 0.3})) == 0.3
    assert severity(Moderation("안녕", 0.99, 0.0), LEXICON, VerdictPolicy()) == 0.0  # untrained: ignored
    event = segment_event(swore, TRAINED, VerdictPolicy(category_weights={"harmful": 0.1}), 0, 0.0, 1.0, False)
    assert event.is_harmful and event.severity == 1.0  # the lexicon's profanity and the classifier's weigh 1
